"""pixi.lock PyPI packages (issue 12.5), through a real daemon and real uv: wheels installed by their locked
sha256, a local project as an editable install of its path, a wrong hash refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Daemon
from tests.e2e.test_pip import PYPROJECT, pychannel, sha256, wheels  # noqa: F401  (module fixtures)


def ctl_json(daemon: Daemon, *args: str) -> dict:
    code, out, err = daemon.ctl(*args, "--json")
    assert code == 0, err + out
    return json.loads(out)


def pixi_text(conda: list[dict], pypi: list[str]) -> str:
    lines = ["version: 6", "environments:", "  default:", "    channels:", "      - url: https://unused.example/c/",
             "    packages:", "      linux-64:"]
    lines += [f"        - conda: {p['url']}" for p in conda] + [f"        - pypi: {u.split()[0]}" for u in pypi]
    lines.append("packages:")
    for p in conda:
        lines += [f"  - conda: {p['url']}", f"    name: {p['name']}", f"    version: '{p['version']}'",
                  f"    build: '{p['build']}'", f"    subdir: {p['subdir']}", f"    sha256: {p['sha256']}",
                  f"    md5: {p['md5']}"]
        lines += ["    depends:", *(f"      - {d}" for d in p["depends"])] if p.get("depends") else []
    for entry in pypi:
        url, name, version, *rest = entry.split()
        lines += [f"  - pypi: {url}", f"    name: {name}", f"    version: '{version}'"]
        lines += [f"    sha256: {rest[0]}"] if rest and rest[0] != "editable" else []
        lines += ["    editable: true"] if rest and rest[0] == "editable" else []
    return "\n".join(lines) + "\n"


def test_pixi_pypi_packages_are_installed_by_their_hashes(daemon: Daemon, pychannel: Path,  # noqa: F811
                                                          wheels: Path, tmp_path: Path) -> None:  # noqa: F811
    spec = tmp_path / "environment.yml"
    spec.write_text(f"name: py\nchannels: [{pychannel.as_uri()}]\ndependencies: [python]\n")
    ctl_json(daemon, "create", "-f", str(spec))
    conda = ctl_json(daemon, "show", "py", "--lock")["lock"]["packages"]
    project = tmp_path / "proj"
    (project / "src" / "proj").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "src" / "proj" / "__init__.py").write_text("def main():\n    print('hello from the lock')\n")
    wheel = wheels / "tinylib-1.0-py3-none-any.whl"
    lock = tmp_path / "pixi.lock"
    lock.write_text(pixi_text(conda, [f"{wheel.as_uri()} tinylib 1.0 {sha256(wheel)}", "./proj proj 0.1.0 editable"]))
    view = ctl_json(daemon, "create", "-f", str(lock), "-n", "locked")
    prefix = Path(view["prefix"])
    pins = {p["name"]: p for p in ctl_json(daemon, "show", "locked", "--lock")["lock"]["pip"]}
    assert pins["tinylib"]["sha256"] == sha256(wheel) and pins["proj"]["editable"] == str(project)
    run = subprocess.run([prefix / "bin" / "python", "-c", "import tinylib, proj; print(tinylib.__file__); proj.main()"],
                         capture_output=True, text=True, check=True, timeout=60)
    assert f"{prefix}/lib/" in run.stdout and "hello from the lock" in run.stdout
    (project / "src" / "proj" / "__init__.py").write_text("def main():\n    print('edited')\n")
    run = subprocess.run([prefix / "bin" / "proj-hello"], capture_output=True, text=True, check=True, timeout=60)
    assert run.stdout.strip() == "edited"  # editable: the path itself

    # A hash that is not the wheel's: uv refuses it, nothing is published.
    bad = tmp_path / "bad" / "pixi.lock"
    bad.parent.mkdir()
    bad.write_text(pixi_text(conda, [f"{wheel.as_uri()} tinylib 1.0 {'0' * 64}"]))
    code, _out, err = daemon.ctl("create", "-f", str(bad), "-n", "bad")
    assert code == 70 and "hash" in err.lower()


@pytest.mark.parametrize("missing", ["./gone"])
def test_a_missing_local_project_is_a_clear_error(daemon: Daemon, tmp_path: Path, missing: str) -> None:
    lock = tmp_path / "pixi.lock"
    lock.write_text(pixi_text([], [f"{missing} gone 0.1 editable"]))
    code, _out, err = daemon.ctl("create", "-f", str(lock), "-n", "gone")
    assert code == 65 and "PyPI package gone is the local project './gone'" in err
