"""300 projects: `list` is the same before and after a restart, which re-parses none of them and keeps answering."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.conftest import Daemon, write_project


def log_line(daemon: Daemon, needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = daemon.log.read_text() if daemon.log else ""
        found = [line for line in text.splitlines() if needle in line]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} never logged:\n{text[-3000:]}")
        time.sleep(0.05)


def test_a_restart_with_300_projects_answers_and_reparses_nothing(daemon: Daemon, channel: Path,
                                                                   tmp_path: Path) -> None:
    client = daemon.client
    for i in range(300):
        directory = write_project(tmp_path / "work" / f"p{i:03d}", channel, ["hello"], name=f"p{i:03d}")
        client.post("/v1/projects", {"path": str(directory), "warm": False, "allow": True})
        client.post(f"/v1/envs/p{i:03d}/warm", {})
    client.post("/v1/envs/p000/clone", {"target": "copy"})
    before = client.get("/v1/envs")
    assert len(before["envs"]) == 301 and all(e["status"] == "ready" for e in before["envs"])
    assert len(before["envs"][0]["projects"]) == 300  # one env, shared by every project

    assert daemon.stop() == 0
    daemon.start()  # returns once /v1/health answered
    assert client.get("/v1/health")["status"] == "ok"
    # Every project was checked by stat() against its kept signature: none parsed, none warmed.
    assert "300 projects: 300 unchanged, 0 warming" in log_line(daemon, "start-up check of")
    assert client.get("/v1/envs") == before  # the one-pass list: the same answer as before

    # As after an upgrade (no signatures kept): every project is warmed in the background, and the
    # daemon answers meanwhile; they all end ready, on the same env.
    assert daemon.stop() == 0
    with sqlite3.connect(daemon.home / "state.db") as db:
        db.execute("DELETE FROM fresh")
    db.close()
    daemon.start()
    assert client.get("/v1/status")["projects"] == 300
    assert "300 projects: 0 unchanged, 300 warming" in log_line(daemon, "start-up check of")
    assert "300 projects" in log_line(daemon, "start-up warms done", timeout=120)  # max_builds at a time
    assert client.get("/v1/envs") == before
