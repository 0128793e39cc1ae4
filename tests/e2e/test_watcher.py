"""The watcher: real files, real inotify events, a real daemon rebuilding in the background."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import Daemon, serve_directory, write_project


def yml(channel: Path, deps: list[str], name: str = "w") -> str:
    return "\n".join([f"name: {name}", "channels:", f"  - {channel.as_uri()}", "dependencies:",
                      *[f"  - {d}" for d in deps]]) + "\n"


def save_by_rename(path: Path, text: str) -> None:
    tmp = path.with_name(".environment.yml.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_by_truncate(path: Path, text: str) -> None:
    with open(path, "r+") as f:
        f.truncate(0)
        f.write(text)


def save_by_recreate(path: Path, text: str) -> None:
    path.unlink()
    path.write_text(text)


@pytest.mark.parametrize("save", [save_by_rename, save_by_truncate, save_by_recreate])
def test_an_edit_rebuilds_in_the_background(daemon: Daemon, channel: Path, tmp_path: Path, save) -> None:
    project = write_project(tmp_path / "p", channel, ["hello ==1.0"], name="w")
    daemon.ctl("watch", str(project))
    first = daemon.wait_for("w", lambda v: v["status"] == "ready")

    save(project / "environment.yml", yml(channel, ["hello ==2.0"]))
    second = daemon.wait_for("w", lambda v: v["status"] == "ready" and v["env_key"] != first["env_key"])
    assert Path(second["prefix"], "bin", "hello").read_text().count("Hello 2.0") == 1


def test_a_broken_edit_keeps_the_env_and_a_fix_recovers(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello"], name="w")
    daemon.ctl("watch", str(project))
    good = daemon.wait_for("w", lambda v: v["status"] == "ready")

    save_by_rename(project / "environment.yml", "name: w\ndependencies:\n  - hello\n - tool-a\n")
    broken = daemon.wait_for("w", lambda v: v["status"] == "failed")
    assert "environment.yml:4:" in broken["error"]
    assert broken["prefix"] == good["prefix"] and broken["env_key"] == good["env_key"]
    code, out, _ = daemon.ctl("status")
    assert code == 0 and "failed: w: " in out

    save_by_rename(project / "environment.yml", yml(channel, ["hello", "tool-a"]))
    fixed = daemon.wait_for("w", lambda v: v["status"] == "ready" and v["env_key"] != good["env_key"])
    assert fixed["error"] is None and Path(fixed["prefix"], "bin", "tool-a").exists()


def test_a_deleted_project_is_marked_gone(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello"], name="w")
    other = write_project(tmp_path / "q", channel, ["hello ==1.0"], name="other")
    daemon.ctl("watch", str(project))
    daemon.ctl("watch", str(other))
    daemon.wait_for("w", lambda v: v["status"] == "ready")
    before = daemon.wait_for("other", lambda v: v["status"] == "ready")

    shutil.rmtree(project)
    gone = daemon.wait_for("w", lambda v: v["status"] == "gone")
    assert gone["prefix"]  # the env is kept; only the project is gone
    assert daemon.client.get("/v1/health")["status"] == "ok"
    # The other project is still watched.
    save_by_rename(other / "environment.yml", yml(channel, ["hello ==2.0"], name="other"))
    daemon.wait_for("other", lambda v: v["status"] == "ready" and v["env_key"] != before["env_key"])


def test_edits_while_the_daemon_was_down_are_picked_up(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello ==1.0"], name="w")
    daemon.ctl("watch", str(project))
    first = daemon.wait_for("w", lambda v: v["status"] == "ready")
    assert daemon.stop() == 0
    save_by_rename(project / "environment.yml", yml(channel, ["hello ==2.0"]))
    daemon.start()
    daemon.wait_for("w", lambda v: v["status"] == "ready" and v["env_key"] != first["env_key"])


def test_a_gone_project_that_comes_back_is_watched_again(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello ==1.0"], name="w")
    daemon.ctl("watch", str(project))
    first = daemon.wait_for("w", lambda v: v["status"] == "ready")
    shutil.rmtree(project)
    daemon.wait_for("w", lambda v: v["status"] == "gone")

    write_project(tmp_path / "p", channel, ["hello ==1.0"], name="w")  # e.g. a checkout switched back
    daemon.wait_for("w", lambda v: v["status"] == "ready" and v["env_key"] == first["env_key"])
    save_by_rename(project / "environment.yml", yml(channel, ["hello ==2.0"]))
    daemon.wait_for("w", lambda v: v["status"] == "ready" and v["env_key"] != first["env_key"])


@pytest.fixture
def slow_channel(channel: Path):
    """The local channel over HTTP, each package download held back until the test lets it go."""
    import threading

    gate = threading.Event()

    def hold(path: str) -> None:
        if path.endswith((".conda", ".tar.bz2")):
            gate.wait(30)

    with serve_directory(channel, hold) as url:
        try:
            yield url, gate
        finally:
            gate.set()  # before the server stops: no download left waiting


def test_an_edit_during_a_build_is_not_lost(daemon: Daemon, slow_channel, tmp_path: Path) -> None:
    url, gate = slow_channel
    project = tmp_path / "p"
    project.mkdir()
    body = "name: w\nchannels:\n  - " + url + "\ndependencies:\n  - hello =={}\n"
    (project / "environment.yml").write_text(body.format("1.0"))
    daemon.ctl("watch", str(project))
    daemon.wait_for("w", lambda v: v["status"] == "building" and v["build_id"] is not None)
    save_by_rename(project / "environment.yml", body.format("2.0"))  # while 1.0 downloads
    gate.set()
    final = daemon.wait_for("w", lambda v: v["status"] == "ready" and v["prefix"] and
                            Path(v["prefix"], "bin", "hello").read_text().count("Hello 2.0") == 1)
    code, out, _ = daemon.ctl("warm", "w", "--json")
    assert code == 0 and json.loads(out)["env_key"] == final["env_key"]
