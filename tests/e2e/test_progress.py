"""Build progress as server-sent events."""

from __future__ import annotations

import json
from pathlib import Path

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

    from provisiond.errors import BuildNotFoundError

    with pytest.raises(BuildNotFoundError):
        list(daemon.client.stream("/v1/builds/999/events"))


def test_without_a_progress_reader_only_phases_are_reported(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello"], name="p")
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    phases = [e["phase"] for e in events(daemon, json.loads(out)["build_id"])]
    assert phases == ["solved", "publish", "activation", "done"]
