"""Bundles and the container recipe: build, bundle, delete the store, restore at the same path, cold-start.

Docker cannot run here, so the recipe test runs what examples/container/Dockerfile runs: its build
script with a fixed PROVISIOND_HOME, then the runtime stage's COPY of the bundle to that path, then
its ENTRYPOINT, with the daemon gone and no python3 on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO, Daemon, write_project

RECIPE = REPO / "examples" / "container"
WAIT = 120  # seconds: a hang guard, never a timing assertion
IMAGE_FILES = ["activation", "bin", "bundle.json", "envs", "leases", "locks"]


@pytest.fixture
def no_python_bin(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "sh").symlink_to("/bin/sh")
    assert shutil.which("python3", path=str(directory)) is None
    return directory


def entrypoint(argv: list[str], path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run like a container's entrypoint: nothing in the environment but PATH (and what is given)."""
    return subprocess.run(argv, env={"PATH": str(path), **env}, capture_output=True, text=True, timeout=WAIT)


def ctl(daemon: Daemon, *args: str) -> tuple[int, str, str]:
    return daemon.ctl("--home", str(daemon.home), *args)


def test_bundle_then_unbundle_at_the_same_path(daemon: Daemon, channel: Path, tmp_path: Path,
                                               no_python_bin: Path) -> None:
    project = write_project(tmp_path / "app", channel, ["hello", "greet-data"], name="app",
                            extra="variables:\n  APP_MODE: prod\n")
    (project / ".env").write_text("SECRET_TOKEN=s3cr3t-value\n")
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    env = json.loads(out)
    archive = tmp_path / "app.tar"
    code, out, err = ctl(daemon, "bundle", "app", "-o", str(archive))
    assert code == 0, err
    assert out.startswith(f"wrote {archive}: app (env {env['env_key'][:16]})")
    assert daemon.stop() == 0

    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        assert {Path(m.name).parts[0] for m in members} == {*IMAGE_FILES}
        assert not [m.name for m in members if m.islnk()]  # hardlinks into pkgs/ became files
        assert not [m.name for m in members if m.isfile() and b"s3cr3t" in tar.extractfile(m).read()]  # type: ignore[union-attr]

    # A fresh directory at the same path: nothing of the old store is left.
    shutil.move(daemon.home, tmp_path / "old-store")
    code, out, err = daemon.ctl("unbundle", str(archive), "--home", str(daemon.home))
    assert (code, out) == (0, f"unbundled app (env {env['env_key'][:16]}) into {daemon.home}\n"), err
    assert sorted(os.listdir(daemon.home)) == IMAGE_FILES  # no package cache, no state.db
    files = [p for p in Path(env["prefix"]).rglob("*") if p.is_file() and not p.is_symlink()]
    assert files and all(p.stat().st_nlink == 1 for p in files)

    hello = entrypoint([str(daemon.home / "bin" / "cold-start"), "app", "--", "hello"], no_python_bin)
    assert (hello.returncode, hello.stdout, hello.stderr) == (0, f"Hello 2.0 from {env['prefix']}\n", "")
    # provisionctl run reads the same store, with no daemon.
    run = subprocess.run([sys.executable, "-m", "provisiond.ctl", "--home", str(daemon.home), "run", "app", "--",
                          "sh", "-c", 'echo "$APP_MODE $HELLO_ACTIVATED"'],
                         env=daemon.environ(), capture_output=True, text=True, timeout=WAIT)
    assert (run.returncode, run.stdout) == (0, "prod 1\n"), run.stderr

    # Unbundling again over it is harmless.
    assert daemon.ctl("unbundle", str(archive), "--home", str(daemon.home))[0] == 0


def test_a_bundle_only_works_at_the_path_it_was_built_for(daemon: Daemon, channel: Path, tmp_path: Path,
                                                          no_python_bin: Path) -> None:
    code, _, err = daemon.ctl("warm", str(write_project(tmp_path / "app", channel, ["hello"], name="app")))
    assert code == 0, err
    archive = tmp_path / "app.tar.gz"
    assert ctl(daemon, "bundle", "app", "-o", str(archive))[0] == 0
    elsewhere = tmp_path / "elsewhere"
    code, _, err = daemon.ctl("unbundle", str(archive), "--home", str(elsewhere))
    assert code == os.EX_USAGE and f"was built for the store at {daemon.home}, not {elsewhere}" in err
    assert not elsewhere.exists()
    # Copied there anyway (a plain tar -x), with the original store gone: cold-start says why, in one line.
    elsewhere.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(elsewhere, filter="tar")
    assert daemon.stop() == 0
    shutil.rmtree(daemon.home)
    proc = entrypoint([str(elsewhere / "bin" / "cold-start"), "app", "--", "hello"], no_python_bin)
    assert proc.returncode == 127 and proc.stderr.count("\n") == 1
    assert f"was built for the store at {daemon.home}:" in proc.stderr
    daemon.start()  # on an empty store: the fixture stops it


def test_bundle_errors(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    code, _, err = ctl(daemon, "bundle", "nope", "-o", str(tmp_path / "x.tar"))
    assert code == os.EX_NOINPUT and "no env named 'nope'" in err
    assert daemon.ctl("warm", str(write_project(tmp_path / "app", channel, ["libgreet"], name="app")))[0] == 0
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    code, _, err = ctl(daemon, "bundle", "app", "-o", str(tmp_path / "full"))
    assert code == os.EX_USAGE and "not an empty directory" in err
    code, _, err = daemon.ctl("unbundle", str(tmp_path / "full"), "--home", str(daemon.home))
    assert code == os.EX_USAGE and "not a provisiond bundle" in err
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_container_recipe(channel: Path, tmp_path: Path, short_dir: Path, no_python_bin: Path) -> None:
    """examples/container/Dockerfile, step by step, with its store path moved into tmp_path."""
    dockerfile = (RECIPE / "Dockerfile").read_text()
    image_home = re.search(r"^ENV PROVISIOND_HOME=(\S+)$", dockerfile, re.M)
    build = re.search(r"^RUN sh /src/(examples/container/build-env) \S+ (\S+) (\S+)$", dockerfile, re.M)
    copy = re.search(r"^COPY --from=build (\S+)/ (\S+)/$", dockerfile, re.M)
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M)
    assert image_home and build and copy and entry
    name, bundle_dir = build[2], build[3]
    assert copy[1] == bundle_dir and copy[2] == image_home[1]  # the runtime stage copies the bundle to the same path
    home = tmp_path / "opt-provisiond"

    # Stage 1: the build script with the store at its final path, a short-lived daemon, a bundle.
    spec = write_project(tmp_path / "src", channel, ["hello"], name=name,
                         extra="variables:\n  APP_MODE: production\n") / "environment.yml"
    out = tmp_path / "bundle"
    environ = {**os.environ, "PROVISIOND_HOME": str(home), "PROVISIOND_SOCKET": str(short_dir / "d.sock"),
               "PROVISIOND_STATE": str(tmp_path / "state"), "PROVISIOND_CONFIG": str(tmp_path / "none.toml"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["sh", str(REPO / build[1]), str(spec), name, str(out)], env=environ,
                          capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (short_dir / "d.sock").exists()  # the daemon is gone
    prefix = json.loads((out / "bundle.json").read_text())["names"][name]["prefix"]

    # Stage 2: a fresh image holding only the bundle, at the same path.
    shutil.rmtree(home)
    shutil.copytree(out, home, symlinks=True)
    argv = [arg.replace(image_home[1], str(home)) for arg in json.loads(entry[1])]
    for env in ({}, {"PROVISIOND_HOME": str(home)}):  # the Dockerfile sets it; cold-start also finds its store
        proc = entrypoint([*argv, "sh", "-c", 'hello; echo "$APP_MODE $CONDA_DEFAULT_ENV"'], no_python_bin, **env)
        assert (proc.returncode, proc.stderr) == (0, "")
        assert proc.stdout == f"Hello 2.0 from {prefix}\nproduction {name}\n"
    assert Path(prefix).parent.parent == home
