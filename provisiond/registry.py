"""The registry's file: its schema version (``PRAGMA user_version``), migrations, and refusing a broken one.

Versions (docs/store.md, "The registry"):

- 0: no tables (a new file), or a store from before versions existed (``user_version`` 0 with tables);
- 1: ``envs``, ``names`` (+ ``names_project``), ``solves``, ``builds``: provisiond before the allow-list;
- 2: + ``trust``: the schema of the first versioned provisiond;
- 3: + ``cache_use``: when a build last linked from each package-cache entry (gc's LRU order).

An unversioned store is placed by its tables (``trust`` present: 2, else 1), then every later step
runs, each in its own transaction with its ``user_version``. A version above ``VERSION`` was written
by a newer provisiond and is refused, so is a file that is not a readable SQLite database: never an
empty start over a store that has envs (``provisionctl doctor`` rebuilds it from the disk).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from provisiond.errors import ConfigError
from provisiond.settings import Paths

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1
    """
    CREATE TABLE envs (
        env_key TEXT PRIMARY KEY, prefix TEXT NOT NULL, platform TEXT NOT NULL, engine TEXT NOT NULL,
        packages INTEGER NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL);
    CREATE TABLE names (
        name TEXT PRIMARY KEY, kind TEXT NOT NULL, source TEXT, env_key TEXT, spec_key TEXT,
        status TEXT NOT NULL, error TEXT, build_id INTEGER, updated REAL NOT NULL);
    CREATE UNIQUE INDEX names_project ON names(source) WHERE kind = 'project';
    CREATE TABLE solves (
        spec_key TEXT PRIMARY KEY, lock TEXT NOT NULL, solved_at REAL NOT NULL);
    CREATE TABLE builds (
        id INTEGER PRIMARY KEY AUTOINCREMENT, env_key TEXT NOT NULL, name TEXT, status TEXT NOT NULL,
        started REAL NOT NULL, finished REAL, log TEXT NOT NULL, error TEXT);
    """,
    # 1 -> 2: the allow-list (trust.py)
    """
    CREATE TABLE trust (
        path TEXT PRIMARY KEY, digest TEXT NOT NULL, parts TEXT NOT NULL, allowed REAL NOT NULL);
    """,
    # 2 -> 3: real use of the package cache (Store.touch_cache)
    """
    CREATE TABLE cache_use (entry TEXT PRIMARY KEY, last_used REAL NOT NULL);
    """,
)
VERSION = len(MIGRATIONS)


class RegistryBrokenError(ConfigError, code="registry-broken", http_status=500, exit_code=78):
    """``state.db`` is empty, truncated or not a database while the store has envs: run ``doctor``."""


class RegistryTooNewError(ConfigError, code="registry-too-new", http_status=500, exit_code=78):
    """``state.db`` was written by a newer provisiond (a schema version we do not know)."""


def has_envs(paths: Paths) -> bool:
    """Whether the store holds anything a registry would describe (a prefix, a lock, a name's activation)."""
    for directory, keep in ((paths.envs, lambda n: n != ".building"), (paths.locks, lambda n: n.endswith(".json")),
                            (paths.activation / "names", lambda n: True)):
        try:
            if any(keep(name) for name in (e.name for e in directory.iterdir())):
                return True
        except (FileNotFoundError, NotADirectoryError):
            continue
    return False


def broken(paths: Paths, why: str) -> RegistryBrokenError:
    return RegistryBrokenError(
        f"the registry {paths.db} {why}: provisiond will not start with an empty one over this store",
        hint=f"run: provisionctl --home {paths.home} doctor (and doctor --repair to rebuild it from the disk)")


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    return db


def unversioned(db: sqlite3.Connection) -> int:
    """The version of a store from before ``user_version``, by its tables."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return 0
    return 3 if "cache_use" in tables else 2 if "trust" in tables else 1


def open_registry(paths: Paths) -> sqlite3.Connection:
    """The registry of ``paths``, checked and migrated to ``VERSION``; raises rather than start empty."""
    path = paths.db
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = None  # a new store, or one restored from a bundle: the sweep adopts its envs
    if size == 0 and has_envs(paths):
        raise broken(paths, "is empty (0 bytes)")
    if size is None:  # SQLite gives its -wal and -shm files the database file's mode
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    db = connect(path)
    try:
        stored, version = _check(db, paths)
        if version > VERSION:
            raise RegistryTooNewError(
                f"the registry {path} has schema version {version}; this provisiond knows versions up to "
                f"{VERSION}", hint="upgrade provisiond (a newer one wrote this store), or use another --home")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if stored != version:  # a store from before versions, placed by its tables
            db.execute(f"PRAGMA user_version={version}")
        migrate(db, version)
    except BaseException:
        db.close()
        raise
    return db


def _check(db: sqlite3.Connection, paths: Paths) -> tuple[int, int]:
    """(the stored user_version, the version the store is at)."""
    try:
        result = db.execute("PRAGMA quick_check").fetchone()[0]
        stored = version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            version = unversioned(db)
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        raise broken(paths, f"cannot be read ({exc})") from None
    if result != "ok":
        raise broken(paths, f"fails its integrity check ({result})")
    return stored, version


def migrate(db: sqlite3.Connection, version: int) -> None:
    """Run the steps after ``version``, one transaction each (a crash leaves a whole version)."""
    for target in range(version + 1, VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            # Statement by statement: executescript() would COMMIT first.
            for statement in MIGRATIONS[target - 1].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={target}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if version:
            log.warning("migrated the registry from schema version %d to %d", target - 1, target)
