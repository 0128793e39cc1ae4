"""The architecture, checked: the import contracts in pyproject.toml (import-linter).

The packages are layers (docs/architecture.md); a change that imports upwards, makes the domain
depend on aiohttp or watchfiles, puts aiohttp, ruamel or rattler on the CLI's hot path, or closes
an import cycle fails here, with import-linter's report as the message.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out


def test_package_inits_import_nothing() -> None:
    """Importing a package must cost nothing: the CLI's hot path goes through provisiond.cli and provisiond.config."""
    import ast

    for init in sorted((REPO / "provisiond").rglob("__init__.py")):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert not imports, f"{init.relative_to(REPO)} imports: keep package __init__.py files empty"
