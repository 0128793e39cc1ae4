"""The store on real temp dirs: flock, start-up sweep, atomic publish."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisiond.config.settings import Paths
from provisiond.domain.errors import StoreBusyError
from provisiond.domain.lock import Lock, Package
from provisiond.store.store import MARKER, Store

LOCK = Lock(platform="linux-64", packages=(Package(
    name="a", version="1", build="0", build_number=0, subdir="linux-64", channel="file:///c/",
    url="file:///c/linux-64/a-1-0.conda", file_name="a-1-0.conda", sha256="00" * 32),))


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(home=tmp_path / "store", socket=tmp_path / "s.sock", state=tmp_path / "state")


def fake_build(store: Store) -> Path:
    build_dir = store.new_build_dir(LOCK.env_key)
    (build_dir / "conda-meta").mkdir()
    (build_dir / "bin").mkdir()
    (build_dir / "bin" / "a").write_text("#!/bin/sh\n")
    return build_dir


def test_one_store_one_owner(paths: Paths) -> None:
    with Store.open(paths), pytest.raises(StoreBusyError, match="already serves the store"), Store.open(paths):
        pass
    with Store.open(paths):  # released on close
        pass


def test_publish_is_a_rename_and_a_row(paths: Paths) -> None:
    with Store.open(paths) as store:
        build_dir = fake_build(store)
        prefix = store.publish(LOCK, build_dir)
        assert prefix == paths.prefix(LOCK.env_key) and not build_dir.exists()
        assert json.loads((prefix / MARKER).read_text())["env_key"] == LOCK.env_key
        assert store.find_env(LOCK.env_key) == prefix
        assert store.read_lock(LOCK.env_key) == LOCK
        # A second identical build loses the race quietly and leaves no garbage.
        again = store.publish(LOCK, fake_build(store))
        assert again == prefix and not any(paths.building.iterdir())


def test_sweep_removes_garbage_and_finishes_committed_renames(paths: Paths) -> None:
    with Store.open(paths) as store:
        half = fake_build(store)
        store.start_build(LOCK.env_key, None)
        unmarked = paths.envs / "0123456789abcdef"
        (unmarked / "bin").mkdir(parents=True)
        renamed = store.publish(LOCK, fake_build(store))
        store.db.execute("DELETE FROM envs")  # crash after rename, before the row
    with Store.open(paths) as store:
        assert not half.exists() and not unmarked.exists()
        assert store.find_env(LOCK.env_key) == renamed
        assert [b.status for b in store.list_builds()] == ["interrupted"]
