"""The lifecycle of names and envs under concurrent requests, in-process, with the FakeEngine."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisiond.config.settings import Paths, Settings
from provisiond.daemon.provisioner import Provisioner
from provisiond.domain.errors import BlockedError, EngineError
from provisiond.shell import activation
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


async def _building(world: World, deps_after: list[str]) -> tuple[Path, asyncio.Event, asyncio.Task]:
    """A ready project `p`, then an allowed rebuild held in its install."""
    p = world.provisioner
    directory = world.project("p", ["hello"])
    (directory / ".env").write_text("A=1\n")
    await p.add_project(str(directory), allow=True)
    await p.warm("p")
    world.project("p", deps_after)  # a pure dependency edit: keeps trust, rebuilds
    release = world.engine.hold("install", deps_after[-1])
    build = asyncio.create_task(p.warm("p"))
    await world.engine.started("install", deps_after[-1])
    return directory, release, build


async def test_a_deny_during_a_build_is_not_undone_when_it_ends(world: World) -> None:
    p = world.provisioner
    directory, release, build = await _building(world, ["hello", "slow"])
    p.gate.deny(str(directory))
    release.set()
    with pytest.raises(BlockedError):
        await build
    stamp = activation.project_activation_dir(p.settings.paths, directory) / activation.STAMP
    assert p.store.get_name("p").status == "blocked" and not stamp.exists()
    assert p.ready_prefix("p") is None


async def test_a_new_dotenv_name_during_a_build_never_reaches_the_activation(world: World) -> None:
    p = world.provisioner
    directory, release, build = await _building(world, ["hello", "slow"])
    (directory / ".env").write_text("A=1\nNEW_NAME=x\n")
    p.refresh_activation("p")  # what the watcher does for .env: a full warm, which blocks
    release.set()
    with pytest.raises(BlockedError):
        await build
    await asyncio.gather(*p.lifecycle._background.values())
    script = activation.project_activation_dir(p.settings.paths, directory) / "activate.bash"
    assert p.store.get_name("p").status == "blocked"
    assert not script.exists() or "NEW_NAME" not in script.read_text()


async def test_create_f_of_a_lockfile_during_its_warm_answers_both(world: World) -> None:
    p = world.provisioner
    lockfile = world.root / "env.txt"

    def explicit(names: list[str]) -> None:
        lines = ["@EXPLICIT"]
        for n in names:
            f = f"{n}-1.0-fake_0.conda"
            lines.append(f"{world.engine.channel}/linux-64/{f}#sha256:{hashlib.sha256(f.encode()).hexdigest()}")
        lockfile.write_text("\n".join(lines) + "\n")

    explicit(["hello"])
    await p.create(str(lockfile), name="L")
    explicit(["hello", "slow"])
    release = world.engine.hold("install", "slow")
    warm = asyncio.create_task(p.warm("L"))
    await world.engine.started("install", "slow")
    create = asyncio.create_task(p.create(str(lockfile), name="L", force=True))  # a newer generation of L
    await asyncio.sleep(0)
    release.set()
    created, warmed = await asyncio.wait_for(asyncio.gather(create, warm), 30)  # used to spin the loop
    assert created.env_key == warmed.env_key == p.store.get_name("L").env_key


async def test_rotating_a_dotenv_value_after_a_failed_allowed_edit_keeps_trust(world: World) -> None:
    p = world.provisioner
    directory = world.project("p", ["hello"])
    (directory / ".env").write_text("A=1\n")
    await p.add_project(str(directory), allow=True)
    await p.warm("p")
    world.project("p", ["hello", "broken"])
    world.engine.fail("install", "broken", lambda: EngineError("cannot install"))
    await p.add_project(str(directory), allow=True)  # the user allows the edit; its build fails
    with pytest.raises(EngineError):
        await p.warm("p")
    (directory / ".env").write_text("A=2\n")  # a rotated secret: the same names
    p.refresh_activation("p")
    assert p.store.get_name("p").status == "failed"  # the previous env is still served, not blocked
    assert "A='2'" in (activation.project_activation_dir(p.settings.paths, directory) / "activate.bash").read_text()


async def test_a_deny_during_a_lockfile_install_is_not_undone(world: World) -> None:
    p = world.provisioner
    lockfile = world.root / "env.txt"
    lines = ["@EXPLICIT"]
    for n in ("hello", "slow"):
        f = f"{n}-1.0-fake_0.conda"
        lines.append(f"{world.engine.channel}/linux-64/{f}#sha256:{hashlib.sha256(f.encode()).hexdigest()}")
    lockfile.write_text("\n".join(lines) + "\n")
    release = world.engine.hold("install", "slow")
    create = asyncio.create_task(p.create(str(lockfile), name="L"))  # consent for this lock, then a build
    await world.engine.started("install", "slow")
    p.gate.deny(str(lockfile))
    release.set()
    with pytest.raises(BlockedError):
        await create
    assert p.store.get_name("L").status == "blocked"
