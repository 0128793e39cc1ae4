"""GC never removes a referenced or leased env, and frees exactly what it reports."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from provisiond.config.settings import Paths
from provisiond.store import pkgcache
from provisiond.store.gc import take_lease
from tests.conftest import Daemon, write_project


def unique_bytes(home: Path) -> int:
    """Bytes of the store's env data (not its database or logs), each inode once (hardlinks share data)."""
    seen, total = set(), 0
    walks = [os.walk(home / d) for d in ("envs", "pkgs", "locks", "activation")]
    for dirpath, _dirs, files in (entry for walk in walks for entry in walk):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def build(daemon: Daemon, tmp_path: Path, channel: Path, name: str, deps: list[str]) -> dict:
    code, out, err = daemon.ctl("warm", str(write_project(tmp_path / name, channel, deps, name=name)), "--json")
    assert code == 0, err
    return json.loads(out)


def gc(daemon: Daemon, *args: str) -> dict:
    code, out, err = daemon.ctl("gc", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_gc_removes_only_unreferenced_unleased_envs(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    kept = build(daemon, tmp_path, channel, "kept", ["hello"])
    orphan = build(daemon, tmp_path, channel, "orphan", ["hello ==1.0", "greet-data"])
    held = build(daemon, tmp_path, channel, "held", ["tool-a"])
    for name in ("orphan", "held"):
        assert daemon.ctl("unwatch", name)[0] == 0
    paths = Paths(home=daemon.home, socket=daemon.socket, state=daemon.state)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        take_lease(paths, held["env_key"], sleeper.pid)  # e.g. a `provisionctl run` still running

        plan = gc(daemon, "--dry-run", "--older-than", "0")
        assert [e["env_key"] for e in plan["envs"]] == [orphan["env_key"]]
        reasons = {k["env_key"]: k["reason"] for k in plan["kept"]}
        assert reasons == {kept["env_key"]: "referenced", held["env_key"]: "leased"}
        assert Path(orphan["prefix"]).exists() and plan["freed_bytes"] > 0

        before = unique_bytes(daemon.home)
        done = gc(daemon, "--older-than", "0")
        assert done["envs"] == plan["envs"] and not done["dry_run"]
        assert before - unique_bytes(daemon.home) == done["freed_bytes"]
        assert not Path(orphan["prefix"]).exists()
        assert Path(kept["prefix"], "bin", "hello").exists() and Path(held["prefix"]).exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # The holder is gone: its lease lapses.
    assert [e["env_key"] for e in gc(daemon, "--older-than", "0")["envs"]] == [held["env_key"]]


def test_recently_used_envs_are_kept(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    env = build(daemon, tmp_path, channel, "recent", ["hello"])
    daemon.ctl("unwatch", "recent")
    report = gc(daemon)  # default: unused for 30 days
    assert report["envs"] == [] and report["kept"][0]["reason"] == "recently used"
    assert Path(env["prefix"]).exists()


def test_cache_budget_prunes_packages_without_breaking_envs(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    env = build(daemon, tmp_path, channel, "cached", ["hello", "greet-data"])
    pkgs = daemon.home / "pkgs"
    assert "greet-data-1.0-0" in {e.dist for e in pkgcache.entries(pkgs)}  # either engine's layout
    plan = gc(daemon, "--dry-run", "--cache-budget", "0")
    assert {p["package"] for p in plan["packages"]} >= {"greet-data-1.0-0", "hello-2.0-0"}
    before = unique_bytes(daemon.home)
    done = gc(daemon, "--cache-budget", "0")
    assert pkgcache.entries(pkgs) == []
    assert daemon.engine != "micromamba" or (pkgs / "cache").is_dir()  # its repodata bookkeeping stays
    # Prefix files are hardlinks of cache files, so pruning the cache frees less than its size:
    # the report counts cache bytes, disk usage drops only by the unshared ones.
    assert before - unique_bytes(daemon.home) <= done["freed_bytes"]
    run = subprocess.run([Path(env["prefix"]) / "bin" / "hello"], capture_output=True, text=True, check=True)
    assert run.stdout.startswith("Hello 2.0")
    # Rebuilding after a prune refetches from the channel.
    code, _, err = daemon.ctl("warm", str(write_project(tmp_path / "again", channel, ["hello ==1.0"])))
    assert code == 0, err


def test_remove_keeps_a_leased_env_for_gc(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    env = build(daemon, tmp_path, channel, "busy", ["hello"])
    paths = Paths(home=daemon.home, socket=daemon.socket, state=daemon.state)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        take_lease(paths, env["env_key"], sleeper.pid)
        code, out, _ = daemon.ctl("remove", "busy", "--json")
        assert code == 0 and json.loads(out)["env_deleted"] is False
        assert Path(env["prefix"], "bin", "hello").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert [e["env_key"] for e in gc(daemon, "--older-than", "0")["envs"]] == [env["env_key"]]
