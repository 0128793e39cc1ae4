"""A broken registry end to end: the daemon refuses it (exit 78), doctor reports it, --repair rebuilds
it from the disk, and the envs are found again without a build. Also: pruning after real builds."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Daemon, write_project

WAIT = 120


def doctor(d: Daemon, *args: str) -> tuple[int, dict, str]:
    """provisionctl doctor as its own process, in the daemon's environment (its store, its state dir)."""
    proc = subprocess.run([sys.executable, "-m", "provisiond.cli", "--home", str(d.home), "doctor", "--json", *args],
                          env=d.environ(), capture_output=True, text=True, timeout=WAIT)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def test_an_empty_registry_is_refused_reported_and_rebuilt_from_disk(daemon: Daemon, channel: Path,
                                                                     tmp_path: Path) -> None:
    project = write_project(tmp_path / "nlp", channel, ["hello"], name="nlp-exp")
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    built = json.loads(out)
    tools = write_project(tmp_path / "tools", channel, ["tool-a"], name="tools") / "environment.yml"
    code, out, err = daemon.ctl("create", "-f", str(tools), "--json")
    assert code == 0, err
    made = json.loads(out)
    builds = len(daemon.client.get("/v1/builds")["builds"])
    assert daemon.stop() == 0
    for suffix in ("-wal", "-shm"):
        Path(f"{daemon.home / 'state.db'}{suffix}").unlink(missing_ok=True)
    (daemon.home / "state.db").write_bytes(b"")  # what a power loss mid-write can leave

    refused = subprocess.run(daemon.argv(), env=daemon.environ(), capture_output=True, text=True, timeout=WAIT)
    assert refused.returncode == 78, refused.stderr
    assert "is empty (0 bytes)" in refused.stderr and "doctor" in refused.stderr
    assert (daemon.home / "state.db").stat().st_size == 0

    code, report, err = doctor(daemon)
    assert code == 1, err
    assert [p["kind"] for p in report["problems"]] == ["registry-empty"] and not report["ok"]

    code, report, err = doctor(daemon, "--repair")
    assert code == 0, err
    repaired = report["repaired"]
    assert (repaired["projects"], repaired["names"], repaired["envs"]) == (["nlp-exp"], ["tools"], 2)
    [aside] = repaired["moved_aside"]
    assert Path(aside).name.startswith("state.db.broken-") and Path(aside).stat().st_size == 0
    assert report["ok"] and report["registry"]["status"] == "ok"
    assert stat.S_IMODE((daemon.home / "state.db").stat().st_mode) == 0o600  # provisionctl's umask is 022

    daemon.start()
    view = daemon.client.get("/v1/envs/nlp-exp")
    assert (view["env_key"], view["prefix"], view["source"]) == (built["env_key"], built["prefix"], str(project))
    # Consent is not on disk anywhere else: the start-up warm may find the project not allowed yet.
    code, out, err = daemon.ctl("warm", str(project), "--json")  # warm DIR is the user's consent again
    assert code == 0, err
    again = json.loads(out)
    assert (again["env_key"], again["prefix"]) == (built["env_key"], built["prefix"])
    code, out, err = daemon.ctl("warm", "tools", "--json")
    assert code == 0, err
    assert (json.loads(out)["env_key"], json.loads(out)["prefix"]) == (made["env_key"], made["prefix"])
    assert daemon.client.get("/v1/builds")["builds"] == [], f"rebuilt (there were {builds} builds before)"
    assert subprocess.run([Path(built["prefix"]) / "bin" / "hello"], capture_output=True, text=True,
                          check=True).stdout.strip() == f"Hello 2.0 from {built['prefix']}"


def test_doctor_never_runs_beside_a_live_daemon(daemon: Daemon) -> None:
    proc = subprocess.run([sys.executable, "-m", "provisiond.cli", "--home", str(daemon.home), "doctor"],
                          env=daemon.environ(), capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == os.EX_TEMPFAIL and "stop it first" in proc.stderr, proc.stderr
    nowhere = daemon.home.parent / "nowhere"
    proc = subprocess.run([sys.executable, "-m", "provisiond.cli", "--home", str(nowhere), "doctor"],
                          env=daemon.environ(), capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == os.EX_NOINPUT and "no store at" in proc.stderr and not nowhere.exists()


def test_doctor_finds_and_removes_leftovers_of_a_healthy_store(daemon: Daemon, channel: Path,
                                                               tmp_path: Path) -> None:
    code, _out, err = daemon.ctl("warm", str(write_project(tmp_path / "p", channel, ["hello"])), "--json")
    assert code == 0, err
    assert daemon.stop() == 0
    leftover = daemon.home / "envs" / ".building" / "abc-1-2"
    (leftover / "bin").mkdir(parents=True)
    unmarked = daemon.home / "envs" / "0123456789abcdef"
    unmarked.mkdir()
    code, report, _ = doctor(daemon)
    assert code == 1 and report["registry"]["envs"] == 1
    assert sorted(p["kind"] for p in report["problems"]) == ["building-leftover", "prefix-unmarked"]
    code, report, _ = doctor(daemon, "--repair")
    assert code == 0 and report["ok"] and report["repaired"]["moved_aside"] == []
    assert not leftover.exists() and not unmarked.exists()
    assert not list(daemon.home.glob("state.db.broken-*"))


@pytest.fixture
def keep_one_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIOND_KEEP_BUILDS", "1")


def test_builds_over_the_limit_are_pruned_after_each_build(keep_one_build: None, tmp_path: Path,
                                                           short_dir: Path, channel: Path) -> None:
    d = Daemon(home=tmp_path / "home", socket=short_dir / "d.sock").start()
    try:
        project = tmp_path / "p"
        ids = []
        for deps in (["hello"], ["tool-a"], ["hello", "tool-a"]):
            write_project(project, channel, deps, name="p")
            code, out, err = d.ctl("warm", str(project), "--json")
            assert code == 0, err
            ids.append(json.loads(out)["build_id"])
        code, out, err = d.ctl("create", "-f", str(project / "environment.yml"), "-n", "other", "--json")
        assert code == 0, err  # the same env: no build
        listed = d.client.get("/v1/builds")["builds"]
        assert [b["id"] for b in listed] == [ids[-1]]  # the limit, and the one `p` points at
        logs = sorted(p.name for p in (d.home / "logs").glob("build-*.log"))
        assert logs == [f"build-{ids[-1]}.log"]
    finally:
        assert d.stop() == 0


def test_a_build_syncs_its_env_before_publishing_it(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    """The build path runs the durability step (tests/store/test_durable.py watches its order with strace)."""
    code, out, err = daemon.ctl("warm", str(write_project(tmp_path / "p", channel, ["hello"])), "--json")
    assert code == 0, err
    view = json.loads(out)
    lines = daemon.client.get(f"/v1/builds/{view['build_id']}/log").splitlines()
    synced = [i for i, line in enumerate(lines)
              if line.startswith(f"synced {Path(view['prefix']).name} to disk (syncfs) in ")]
    published = [i for i, line in enumerate(lines) if line.startswith(f"published {view['prefix']} in ")]
    assert len(synced) == 1 and len(published) == 1 and synced[0] < published[0], lines
