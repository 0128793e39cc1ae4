"""gc at scale: each env and package-cache entry is measured once, and the size is kept in the registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisiond.config.settings import Paths
from provisiond.domain.lock import Lock, Package
from provisiond.store import gc
from provisiond.store.store import MARKER, Store


def lock_of(i: int) -> Lock:
    return Lock(platform="linux-64", packages=(Package(
        name=f"p{i}", version="1", build="0", build_number=0, subdir="linux-64", channel="file:///c/",
        url=f"file:///c/linux-64/p{i}-1-0.conda", file_name=f"p{i}-1-0.conda", sha256=f"{i:064x}"),))


def publish(store: Store, i: int, payload: int, shared: Path | None = None) -> Lock:
    """An env with ``payload`` bytes of its own, and a hardlink to ``shared`` (a cache file) if given."""
    lock = lock_of(i)
    build_dir = store.new_build_dir(lock.env_key)
    (build_dir / "bin").mkdir()
    (build_dir / "bin" / "own").write_bytes(b"x" * payload)
    if shared is not None:
        os.link(shared, build_dir / "bin" / "linked")
    store.publish(lock, build_dir)
    return lock


def overhead(paths: Paths, lock: Lock) -> int:
    """The marker and the lock file of a published env."""
    return (paths.prefix(lock.env_key) / MARKER).stat().st_size + (paths.locks / f"{lock.env_key}.json").stat().st_size


async def collect(store: Store, *, dry_run: bool, budget: int | None = None) -> dict:
    return await gc.collect(store, dry_run=dry_run, older_than_days=0, cache_budget_bytes=budget,
                            in_use=lambda _key, leases=None: None, pinned=set)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(home=tmp_path / "store", socket=tmp_path / "s.sock", state=tmp_path / "state")


async def test_sizes_are_measured_once_and_kept(paths: Paths) -> None:
    with Store.open(paths) as store:
        entry = paths.pkgs / "p0-1-0"
        (entry / "bin").mkdir(parents=True)
        (entry / "bin" / "tool").write_bytes(b"y" * 3000)
        locks = [publish(store, i, 1000 * (i + 1), shared=entry / "bin" / "tool") for i in range(3)]
        assert len(gc.unmeasured(store, store.sizes())) == 4  # three envs, one cache entry

        plan = await collect(store, dry_run=True, budget=0)
        assert gc.unmeasured(store, store.sizes()) == []  # kept: the next gc walks nothing
        by_key = {e["env_key"]: e["bytes"] for e in plan["envs"]}
        for i, lock in enumerate(locks):
            # Its own file, marker and lock; the hardlinked cache file frees nothing while the cache has it.
            assert by_key[lock.env_key] == 1000 * (i + 1) + overhead(paths, lock)
        assert plan["packages"] == [{"package": "p0-1-0", "path": str(entry), "paths": [str(entry)], "bytes": 3000}]

        # What is kept is what gc reports, even when the files change afterwards (measured once).
        (paths.prefix(locks[0].env_key) / "bin" / "own").write_bytes(b"x" * 5)
        again = await collect(store, dry_run=True)
        assert {e["env_key"]: e["bytes"] for e in again["envs"]} == by_key

        done = await collect(store, dry_run=False)
        assert {e["env_key"] for e in done["envs"]} == {lock.env_key for lock in locks}
        assert store.sizes() == {str(entry): 3000}  # removed envs are forgotten


async def test_a_rebuilt_env_is_measured_again(paths: Paths) -> None:
    with Store.open(paths) as store:
        lock = publish(store, 7, 100)
        await collect(store, dry_run=True)
        prefix = str(paths.prefix(lock.env_key))
        assert prefix in store.sizes()
        trash = store.unpublish(lock.env_key)  # `remove`: the row and its size go
        assert trash is not None and prefix not in store.sizes()
        publish(store, 7, 400)
        plan = await collect(store, dry_run=True)
        assert [e["bytes"] for e in plan["envs"]] == [400 + overhead(paths, lock)]


def test_the_registry_keeps_sizes_across_restarts(paths: Paths) -> None:
    with Store.open(paths) as store:
        store.record_sizes({"/x/envs/a": 12, "/x/pkgs/b": 34})
    with Store.open(paths) as store:
        assert store.sizes() == {"/x/envs/a": 12, "/x/pkgs/b": 34}
