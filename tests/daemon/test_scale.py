"""Many names and projects: `list` in one pass, signatures that survive a restart, a start-up that yields."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from provisiond.config.settings import Paths, Settings
from provisiond.daemon.provisioner import Provisioner
from provisiond.store.store import Store
from provisiond.testing.fake_engine import FakeEngine


def write(directory: Path, name: str, deps: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "environment.yml").write_text("\n".join([f"name: {name}", "dependencies:",
                                                          *(f"  - {d}" for d in deps)]) + "\n")
    return directory


@contextmanager
def opened(tmp_path: Path) -> Iterator[tuple[Store, Paths]]:
    paths = Paths(home=tmp_path / "store", socket=tmp_path / "d.sock", state=tmp_path / "state")
    with Store.open(paths) as store:
        yield store, paths


@pytest.fixture
async def provisioner(tmp_path: Path) -> AsyncIterator[Provisioner]:
    with opened(tmp_path) as (store, paths):
        p = Provisioner(store, FakeEngine(), Settings(paths=paths))
        try:
            yield p
        finally:
            await p.close()


async def test_list_in_one_pass_equals_each_view(provisioner: Provisioner, tmp_path: Path) -> None:
    """The one-pass `list` gives what `view` gives name by name: projects sharing an env, a clone,
    a file env, a name never built, one whose env is gone from the disk."""
    p = provisioner
    for i in range(4):  # the same dependencies: one env_key, four sibling projects
        await p.add_project(str(write(tmp_path / "work" / f"p{i}", f"shared{i}", ["hello"])), allow=True)
        await p.warm(f"shared{i}")
    await p.add_project(str(write(tmp_path / "work" / "solo", "solo", ["hello=2.0"])), allow=True)
    await p.warm("solo")
    await p.add_project(str(write(tmp_path / "work" / "cold", "cold", ["tool-a"])), allow=True)  # never built
    await p.create(str(write(tmp_path / "files" / "f", "tools", ["hello", "tool-a"]) / "environment.yml"))
    p.clone("solo", "solo-copy")
    gone = p.store.get_name("tools").env_key
    assert gone is not None
    p.store.unpublish(gone)  # its row and prefix are gone; the name still points at it

    names = [r.name for r in p.store.list_names()]
    assert len(names) == 8
    assert p.list() == [p.view(n) for n in names]
    assert p.list("project") == [p.view(r.name) for r in p.store.list_names("project")]
    shared = p.view("shared0")
    assert len(shared.projects) == 4 and shared.prefix is not None
    assert p.view("tools").prefix is None and p.view("cold").env_key is None


async def test_a_restart_reparses_no_unchanged_project(tmp_path: Path) -> None:
    """The signature of each good warm is kept in the registry: a new daemon on the same store finds
    the unchanged projects by stat() alone, and warms only the edited one."""
    projects = [write(tmp_path / "work" / f"p{i}", f"p{i}", ["hello"]) for i in range(3)]
    with opened(tmp_path) as (store, paths):
        first = Provisioner(store, FakeEngine(), Settings(paths=paths))
        for directory in projects:
            await first.add_project(str(directory), allow=True)
            await first.warm(directory.name)
        await first.close()
    write(projects[2], "p2", ["hello", "tool-a"])  # edited while the daemon was down
    engine = FakeEngine()
    with opened(tmp_path) as (store, paths):
        second = Provisioner(store, engine, Settings(paths=paths))
        try:
            assert await second.check_projects() == (2, 1)
            await second.warm("p2")
            assert [c for c in engine.calls if c[0] == "solve"] == [("solve", "hello"), ("solve", "tool-a")]
            assert "tool-a" in str(store.read_lock(store.get_name("p2").env_key or ""))
        finally:
            await second.close()
    with opened(tmp_path) as (store, paths):  # another engine: every signature is stale
        third = Provisioner(store, FakeEngine(platform="osx-arm64"), Settings(paths=paths))
        try:
            assert third.lifecycle.fresh.unchanged(store.get_name("p0")) is False
        finally:
            await third.close()


async def test_start_up_checks_yield_to_requests(tmp_path: Path) -> None:
    """300 projects: while the start-up check runs, other work on the loop (a health request) runs
    between projects, not after all of them."""
    with opened(tmp_path) as (store, paths):
        for i in range(300):
            store.add_name(f"p{i}", "project", str(write(tmp_path / "work" / f"p{i}", f"p{i}", ["hello"])))
        p = Provisioner(store, FakeEngine(), Settings(paths=paths))
        try:
            answered_during: list[bool] = []
            check = asyncio.create_task(p.check_projects())

            async def health() -> None:
                answered_during.append(not check.done())

            await asyncio.gather(health(), check)
            assert answered_during == [True]
            assert check.result() == (0, 300)  # never warmed: every project goes to the background
        finally:
            await p.close()


async def test_a_restart_with_changeps1_off_renders_each_project_again(tmp_path: Path) -> None:
    """A changed setting makes the kept signatures stale: the start-up check warms every project,
    which renders its activation without the prompt modifier."""
    from provisiond.shell import activation

    directory = write(tmp_path / "work" / "p", "p", ["hello"])
    with opened(tmp_path) as (store, paths):
        first = Provisioner(store, FakeEngine(), Settings(paths=paths))
        await first.add_project(str(directory), allow=True)
        await first.warm("p")
        await first.close()
    assert "(p) " in (activation.read_project_activation(paths, directory, "bash") or "")
    with opened(tmp_path) as (store, paths):
        second = Provisioner(store, FakeEngine(), Settings(paths=paths, changeps1=False))
        try:
            assert await second.check_projects() == (0, 1)
            await second.warm("p")
            script = activation.read_project_activation(paths, directory, "bash") or ""
            assert "PS1=" not in script.replace("PS1=$_PROVISIOND_PS1_OLD", "").replace("PS1=${PS1#", "")
            assert "_PROVISIOND_PS1=$PS1" not in script
        finally:
            await second.close()
