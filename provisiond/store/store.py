"""The content-addressed store: on-disk layout, SQLite registry, atomic publish, one daemon per store."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from provisiond.config import layout
from provisiond.config.settings import Paths
from provisiond.domain.errors import (
    ConfigError,
    DiskFullError,
    EnvNotFoundError,
    StoreBusyError,
)
from provisiond.domain.lock import Lock
from provisiond.store import durable
from provisiond.store.credentials import scrub_store
from provisiond.store.files import write_atomic
from provisiond.store.registry import Registry, open_registry

log = logging.getLogger(__name__)

MARKER = layout.MARKER  # written inside a prefix last, just before it becomes visible



class Store(Registry):
    """One store root. ``open()`` takes the store flock, so at most one daemon serves it."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None

    @classmethod
    @contextmanager
    def open(cls, paths: Paths) -> Iterator[Store]:
        with cls.held(paths) as store:
            store.load()
            yield store

    @classmethod
    @contextmanager
    def held(cls, paths: Paths) -> Iterator[Store]:
        """The store's flock, registry not opened yet (``provisionctl doctor``: never beside a daemon)."""
        store = cls(paths)
        store._acquire()
        try:
            yield store
        finally:
            store.close()

    def _acquire(self) -> None:
        self.paths.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.paths.daemon_lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreBusyError(
                f"another provisiond (pid {holder}) already serves the store {self.paths.home}",
                hint="stop it first, or start this one with another --home",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def load(self) -> None:
        """Open the registry (checked, migrated), then recover from a crash (``sweep``)."""
        for d in (self.paths.pkgs, self.paths.envs, self.paths.locks, self.paths.logs, self.paths.leases):
            d.mkdir(parents=True, exist_ok=True)
        self.make_private()
        self._db = open_registry(self.paths)  # schema version, migrations, never empty over envs
        scrub_store(self.paths, self._db)  # a store from before the credentials file
        self.sweep()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store is not open"
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Several registry changes as one: all of them or none, even after kill -9."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def make_private(self) -> None:
        """Give a store written by an older provisiond (0755 dirs, 0644 files) the modes of a new one.

        Only the root, the top level and the files that hold channel URLs, build output or the
        registry, not every file of every prefix (that walk would be slow): the root's 0700 is
        what keeps other users out, since no path resolves through a directory they cannot search.
        The rest is for copies of the store (a backup, an image layer) that lose the root's mode.
        """
        paths = self.paths
        try:
            os.chmod(paths.home, 0o700)
        except PermissionError:
            raise ConfigError(f"store {paths.home}: cannot make it private (owner uid "
                              f"{paths.home.stat().st_uid}, you are uid {os.getuid()})",
                              hint="run provisiond as the user who owns the store, or choose another --home") from None
        for directory, files in ((paths.home, 0o600), (paths.envs, None), (paths.locks, 0o600),
                                 (paths.logs, 0o600), (paths.repodata_cache, 0o600), (paths.activation, None),
                                 (paths.leases, 0o600), (paths.state, 0o600)):
            try:
                entries = list(os.scandir(directory))
                os.chmod(directory, 0o700)
            except FileNotFoundError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        os.chmod(entry.path, 0o700)
                    elif files is not None and entry.is_file(follow_symlinks=False):
                        os.chmod(entry.path, files)
                except FileNotFoundError:  # removed meanwhile (a lease, a temp file)
                    pass

    # -- start-up recovery ---------------------------------------------------------------

    def sweep(self) -> None:
        """Remove what a crash left behind: build dirs, unmarked prefixes, builds still 'running'."""
        if self.paths.building.exists():
            for entry in self.paths.building.iterdir():
                log.warning("removing interrupted build %s", entry)
                shutil.rmtree(entry, ignore_errors=True)
        self.paths.building.mkdir(parents=True, exist_ok=True)
        known = {row["prefix"] for row in self.db.execute("SELECT prefix FROM envs")}
        for entry in self.paths.envs.iterdir():
            if entry == self.paths.building or str(entry) in known:
                continue
            marker = entry / MARKER
            try:
                env_key = json.loads(marker.read_text())["env_key"]
                lock = Lock.from_json((self.paths.locks / f"{env_key}.json").read_text())
            except (OSError, ValueError, KeyError):
                log.warning("removing incomplete prefix %s", entry)
                shutil.rmtree(entry, ignore_errors=True)
                continue
            # Renamed into place but the row was not committed: finish the publish.
            self.add_env(lock, entry)
        now = time.time()
        self.db.execute(
            "UPDATE builds SET status='interrupted', finished=?, error='the daemon stopped during the build'"
            " WHERE status='running'", (now,))
        self.db.execute("UPDATE names SET status=CASE WHEN env_key IS NULL THEN 'new' ELSE 'ready' END"
                        " WHERE status='building'")

    # -- envs ----------------------------------------------------------------------------

    def find_env(self, env_key: str) -> Path | None:
        """The prefix of a published env, or None."""
        row = self.db.execute("SELECT prefix FROM envs WHERE env_key=?", (env_key,)).fetchone()
        if row is None or not Path(row["prefix"]).is_dir():
            return None
        return Path(row["prefix"])

    def touch_env(self, env_key: str) -> None:
        self.db.execute("UPDATE envs SET last_used=? WHERE env_key=?", (time.time(), env_key))

    def read_lock(self, env_key: str) -> Lock:
        try:
            return Lock.from_json((self.paths.locks / f"{env_key}.json").read_text())
        except FileNotFoundError:
            raise EnvNotFoundError(f"no lock for env {env_key[:16]}") from None

    def new_build_dir(self, env_key: str) -> Path:
        path = self.paths.building / f"{env_key[:16]}-{os.getpid()}-{time.monotonic_ns()}"
        path.mkdir(parents=True)
        return path

    def publish(self, lock: Lock, build_dir: Path) -> Path:
        """Make a finished build visible: ``place`` it (files), then the row."""
        final = self.place(lock, build_dir)
        self.add_env(lock, final)
        return final

    def place(self, lock: Lock, build_dir: Path, on_line: Callable[[str], None] | None = None) -> Path:
        """The files of a publish, in the order a power loss needs (durable.py); no registry, so a
        thread may run it (``durable.finish_in_thread``), and ``add_env`` commits the row after.

        The build's files reach the disk, then the lock file, then the marker, then one rename()
        whose new name is fsynced too: a prefix with the marker is complete after a power loss.
        """
        env_key = lock.env_key
        final = self.paths.prefix(env_key)
        started = time.perf_counter()
        how, synced = durable.sync_tree(build_dir)
        write_atomic(self.paths.locks / f"{env_key}.json", lock.without_credentials().to_json(), sync=True)
        write_atomic(build_dir / MARKER, json.dumps({"env_key": env_key, "lock_version": 1}), sync=True)
        try:
            os.rename(build_dir, final)
        except OSError:
            try:
                published = json.loads((final / MARKER).read_text())["env_key"]
            except (OSError, ValueError, KeyError):
                raise EnvNotFoundError(f"cannot publish {final}: something else is there") from None
            if published != env_key:  # two keys sharing their first 16 hex digits: never alias them
                raise StoreBusyError(f"prefix {final} already holds env {published[:32]}…, not {env_key[:32]}…",
                                     hint="report this: an env_key prefix collision") from None
            # Someone published the same env_key first; ours is an identical copy.
            shutil.rmtree(build_dir, ignore_errors=True)
            return final
        durable.fsync_dir(self.paths.envs)
        _report(final.name, how, synced, time.perf_counter() - started, on_line)
        return final

    # -- engines that build in place (micromamba: Engine.builds_in_place) ------------------

    def publish_in_place(self, lock: Lock, prefix: Path) -> Path:
        """Publish an env built at its final path: ``place_in_place``, then the row."""
        self.place_in_place(lock, prefix)
        self.add_env(lock, prefix)
        return prefix

    def place_in_place(self, lock: Lock, prefix: Path, on_line: Callable[[str], None] | None = None) -> Path:
        """The files of an in-place publish: the prefix reaches the disk, then the lock file, then the
        marker last. Until the marker exists the prefix is garbage to ``sweep`` and ``discard_in_place``.
        """
        if prefix != self.paths.prefix(lock.env_key):
            raise ValueError(f"{prefix} is not the prefix of env {lock.env_key[:16]}")
        started = time.perf_counter()
        how, synced = durable.sync_tree(prefix)
        write_atomic(self.paths.locks / f"{lock.env_key}.json", lock.without_credentials().to_json(), sync=True)
        (prefix / MARKER).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(prefix / MARKER, json.dumps({"env_key": lock.env_key, "lock_version": 1}), sync=True)
        _report(prefix.name, how, synced, time.perf_counter() - started, on_line)
        return prefix

    def discard_in_place(self, prefix: Path) -> None:
        """Remove a half-built in-place prefix; one with the marker (published) is left alone."""
        if prefix.exists() and not (prefix / MARKER).exists():
            log.warning("removing incomplete prefix %s", prefix)
            shutil.rmtree(prefix, ignore_errors=True)

    def add_env(self, lock: Lock, prefix: Path) -> None:
        """The registry row of a placed env (idempotent): the last step of a publish."""
        now = time.time()
        self.db.execute(
            "INSERT OR IGNORE INTO envs VALUES (?,?,?,?,?,?,?)",
            (lock.env_key, str(prefix), lock.platform, lock.engine, len(lock.packages), now, now))

    def unpublish(self, env_key: str) -> Path | None:
        """Make an env invisible at once (row, lock, activation); return its files moved out of sight.

        The caller deletes the returned dir (slow: do it in a thread); a crash before that leaves
        it in ``.building/``, which the next start-up sweep removes.
        """
        row = self.db.execute("SELECT prefix FROM envs WHERE env_key=?", (env_key,)).fetchone()
        self.db.execute("DELETE FROM envs WHERE env_key=?", (env_key,))
        if row is not None:
            self.forget_sizes([row["prefix"]])  # a rebuild at the same prefix is measured again
        (self.paths.locks / f"{env_key}.json").unlink(missing_ok=True)
        shutil.rmtree(self.paths.activation / env_key, ignore_errors=True)
        if row is None or not Path(row["prefix"]).exists():
            return None
        trash = self.paths.building / f"trash-{env_key[:16]}-{time.monotonic_ns()}"
        os.rename(row["prefix"], trash)
        return trash

    def list_envs(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM envs ORDER BY created").fetchall()
        return [dict(row) for row in rows]

    def trash(self, path: Path) -> Path | None:
        """Move ``path`` (a package-cache entry) out of sight at once, into ``.building/`` (which the
        start-up sweep empties); the caller deletes it, slowly, in a thread."""
        trash = self.paths.building / f"trash-{path.name}-{time.monotonic_ns()}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return None
        return trash

    def disk_full(self, exc: BaseException) -> DiskFullError | None:
        """``exc`` as a DiskFullError naming the path and the bytes left, if it says the disk is full.

        Engines report it in their own words: rattler as "No space left on device (os error 28)"
        inside a "failed to fetch" message, SQLite as "database or disk is full".
        """
        text = str(exc)
        full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or \
            any(marker in text for marker in ("No space left on device", "os error 28", "disk is full",
                                              "Disk quota exceeded"))
        if not full:
            return None
        where = getattr(exc, "filename", None) or self.paths.home
        try:
            free = shutil.disk_usage(self.paths.home).free
        except OSError:
            free = 0
        return DiskFullError(f"the disk is full at {where}: {free} bytes free",
                             hint=f"free space on the filesystem of {self.paths.home} (provisionctl gc "
                                  "--cache-budget 1G drops cached packages), then run the command again")

def _report(name: str, how: str, synced: float, total: float, on_line: Callable[[str], None] | None) -> None:
    """The durability step's cost, in the build log (benchmarks/bench_core.py reads it there)."""
    message = (f"synced {name} to disk ({how}) in {synced * 1000:.1f} ms; with the lock file, marker and "
               f"rename in {total * 1000:.1f} ms")
    log.debug("%s", message)
    if on_line is not None:
        on_line(message)
