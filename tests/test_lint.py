"""Lint and types on every run: ruff (configured in pyproject.toml) and mypy (strict on domain/ and store/).

Both come with the test extras (scripts/test installs them), so a new warning fails CI, which
runs scripts/test. To fix one locally: ``.venv/bin/ruff check --fix`` and ``.venv/bin/mypy``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    exe = BIN / name
    if not exe.exists():
        pytest.fail(f"{name} is not installed beside {sys.executable}: pip install -e '.[test]' (scripts/test does)")
    return str(exe)


def test_ruff_finds_nothing() -> None:
    proc = subprocess.run([tool("ruff"), "check", "--no-cache", "--output-format", "concise",
                           "provisiond", "tests", "benchmarks"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_finds_nothing() -> None:
    # The cache (.mypy_cache, ignored by git) makes a second run take a second instead of five.
    proc = subprocess.run([tool("mypy")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
