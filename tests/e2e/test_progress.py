"""Build progress as server-sent events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Daemon, write_project


def events(daemon: Daemon, build_id: int) -> list[dict]:
    out = []
    for line in daemon.client.stream(f"/v1/builds/{build_id}/events"):
        if line.startswith("data: "):
            out.append(json.loads(line[len("data: "):]))
    return out


def test_a_build_reports_its_phases(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello", "greet-data", "tool-a"], name="p")
    daemon.ctl("watch", str(project), "--no-warm")
    view = daemon.client.post("/v1/envs/p/warm", {"progress": True})
    got = events(daemon, view["build_id"])
    phases = [e["phase"] for e in got]
    assert phases[0] == "solved" and got[0]["packages"] == 4
    assert phases[-3:] == ["publish", "activation", "done"] and got[-1]["prefix"] == view["prefix"]
    links = [e for e in got if e["phase"] == "link"]
    assert links[-1]["done"] == links[-1]["total"] == 4 and phases.index("link") < phases.index("publish")


@pytest.mark.engine("rattler")
def test_rattler_build_reports_each_download_and_link(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    """Per-package events are rattler's (its installer reports each one); micromamba reports none while it runs."""
    project = write_project(tmp_path / "p", channel, ["hello", "greet-data", "tool-a"], name="p")
    daemon.ctl("watch", str(project), "--no-warm")
    view = daemon.client.post("/v1/envs/p/warm", {"progress": True})
    got = events(daemon, view["build_id"])
    phases = [e["phase"] for e in got]
    links = [e for e in got if e["phase"] == "link"]
    assert [e["done"] for e in links] == [1, 2, 3, 4] and {e["total"] for e in links} == {4}
    downloads = [e for e in got if e["phase"] == "download"]
    assert downloads and downloads[-1]["done"] == downloads[-1]["packages"] == 4
    assert downloads[-1]["bytes"] == downloads[-1]["total"] > 3_000_000  # greet-data is ~3 MiB
    assert phases.index("download") < phases.index("link")


def test_a_failed_build_ends_with_failed(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello"], name="p")
    daemon.ctl("watch", str(project), "--no-warm")
    # Make the package unreadable after the solve: the download fails, the build fails.
    archive = next((channel / "noarch").glob("greet-data-*"))
    (project / "environment.yml").write_text(
        f"name: p\nchannels:\n  - {channel.as_uri()}\ndependencies:\n  - greet-data\n")
    saved = archive.read_bytes()
    archive.write_bytes(b"not a package")
    try:
        code, _, err = daemon.ctl("warm", "p")
    finally:
        archive.write_bytes(saved)
    assert code != 0 and "see the build log" in err
    build_id = daemon.client.get("/v1/envs/p")["build_id"]
    got = events(daemon, build_id)
    assert got[-1]["phase"] == "failed" and got[-1]["error"]


def test_unknown_build_is_404(daemon: Daemon) -> None:
    import pytest

    from provisiond.domain.errors import BuildNotFoundError

    with pytest.raises(BuildNotFoundError):
        list(daemon.client.stream("/v1/builds/999/events"))


def test_without_a_progress_reader_only_phases_are_reported(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello"], name="p")
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    phases = [e["phase"] for e in events(daemon, json.loads(out)["build_id"])]
    assert phases == ["solved", "publish", "activation", "done"]


def _warm_cli(daemon: Daemon, name: str, stderr: int | None) -> subprocess.CompletedProcess[str]:
    env = {**daemon.environ(), "PROVISIOND_SOCKET": str(daemon.socket), "PROVISIONCTL_PROGRESS_DELAY": "0"}
    return subprocess.run([sys.executable, "-m", "provisiond.ctl", "warm", name], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=stderr if stderr is not None else subprocess.PIPE)


def test_warm_prints_plain_progress_lines_when_not_on_a_terminal(daemon: Daemon, channel: Path,
                                                                 tmp_path: Path) -> None:
    daemon.ctl("watch", str(write_project(tmp_path / "p", channel, ["hello", "greet-data"], name="lines")),
               "--no-warm")
    proc = _warm_cli(daemon, "lines", None)
    assert proc.returncode == 0, proc.stderr
    prefix = proc.stdout.strip()
    assert Path(prefix, "bin", "hello").exists()
    lines = proc.stderr.splitlines()
    assert lines[0] == "lines: 3 packages resolved" and lines[-1] == f"lines: ready: {prefix}"
    assert "\r" not in proc.stderr


def test_warm_draws_a_bar_on_a_terminal(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    import os as _os

    daemon.ctl("watch", str(write_project(tmp_path / "p", channel, ["hello", "greet-data", "tool-a"], name="bar")),
               "--no-warm")
    master, slave = _os.openpty()
    try:
        proc = _warm_cli(daemon, "bar", slave)
        _os.close(slave)
        slave = -1
        screen = b""
        while True:
            try:
                chunk = _os.read(master, 65536)
            except OSError:  # EIO: the writer is gone
                break
            if not chunk:
                break
            screen += chunk
    finally:
        _os.close(master)
        if slave >= 0:
            _os.close(slave)
    assert proc.returncode == 0
    text = screen.decode()
    import re

    assert "\r\x1b[K" in text and "link" in text and "4/4" in text and re.search(r" \[#{6,30}\] 4/4", text)
    assert "\n" not in text.rstrip("\r\n")  # redrawn in place: never a new line
