"""A full disk under a real daemon: builds end with `disk-full`, nothing is left stuck, and builds
work again once space is free (a real tmpfs, so root only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.testing.channel import Pkg, build_channel
from tests.conftest import Daemon, write_project

SIZE = 6 << 20  # bytes of incompressible payload in `big`: more than the disk holds


@pytest.fixture(scope="module")
def heavy_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_channel(tmp_path_factory.mktemp("heavy"), [
        Pkg("big", "1.0", files={"share/big.bin": os.urandom(SIZE)}),
        Pkg("small", "1.0", files={"share/small.txt": "small\n"}),
    ])


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.getuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_ends_the_build_cleanly_and_builds_work_again(small_disk: Path, heavy_channel: Path,
                                                                  tmp_path: Path, short_dir: Path) -> None:
    daemon = Daemon(home=small_disk / "store", socket=short_dir / "d.sock").start()
    try:
        project = write_project(tmp_path / "p", heavy_channel, ["big"], name="p")
        assert daemon.ctl("watch", str(project), "--no-warm")[0] == 0
        code, out, err = daemon.ctl("warm", "p", "--json")
        error = json.loads(out)["error"]
        assert code == os.EX_CANTCREAT and error["code"] == "disk-full", (out, err)
        assert error["message"].startswith("the disk is full at ") and "bytes free" in error["message"]
        view = daemon.client.get("/v1/envs/p")
        assert view["status"] == "failed" and "disk is full" in view["error"]
        build = daemon.client.get(f"/v1/builds/{view['build_id']}")
        assert build["status"] == "failed" and "disk is full" in build["error"]
        events = daemon.client.get(f"/v1/builds/{view['build_id']}/events")  # the stream ends
        assert "event: failed" in events
        assert list((daemon.home / "envs" / ".building").iterdir()) == []
        assert daemon.client.get("/v1/builds", status="running")["builds"] == []

        # A registry write with no byte left answers 507, and loses nothing.
        filler = small_disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        other = write_project(tmp_path / "other", heavy_channel, ["small"], name="other")
        status, answer = daemon.raw("POST", "/v1/projects", {"path": str(other), "allow": True, "warm": False})
        assert (status, answer["error"]["code"]) == (507, "disk-full"), answer
        filler.unlink()

        write_project(project, heavy_channel, ["small"], name="p")  # space is back, and a smaller env
        code, out, err = daemon.ctl("warm", "p", "--json")
        assert code == 0, err
        assert Path(json.loads(out)["prefix"], "share", "small.txt").is_file()
        assert daemon.client.get("/v1/health")["status"] == "ok"
    finally:
        assert daemon.stop() == 0, daemon.log.read_text() if daemon.log else ""
