"""The registry (``state.db``): its schema version, migrations, refusing a broken file, and its rows.

Versions (docs/store.md, "The registry"):

- 0: no tables (a new file), or a store from before versions existed (``user_version`` 0 with tables);
- 1: ``envs``, ``names`` (+ ``names_project``), ``solves``, ``builds``: provisiond before the allow-list;
- 2: + ``trust``: the schema of the first versioned provisiond;
- 3: + ``cache_use``: when a build last linked from each package-cache entry (gc's LRU order);
- 4: + ``fresh``: each name's change-detection signature (a restart re-parses nothing unchanged), and
  ``sizes``: the bytes of each env and package-cache entry, measured once (gc reads them).

An unversioned store is placed by its tables (``fresh``: 4, ``cache_use``: 3, ``trust``: 2, else 1), then
every later step runs, each in its own transaction with its ``user_version``. A version above ``VERSION`` was written
by a newer provisiond and is refused, so is a file that is not a readable SQLite database: never an
empty start over a store that has envs (``provisionctl doctor`` rebuilds it from the disk).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisiond.config.settings import Paths
from provisiond.domain.errors import ConfigError, EnvNotFoundError
from provisiond.domain.lock import Lock
from provisiond.domain.urls import mask

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
    # 3 -> 4: signatures of the last good warms (freshness.py), sizes measured once (gc.py)
    """
    CREATE TABLE fresh (
        name TEXT PRIMARY KEY, context TEXT NOT NULL, signature TEXT NOT NULL, env_key TEXT NOT NULL,
        spec_key TEXT NOT NULL, files TEXT NOT NULL);
    CREATE TABLE sizes (path TEXT PRIMARY KEY, bytes INTEGER NOT NULL, measured REAL NOT NULL);
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
    return 4 if "fresh" in tables else 3 if "cache_use" in tables else 2 if "trust" in tables else 1


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


# -- the rows ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NameRecord:
    """A named env: a project directory (kind ``project``) or an env created from a file (``file``)."""

    name: str
    kind: str
    source: str | None
    env_key: str | None
    spec_key: str | None
    status: str
    error: str | None
    build_id: int | None
    updated: float


@dataclass(frozen=True, slots=True)
class Allowance:
    """The user allowed ``path`` (a project dir, or an env's file) with this fingerprint (trust.py)."""

    path: str
    digest: str
    parts: dict[str, str]
    allowed: float

    def to_wire(self) -> dict[str, Any]:
        return {"path": self.path, "digest": self.digest, "allowed": self.allowed}


@dataclass(frozen=True, slots=True)
class BuildRecord:
    id: int
    env_key: str
    name: str | None
    status: str
    started: float
    finished: float | None
    log: str
    error: str | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id, "env_key": self.env_key, "name": self.name, "status": self.status,
            "started": self.started, "finished": self.finished, "log": self.log, "error": self.error,
        }


class Registry:
    """The registry's rows: names, builds, the allow-list, the solve cache, package-cache use.

    ``Store`` is a Registry over its open connection; what touches the disk beyond ``state.db``
    (prefixes, locks, the package cache) stays in store.py.
    """

    paths: Paths  # set by Store

    @property
    def db(self) -> sqlite3.Connection:
        raise NotImplementedError

    # -- package cache use (gc's least-recently-used order) ----------------------------------

    def touch_cache(self, entries: list[str]) -> None:
        """Record that a build linked from these ``pkgs/`` entries now."""
        now = time.time()
        self.db.executemany("INSERT OR REPLACE INTO cache_use VALUES (?,?)", [(e, now) for e in entries])

    def cache_last_used(self) -> dict[str, float]:
        return {row["entry"]: row["last_used"] for row in self.db.execute("SELECT * FROM cache_use")}

    # -- sizes (gc): measured once per env and cache entry, kept ------------------------------

    def sizes(self) -> dict[str, int]:
        """Bytes of every measured path (an env's prefix, a package-cache entry)."""
        return {row["path"]: row["bytes"] for row in self.db.execute("SELECT path, bytes FROM sizes")}

    def record_sizes(self, sizes: dict[str, int]) -> None:
        now = time.time()
        self.db.executemany("INSERT OR REPLACE INTO sizes VALUES (?,?,?)", [(p, b, now) for p, b in sizes.items()])

    def forget_sizes(self, paths: list[str]) -> None:
        self.db.executemany("DELETE FROM sizes WHERE path=?", [(p,) for p in paths])

    # -- change detection (freshness.py): the last good warm of each name ---------------------

    def fresh_rows(self, context: str) -> list[sqlite3.Row]:
        """The signatures recorded under ``context`` (the same engine and settings); others are stale."""
        return self.db.execute("SELECT * FROM fresh WHERE context=?", (context,)).fetchall()

    def record_fresh(self, name: str, context: str, signature: str, env_key: str, spec_key: str,
                     files: tuple[str, ...]) -> None:
        self.db.execute("INSERT OR REPLACE INTO fresh VALUES (?,?,?,?,?,?)",
                        (name, context, signature, env_key, spec_key, json.dumps(files)))

    def forget_fresh(self, name: str) -> None:
        self.db.execute("DELETE FROM fresh WHERE name=?", (name,))

    # -- solve cache -----------------------------------------------------------------------

    def cached_lock(self, spec_key: str, max_age: float) -> Lock | None:
        row = self.db.execute("SELECT lock, solved_at FROM solves WHERE spec_key=?", (spec_key,)).fetchone()
        if row is None or time.time() - row["solved_at"] > max_age:
            return None
        return Lock.from_json(row["lock"])

    def cached_lock_age(self, spec_key: str) -> float:
        """Seconds since ``spec_key`` was solved (infinite when it never was)."""
        row = self.db.execute("SELECT solved_at FROM solves WHERE spec_key=?", (spec_key,)).fetchone()
        return float("inf") if row is None else time.time() - row["solved_at"]

    def cache_lock(self, spec_key: str, lock: Lock) -> None:
        self.db.execute("INSERT OR REPLACE INTO solves VALUES (?,?,?)",
                        (spec_key, lock.without_credentials().to_json(), time.time()))

    # -- names -----------------------------------------------------------------------------

    def find_name(self, name: str) -> NameRecord | None:
        row = self.db.execute("SELECT * FROM names WHERE name=?", (name,)).fetchone()
        return NameRecord(**dict(row)) if row else None

    def get_name(self, name: str) -> NameRecord:
        record = self.find_name(name)
        if record is None:
            raise EnvNotFoundError(f"no env named {name!r}", hint="see: provisionctl list")
        return record

    def find_project(self, directory: str) -> NameRecord | None:
        row = self.db.execute("SELECT * FROM names WHERE kind='project' AND source=?", (directory,)).fetchone()
        return NameRecord(**dict(row)) if row else None

    def list_names(self, kind: str | None = None) -> list[NameRecord]:
        if kind is None:
            rows = self.db.execute("SELECT * FROM names ORDER BY name")
        else:
            rows = self.db.execute("SELECT * FROM names WHERE kind=? ORDER BY name", (kind,))
        return [NameRecord(**dict(row)) for row in rows]

    def add_name(self, name: str, kind: str, source: str | None) -> NameRecord:
        self.db.execute(
            "INSERT INTO names (name, kind, source, status, updated) VALUES (?,?,?,'new',?)"
            " ON CONFLICT(name) DO UPDATE SET kind=excluded.kind, source=excluded.source, updated=excluded.updated",
            (name, kind, source, time.time()))
        return self.get_name(name)

    def remove_name(self, name: str) -> None:
        self.db.execute("DELETE FROM names WHERE name=?", (name,))
        self.db.execute("DELETE FROM fresh WHERE name=?", (name,))

    def update_name(self, name: str, **values: Any) -> None:
        if values.get("error"):  # engine errors may quote a URL with its token
            values["error"] = mask(values["error"])
        values["updated"] = time.time()
        columns = ", ".join(f"{key}=?" for key in values)
        self.db.execute(f"UPDATE names SET {columns} WHERE name=?", (*values.values(), name))

    def projects_of(self, env_key: str) -> list[str]:
        """The directories of the projects whose env is ``env_key``, by name."""
        rows = self.db.execute("SELECT source FROM names WHERE kind='project' AND env_key=? AND source IS NOT NULL"
                               " ORDER BY name", (env_key,))
        return [row["source"] for row in rows]

    def env_prefixes(self) -> dict[str, str]:
        """Every published env's prefix, by env_key (one query: ``list`` must stay linear)."""
        return {row["env_key"]: row["prefix"] for row in self.db.execute("SELECT env_key, prefix FROM envs")}

    def names_of(self, env_key: str) -> list[str]:
        rows = self.db.execute("SELECT name FROM names WHERE env_key=? ORDER BY name", (env_key,))
        return [row["name"] for row in rows]

    # -- trust (the allow-list) -----------------------------------------------------------

    def allow(self, path: str, digest: str, parts: dict[str, str]) -> None:
        self.db.execute("INSERT OR REPLACE INTO trust VALUES (?,?,?,?)",
                        (path, digest, json.dumps(parts, sort_keys=True), time.time()))

    def deny(self, path: str) -> bool:
        """Forget an allowance; True if there was one."""
        return self.db.execute("DELETE FROM trust WHERE path=?", (path,)).rowcount > 0

    def find_allowance(self, path: str) -> Allowance | None:
        row = self.db.execute("SELECT * FROM trust WHERE path=?", (path,)).fetchone()
        return _allowance(row) if row else None

    def list_allowances(self) -> list[Allowance]:
        return [_allowance(row) for row in self.db.execute("SELECT * FROM trust ORDER BY path")]

    # -- builds ----------------------------------------------------------------------------

    def start_build(self, env_key: str, name: str | None) -> BuildRecord:
        cur = self.db.execute(
            "INSERT INTO builds (env_key, name, status, started, log) VALUES (?,?,'running',?, '')",
            (env_key, name, time.time()))
        build_id = int(cur.lastrowid or 0)
        log_path = self.paths.logs / f"build-{build_id}.log"
        self.db.execute("UPDATE builds SET log=? WHERE id=?", (str(log_path), build_id))
        return self.get_build(build_id)

    def finish_build(self, build_id: int, status: str, error: str | None = None) -> None:
        self.db.execute("UPDATE builds SET status=?, finished=?, error=? WHERE id=?",
                        (status, time.time(), mask(error) if error else error, build_id))

    def find_build(self, build_id: int) -> BuildRecord | None:
        row = self.db.execute("SELECT * FROM builds WHERE id=?", (build_id,)).fetchone()
        return BuildRecord(**dict(row)) if row else None

    def get_build(self, build_id: int) -> BuildRecord:
        from provisiond.domain.errors import BuildNotFoundError

        record = self.find_build(build_id)
        if record is None:
            raise BuildNotFoundError(f"no build with id {build_id}")
        return record

    def list_builds(self, status: str | None = None, limit: int = 50) -> list[BuildRecord]:
        if status:
            rows = self.db.execute("SELECT * FROM builds WHERE status=? ORDER BY id DESC LIMIT ?", (status, limit))
        else:
            rows = self.db.execute("SELECT * FROM builds ORDER BY id DESC LIMIT ?", (limit,))
        return [BuildRecord(**dict(row)) for row in rows]


def _allowance(row: sqlite3.Row) -> Allowance:
    return Allowance(path=row["path"], digest=row["digest"], parts=json.loads(row["parts"]), allowed=row["allowed"])
