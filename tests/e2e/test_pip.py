"""pip sections end to end: a real daemon, a conda ``python`` over the host's CPython, real uv, local wheels."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisiond.testing.channel import Pkg, build_channel, hello_pkg
from provisiond.testing.python import build_wheel, venv_python_pkg
from tests.conftest import Daemon, write_project

PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
GREETLIB = "import sys\nimport tinylib\n\ndef main():\n    print('greet', tinylib.VERSION, 'from', sys.prefix)\n"
PYPROJECT = """[project]
name = "proj"
version = "0.1.0"
dependencies = ["tinylib"]
[project.scripts]
proj-hello = "proj:main"
[build-system]
requires = ["uv_build>=0.7,<1"]
build-backend = "uv_build"
"""


@pytest.fixture(scope="module")
def pychannel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python`` (a venv over the host's interpreter), a python-free ``hello``, and a conda ``tinylib``."""
    site = f"lib/{PY}/site-packages"
    tinylib = Pkg("tinylib", "1.0", depends=("python",), files={
        f"{site}/tinylib/__init__.py": "VERSION = '1.0 (conda)'\n",
        f"{site}/tinylib-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinylib\nVersion: 1.0\n",
        f"{site}/tinylib-1.0.dist-info/INSTALLER": "conda\n",
    })
    return build_channel(tmp_path_factory.mktemp("pychannel"), [venv_python_pkg(), hello_pkg("hello"), tinylib])


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A find-links dir: tinylib 1.0, and greetlib 1.0 (needs tinylib, has a ``greet`` script)."""
    directory = tmp_path_factory.mktemp("wheels")
    build_wheel(directory, "tinylib", "1.0")
    build_wheel(directory, "greetlib", "1.0", requires=["tinylib>=1"], files={"greetlib/__init__.py": GREETLIB},
                scripts={"greet": "greetlib:main"})
    return directory


def pip_yml(*lines: str) -> str:
    return "  - pip:\n" + "".join(f"      - {json.dumps(line)}\n" for line in lines)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def env_dirs(daemon: Daemon) -> set[str]:
    return {p.name for p in (daemon.home / "envs").iterdir() if p.name != ".building"}


def test_pip_section_installs_pinned_wheels_at_the_final_prefix(daemon: Daemon, pychannel: Path, wheels: Path,
                                                               tmp_path: Path) -> None:
    a = tmp_path / "a"
    shutil.copytree(wheels, a / "wheels")
    (a / "requirements.txt").write_text("greetlib\n")
    # Relative -r and --find-links resolve against the yml's folder, not the daemon's cwd.
    write_project(a, pychannel, ["python", "hello"], name="py-a",
                  extra=pip_yml("--no-index", "--find-links ./wheels", "tinylib==1.0", "-r requirements.txt"))
    code, out, err = daemon.ctl("warm", str(a), "--json")
    assert code == 0, err
    view = json.loads(out)
    prefix = Path(view["prefix"])

    run = subprocess.run([prefix / "bin" / "greet"], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == f"greet 1.0 from {prefix}"
    assert (prefix / "bin" / "greet").read_text().splitlines()[0] == f"#!{prefix}/bin/{PY}"
    assert (prefix / "lib" / PY / "site-packages" / "tinylib" / "__init__.py").is_file()
    assert (prefix / "bin" / "hello").is_file()
    assert not any((daemon.home / "envs" / ".building").iterdir())

    code, out, err = daemon.ctl("show", "py-a", "--lock", "--json")
    assert code == 0, err
    lock = json.loads(out)["lock"]
    pins = {p["name"]: p for p in lock["pip"]}
    assert sorted(pins) == ["greetlib", "tinylib"]
    for name in pins:
        wheel = a / "wheels" / f"{name}-1.0-py3-none-any.whl"
        assert pins[name]["version"] == "1.0" and pins[name]["sha256"] == sha256(wheel)
        assert pins[name]["url"] == wheel.as_uri()
    assert lock["pip_options"] == ["--no-index", f"--find-links {a / 'wheels'}"]
    code, out, err = daemon.ctl("export", "py-a")
    assert code == 0, err
    assert "greetlib==1.0" in out and "tinylib==1.0" in out

    # The same pip section in another folder, with its own copy of the same wheels: one env.
    b = tmp_path / "b"
    shutil.copytree(a, b)
    (b / "environment.yml").write_text((a / "environment.yml").read_text().replace("py-a", "py-b"))
    code, out, err = daemon.ctl("warm", str(b), "--json")
    assert code == 0, err
    assert json.loads(out)["env_key"] == view["env_key"] and json.loads(out)["prefix"] == str(prefix)
    assert len(daemon.client.get("/v1/builds")["builds"]) == 1


def test_python_packages_from_conda_are_not_installed_again(daemon: Daemon, pychannel: Path, wheels: Path,
                                                            tmp_path: Path) -> None:
    # greetlib needs tinylib: conda's tinylib satisfies it, as it would for pip inside a conda env.
    project = write_project(tmp_path / "mixed", pychannel, ["python", "tinylib"], name="mixed",
                            extra=pip_yml("--no-index", f"--find-links {wheels}", "greetlib"))
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    prefix = Path(json.loads(out)["prefix"])
    assert [p["name"] for p in daemon.client.get("/v1/envs/mixed/lock")["pip"]] == ["greetlib"]
    run = subprocess.run([prefix / "bin" / "greet"], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == f"greet 1.0 (conda) from {prefix}"


def test_editable_project_makes_the_env_project_specific(daemon: Daemon, pychannel: Path, wheels: Path,
                                                          tmp_path: Path) -> None:
    views = {}
    for name in ("p1", "p2"):
        project = tmp_path / name
        (project / "src" / "proj").mkdir(parents=True)
        (project / "pyproject.toml").write_text(PYPROJECT)
        (project / "src" / "proj" / "__init__.py").write_text(f"def main():\n    print('hello from {name}')\n")
        write_project(project, pychannel, ["python"], name=name,
                      extra=pip_yml("--no-index", f"--find-links {wheels}", "-e ."))
        code, out, err = daemon.ctl("warm", str(project), "--json")
        assert code == 0, err
        views[name] = json.loads(out)
        prefix = Path(views[name]["prefix"])
        run = subprocess.run([prefix / "bin" / "proj-hello"], capture_output=True, text=True, check=True)
        assert run.stdout.strip() == f"hello from {name}"
        lock = daemon.client.get(f"/v1/envs/{name}/lock")
        [editable] = [p for p in lock["pip"] if p["name"] == "proj"]
        assert editable["editable"] == str(project) and "sha256" not in editable
    # Identical files, different folders: the editable path is part of the key.
    assert views["p1"]["env_key"] != views["p2"]["env_key"]

    # Editable: a source change shows at once, without a rebuild.
    (tmp_path / "p1" / "src" / "proj" / "__init__.py").write_text("def main():\n    print('edited')\n")
    run = subprocess.run([Path(views["p1"]["prefix"]) / "bin" / "proj-hello"], capture_output=True, text=True,
                         check=True)
    assert run.stdout.strip() == "edited"


@pytest.mark.parametrize(("line", "exit_code", "code", "needle"), [
    ("nosuchpkg==1.0", 65, "unsolvable", "nosuchpkg"),
    ("x @ git+https://127.0.0.1:9/x.git", 70, "engine-failed", "127.0.0.1:9"),
    ("-e ./broken", 70, "engine-failed", "src/broken/__init__.py"),  # resolves, then fails to build
])
def test_pip_failure_publishes_nothing_and_keeps_the_previous_env(
        daemon: Daemon, pychannel: Path, wheels: Path, tmp_path: Path, line: str, exit_code: int, code: str,
        needle: str) -> None:
    # Created from a file, not a watched project: no background rebuild races the checks below.
    project = tmp_path / "keep"
    good = pip_yml("--no-index", f"--find-links {wheels}", "tinylib")
    write_project(project, pychannel, ["python"], name="keep", extra=good)
    status, out, err = daemon.ctl("create", "-f", str(project / "environment.yml"), "--json")
    assert status == 0, err
    before = json.loads(out)
    # A local project whose static metadata resolves, but which has no module to build.
    (project / "broken").mkdir()
    (project / "broken" / "pyproject.toml").write_text(
        PYPROJECT.replace('"proj"', '"broken"').replace('["tinylib"]', "[]").replace("proj:", "broken:"))

    write_project(project, pychannel, ["python"], name="keep",
                  extra=pip_yml("--no-index", f"--find-links {wheels}", "tinylib", line))
    assert daemon.ctl("warm", "keep")[0] == 77  # a new pip line: blocked until allowed (issue #9)
    assert daemon.ctl("allow", str(project / "environment.yml"))[0] == 0
    status, out, err = daemon.ctl("warm", "keep", "--json")
    assert status == exit_code, err
    error = json.loads(out)["error"]
    assert error["code"] == code and needle in error["message"], error
    assert "Traceback" not in err and error["hint"]

    assert env_dirs(daemon) == {Path(before["prefix"]).name}
    assert not any((daemon.home / "envs" / ".building").iterdir())
    status, out, _ = daemon.ctl("show", "keep", "--json")
    shown = json.loads(out)
    assert shown["status"] == "failed" and shown["prefix"] == before["prefix"]
    assert shown["env_key"] == before["env_key"]


def test_pip_section_without_python_is_a_clear_error(daemon: Daemon, pychannel: Path, wheels: Path,
                                                     tmp_path: Path) -> None:
    project = write_project(tmp_path / "nopy", pychannel, ["hello"],
                            extra=pip_yml("--no-index", f"--find-links {wheels}", "tinylib"))
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 65, err
    error = json.loads(out)["error"]
    assert "needs a Python" in error["message"] and "python" in error["hint"]
    assert env_dirs(daemon) == set()


def test_editing_an_included_requirements_file_rebuilds(daemon: Daemon, pychannel: Path, wheels: Path,
                                                        tmp_path: Path) -> None:
    project = tmp_path / "watched"
    project.mkdir()
    (project / "requirements.txt").write_text("tinylib\n")
    write_project(project, pychannel, ["python"], name="watched",
                  extra=pip_yml("--no-index", f"--find-links {wheels}", "-r requirements.txt"))
    code, _, err = daemon.ctl("watch", str(project), "--no-warm")
    assert code == 0, err
    code, out, err = daemon.ctl("warm", "watched", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert not (Path(first["prefix"]) / "bin" / "greet").exists()

    # The yml is unchanged: the included file's content must reach the solve cache's key. The file
    # can run code (it may name local paths, indexes), so the edit needs a new allow first.
    (project / "requirements.txt").write_text("greetlib\n")
    blocked = daemon.wait_for("watched", lambda v: v["status"] == "blocked")
    assert "(requirements.txt changed)" in blocked["error"]
    assert daemon.ctl("allow", str(project))[0] == 0
    view = daemon.wait_for("watched", lambda v: v["status"] == "ready" and v["env_key"] != first["env_key"])
    assert (Path(view["prefix"]) / "bin" / "greet").exists()


def test_export_with_pip_round_trips_to_the_same_env(daemon: Daemon, pychannel: Path, wheels: Path,
                                                     tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", pychannel, ["python"], name="pip-export",
                            extra=pip_yml("--no-index", f"--find-links {wheels}", "greetlib")
                            + "variables:\n  MODE: dev\n")
    (project / ".env").write_text("API_TOKEN=do-not-export\n")
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    original = json.loads(out)

    exported = tmp_path / "exported" / "environment.yml"
    exported.parent.mkdir()
    assert daemon.ctl("export", "pip-export", "-f", str(exported))[0] == 0
    text = exported.read_text()
    assert "\n      - greetlib==1.0\n" in text and "\n      - tinylib==1.0\n" in text
    assert f"\n      - --find-links {wheels}\n" in text and "\n  MODE: dev\n" in text
    assert "do-not-export" not in text and "prefix:" not in text
    code, out, err = daemon.ctl("create", "-f", str(exported), "-n", "pip-copy", "--json")
    assert code == 0, err
    assert json.loads(out)["env_key"] == original["env_key"]

    code, out, _ = daemon.ctl("export", "pip-export", "--format", "explicit")
    assert code == 64 and "pip" in _
