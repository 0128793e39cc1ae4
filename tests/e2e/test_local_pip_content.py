"""A local-directory pip requirement is keyed by its content (issue 12.6): editing the code of `./mypkg`
rebuilds, with the new code; an editable `-e .` is keyed by its build files (its code is used in place)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import Daemon, write_project
from tests.e2e.test_pip import PYPROJECT, pip_yml, pychannel, wheels  # noqa: F401  (module fixtures)


def warm(daemon: Daemon, project: Path) -> dict:
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    return json.loads(out)


def hello(view: dict) -> str:
    run = subprocess.run([Path(view["prefix"]) / "bin" / "proj-hello"], capture_output=True, text=True, check=True,
                         timeout=60)
    return run.stdout.strip()


def test_editing_a_local_package_rebuilds(daemon: Daemon, pychannel: Path, wheels: Path,  # noqa: F811
                                          tmp_path: Path) -> None:
    project = tmp_path / "app"
    package = project / "mypkg"
    (package / "src" / "proj").mkdir(parents=True)
    (package / "pyproject.toml").write_text(PYPROJECT)
    source = package / "src" / "proj" / "__init__.py"
    source.write_text("def main():\n    print('first')\n")
    write_project(project, pychannel, ["python"], name="app",
                  extra=pip_yml("--no-index", f"--find-links {wheels}", "./mypkg"))
    first = warm(daemon, project)
    assert hello(first) == "first"
    pin = next(p for p in daemon.client.get("/v1/envs/app/lock")["pip"] if p["name"] == "proj")
    assert pin.get("content") and "editable" not in pin

    assert warm(daemon, project)["env_key"] == first["env_key"]  # nothing changed: same env
    source.write_text("def main():\n    print('second')\n")
    second = warm(daemon, project)
    assert second["env_key"] != first["env_key"] and hello(second) == "second"
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.pyc").write_bytes(b"junk")  # not source: no rebuild
    assert warm(daemon, project)["env_key"] == second["env_key"]


def test_an_editable_project_is_keyed_by_its_build_files(daemon: Daemon, pychannel: Path, wheels: Path,  # noqa: F811
                                                         tmp_path: Path) -> None:
    project = tmp_path / "ed"
    (project / "src" / "proj").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "src" / "proj" / "__init__.py").write_text("def main():\n    print('one')\n")
    write_project(project, pychannel, ["python"], name="ed", extra=pip_yml("--no-index", f"--find-links {wheels}",
                                                                            "-e ."))
    first = warm(daemon, project)
    (project / "src" / "proj" / "__init__.py").write_text("def main():\n    print('two')\n")
    assert warm(daemon, project)["env_key"] == first["env_key"] and hello(first) == "two"  # in place
    (project / "pyproject.toml").write_text(PYPROJECT.replace('proj-hello = "proj:main"',
                                                              'proj-hello = "proj:main"\nproj-hi = "proj:main"'))
    second = warm(daemon, project)
    assert second["env_key"] != first["env_key"]
    assert (Path(second["prefix"]) / "bin" / "proj-hi").exists()
