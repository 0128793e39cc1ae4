"""The registry file: schema versions and migrations, and no silent empty start over a store with envs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from provisiond.config.settings import Paths
from provisiond.domain.errors import ConfigError
from provisiond.store.registry import VERSION, RegistryBrokenError, RegistryTooNewError
from provisiond.store.store import Store
from tests.store.test_store import LOCK, fake_build

# The registry of provisiond before the allow-list (git: store.py before the trust table), unversioned.
OLD_SCHEMA = """
CREATE TABLE envs (
    env_key TEXT PRIMARY KEY, prefix TEXT NOT NULL, platform TEXT NOT NULL, engine TEXT NOT NULL,
    packages INTEGER NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL);
CREATE TABLE names (
    name TEXT PRIMARY KEY, kind TEXT NOT NULL, source TEXT, env_key TEXT, spec_key TEXT,
    status TEXT NOT NULL, error TEXT, build_id INTEGER, updated REAL NOT NULL);
CREATE UNIQUE INDEX names_project ON names(source) WHERE kind = 'project';
CREATE TABLE solves (spec_key TEXT PRIMARY KEY, lock TEXT NOT NULL, solved_at REAL NOT NULL);
CREATE TABLE builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT, env_key TEXT NOT NULL, name TEXT, status TEXT NOT NULL,
    started REAL NOT NULL, finished REAL, log TEXT NOT NULL, error TEXT);
"""


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(home=tmp_path / "store", socket=tmp_path / "s.sock", state=tmp_path / "state")


def user_version(paths: Paths) -> int:
    with sqlite3.connect(paths.db) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_a_new_store_gets_the_current_version(paths: Paths) -> None:
    with Store.open(paths) as store:
        tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"envs", "names", "solves", "builds", "trust", "cache_use", "fresh", "sizes"} <= tables
    assert user_version(paths) == VERSION == 4


def test_an_older_store_is_migrated_and_keeps_its_rows(paths: Paths) -> None:
    paths.home.mkdir(parents=True)
    with sqlite3.connect(paths.db) as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO names VALUES ('nlp', 'project', '/p/nlp', NULL, NULL, 'new', NULL, NULL, 1.0)")
        db.execute("INSERT INTO solves VALUES ('k1', ?, 2.0)", (LOCK.to_json(),))
        db.execute("INSERT INTO builds (env_key, name, status, started, log) VALUES ('e', 'nlp', 'failed', 3.0, '')")
    db.close()
    assert user_version(paths) == 0
    with Store.open(paths) as store:
        assert store.get_name("nlp").source == "/p/nlp"
        assert store.cached_lock("k1", float("inf")) == LOCK
        assert [b.status for b in store.list_builds()] == ["failed"]
        store.allow("/p/nlp", "d" * 64, {"channels": "x"})  # the table the migration added
        assert store.find_allowance("/p/nlp") is not None
    assert user_version(paths) == VERSION


def test_an_unversioned_current_store_is_placed_at_version_2(paths: Paths) -> None:
    """A store written by provisiond just before versions (trust table, user_version 0) is version 2."""
    with Store.open(paths) as store:
        store.add_name("tools", "file", "/x/env.yml")
        store.allow("/x/env.yml", "d" * 64, {})
        store.db.execute("PRAGMA user_version=0")
    with Store.open(paths) as store:
        assert store.find_name("tools") is not None and store.find_allowance("/x/env.yml") is not None
    assert user_version(paths) == VERSION


def test_a_newer_store_is_refused_with_both_versions(paths: Paths) -> None:
    with Store.open(paths):
        pass
    with sqlite3.connect(paths.db) as db:
        db.execute(f"PRAGMA user_version={VERSION + 1}")
    db.close()
    with pytest.raises(RegistryTooNewError) as info, Store.open(paths):
        pass
    err = info.value
    assert f"schema version {VERSION + 1}" in err.message and f"up to {VERSION}" in err.message
    assert "upgrade provisiond" in (err.hint or "")
    assert err.exit_code == 78 and isinstance(err, ConfigError)
    assert user_version(paths) == VERSION + 1  # untouched


def test_an_empty_registry_beside_envs_is_refused(paths: Paths) -> None:
    with Store.open(paths) as store:
        store.publish(LOCK, fake_build(store))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{paths.db}{suffix}").unlink(missing_ok=True)
    paths.db.write_bytes(b"")
    with pytest.raises(RegistryBrokenError, match=r"is empty \(0 bytes\)") as info, Store.open(paths):
        pass
    assert info.value.exit_code == 78 and "provisionctl" in (info.value.hint or "") and "doctor" in info.value.hint
    assert paths.db.stat().st_size == 0 and paths.prefix(LOCK.env_key).is_dir()  # nothing was touched


def test_an_empty_registry_of_an_empty_store_is_a_new_store(paths: Paths) -> None:
    paths.home.mkdir(parents=True)
    paths.db.write_bytes(b"")
    with Store.open(paths) as store:
        assert store.list_envs() == []
    assert user_version(paths) == VERSION


def test_a_registry_that_is_not_a_database_is_refused(paths: Paths) -> None:
    paths.home.mkdir(parents=True)
    paths.db.write_bytes(b"this is not sqlite at all\n" * 200)
    with pytest.raises(RegistryBrokenError, match="cannot be read"), Store.open(paths):
        pass
    assert paths.db.read_bytes().startswith(b"this is not sqlite")
