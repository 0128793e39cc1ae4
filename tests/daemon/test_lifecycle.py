"""The lifecycle of names and envs under concurrent requests, in-process, with the FakeEngine."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisiond.config.settings import Paths, Settings
from provisiond.daemon.provisioner import Provisioner
from provisiond.domain.errors import EngineError
from provisiond.store.store import Store
from provisiond.testing.fake_engine import FakeEngine


@dataclass
class World:
    provisioner: Provisioner
    engine: FakeEngine
    root: Path

    def project(self, name: str, deps: list[str]) -> Path:
        directory = self.root / name
        directory.mkdir(exist_ok=True)
        lines = [f"name: {name}", "dependencies:", *(f"  - {d}" for d in deps)]
        (directory / "environment.yml").write_text("\n".join(lines) + "\n")
        return directory


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    paths = Paths(home=tmp_path / "store", socket=tmp_path / "d.sock", state=tmp_path / "state")
    engine = FakeEngine()
    with Store.open(paths) as store:
        provisioner = Provisioner(store, engine, Settings(paths=paths, solve_ttl=0))
        try:
            (tmp_path / "projects").mkdir()
            yield World(provisioner, engine, tmp_path / "projects")
        finally:
            await provisioner.close()


async def test_an_older_edit_never_wins(world: World) -> None:
    directory = world.project("p", ["hello=1.0", "slow"])
    p = world.provisioner
    await p.add_project(str(directory), allow=True)
    release = world.engine.hold("install", "slow")
    first = asyncio.create_task(p.warm("p"))
    await world.engine.started("install", "slow")

    world.project("p", ["hello=2.0"])  # edited while v1 builds; the watcher's warm publishes v2
    second = await p.warm("p")
    release.set()
    await asyncio.gather(first, return_exceptions=True)

    record = p.store.get_name("p")
    assert record.env_key == second.env_key and record.status == "ready"
    assert "hello-2.0" in str(p.store.read_lock(record.env_key).packages)


async def test_an_older_edit_that_fails_late_does_not_mark_the_name_failed(world: World) -> None:
    directory = world.project("p", ["hello=1.0", "doomed"])
    p = world.provisioner
    await p.add_project(str(directory), allow=True)
    release = world.engine.hold("install", "doomed")
    world.engine.fail("install", "doomed", lambda: EngineError("the v1 build broke"))
    first = asyncio.create_task(p.warm("p"))
    await world.engine.started("install", "doomed")
    world.project("p", ["hello=2.0"])
    second = await p.warm("p")
    release.set()
    answered = await first  # the older caller answers with the newest warm's outcome
    record = p.store.get_name("p")
    assert (record.status, record.env_key) == ("ready", second.env_key)
    assert answered.env_key == second.env_key


async def test_an_env_published_but_not_yet_named_is_in_use(world: World) -> None:
    """gc's plan, taken at every point between a build's release and its name's commit, never
    offers the new env for removal (DESIGN: "one in-use answer")."""
    p = world.provisioner
    for k in range(12):
        directory = world.project(f"p{k}", [f"only{k}"])
        await p.add_project(str(directory), allow=True)
        release = world.engine.hold("install", f"only{k}")
        warm = asyncio.create_task(p.warm(f"p{k}"))
        await world.engine.started("install", f"only{k}")
        release.set()
        for _ in range(k):
            await asyncio.sleep(0)
        report = await p.gc(dry_run=True, older_than_days=0)
        view = await warm
        assert view.env_key not in {e["env_key"] for e in report["envs"]}, f"offered for removal after {k} steps"
        assert p.store.find_env(view.env_key or "") is not None


async def test_a_build_always_ends_even_when_its_log_cannot_be_opened(world: World) -> None:
    p = world.provisioner
    directory = world.project("p", ["hello"])
    await p.add_project(str(directory), allow=True)
    logs = p.store.paths.logs
    logs.rmdir()
    logs.write_text("not a directory")  # every build log open fails
    with pytest.raises(Exception) as failed:
        await p.warm("p")
    assert "Traceback" not in str(failed.value)
    [build] = p.store.list_builds()
    assert build.status == "failed" and "NotADirectoryError" in (build.error or "")
    events = [e["phase"] async for e in p.events.follow(build.id)]  # ends: nobody waits forever
    assert events[-1] == "failed"
    assert p.store.get_name("p").status == "failed"
    assert list(p.store.paths.building.iterdir()) == []

    logs.unlink()
    logs.mkdir()
    assert (await p.warm("p")).status == "ready"  # once the cause is gone, builds work again


async def test_gc_prunes_the_cache_by_real_use_and_never_under_a_build(world: World) -> None:
    p = world.provisioner
    pkgs = p.store.paths.pkgs
    for entry in ("old-1.0-fake_0", "used-1.0-fake_0", "busy-1.0-fake_0"):
        (pkgs / entry).mkdir()
        (pkgs / entry / "payload").write_bytes(b"x" * 1000)
    os.utime(pkgs / "used-1.0-fake_0", (1, 1))  # the oldest mtime, but a build linked from it just now
    p.store.touch_cache(["used-1.0-fake_0"])
    directory = world.project("p", ["busy"])
    await p.add_project(str(directory), allow=True)
    release = world.engine.hold("install", "busy")
    warm = asyncio.create_task(p.warm("p"))
    await world.engine.started("install", "busy")

    report = await p.gc(dry_run=False, older_than_days=0, cache_budget_bytes=2000)
    release.set()
    await warm
    assert [e["package"] for e in report["packages"]] == ["old-1.0-fake_0"]
    assert sorted(e.name for e in pkgs.iterdir()) == ["busy-1.0-fake_0", "used-1.0-fake_0"]
