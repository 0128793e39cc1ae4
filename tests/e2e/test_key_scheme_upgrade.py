"""A store made by the previous provisiond (env_key scheme 1) under this one (scheme 2): its envs keep
serving their names, the next warm builds each once under its new key, and later warms build nothing."""

from __future__ import annotations

import os
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from provisiond.testing.daemon import DaemonProcess
from tests.conftest import REPO, Daemon

# The last commit whose env_key was scheme 1 (hashing [url, sha256, md5]).
SCHEME_1 = "699dadf"


def previous_version(into: Path) -> Path:
    """The ``provisiond`` package of SCHEME_1, from this repository's history (skip without it)."""
    proc = subprocess.run(["git", "-C", str(REPO), "archive", SCHEME_1, "provisiond"], capture_output=True,
                          timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"commit {SCHEME_1} (env_key scheme 1) is not in this clone's history")
    with tarfile.open(fileobj=BytesIO(proc.stdout)) as archive:
        archive.extractall(into, filter="data")
    return into


def envs(home: Path) -> set[str]:
    return {p.name for p in (home / "envs").iterdir() if p.name != ".building"}


def test_a_scheme_1_store_rebuilds_once(tmp_path: Path, short_dir: Path, channel: Path) -> None:
    old_code = previous_version(tmp_path / "old")
    home, spec = tmp_path / "home", tmp_path / "environment.yml"
    spec.write_text(f"name: one\nchannels: [{channel.as_uri()}]\ndependencies: [hello]\n")
    # PYTHONSAFEPATH: `python -m` must not put the working directory (this checkout) before PYTHONPATH.
    environ = {**os.environ, "PYTHONPATH": str(old_code), "PYTHONSAFEPATH": "1"}
    old = DaemonProcess(home, short_dir / "d.sock", env=environ).start()
    try:
        before = old.client.post("/v1/envs", {"file": str(spec)})
    finally:
        assert old.stop() == 0
    assert envs(home) == {before["env_key"][:16]}

    new = Daemon(home, short_dir / "d.sock").start()
    try:
        view = new.client.get("/v1/envs/one")
        assert view["status"] == "ready" and view["env_key"] == before["env_key"]  # still served as it was
        after = new.client.post("/v1/envs/one/warm", {})
        assert after["env_key"] != before["env_key"]  # the new scheme's key, built once
        assert envs(home) == {before["env_key"][:16], after["env_key"][:16]}
        again = new.client.post("/v1/envs/one/warm", {"update": True})
        assert again["env_key"] == after["env_key"] and len(envs(home)) == 2  # no further build
    finally:
        assert new.stop() == 0
