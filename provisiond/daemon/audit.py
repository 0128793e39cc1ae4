"""Audit: every package of the live envs against an OSV database (a directory or a zip of OSV JSON).

- **What is matched.** Each name's env: its conda packages against ``conda`` advisories, its
  ``pip:`` packages against ``PyPI`` ones, and conda packages that install a Python distribution
  (a ``*.dist-info`` or ``*.egg-info`` among their files in ``conda-meta``) against ``PyPI``
  advisories under that distribution's name and version. An env is immutable, so what it holds is
  read once per env_key.
- **When.** ``GET /v1/audit`` answers from memory: the database is loaded once (in a thread) and
  again when its file changes (its stat signature differs, or the watcher saw it), and findings are
  kept per env_key until then. The watcher re-audits every live env when the file changes and logs
  what it found, so an answer is ready before anyone asks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchfiles import awatch

from provisiond.config.settings import Settings
from provisiond.daemon.waiting import first_of
from provisiond.domain.errors import ProvisionError
from provisiond.domain.osv import AuditDatabaseError, Finding, Index, normalize, parse_record
from provisiond.store.registry import NameRecord
from provisiond.store.store import Store

log = logging.getLogger(__name__)

_DIST = re.compile(r"site-packages/([^/]+)-([^-/]+?)\.(?:dist-info|egg-info)(?:/|$)")
MAX_RECORD_BYTES = 16 << 20  # a single OSV record; the largest in OSV's PyPI export is far below


@dataclass(frozen=True, slots=True)
class Database:
    """An OSV database loaded into an Index."""

    path: Path
    signature: tuple[int, ...]
    index: Index
    withdrawn: int
    invalid: tuple[str, ...]
    loaded_at: float

    def to_wire(self) -> dict[str, Any]:
        return {"path": str(self.path), "advisories": self.index.count, "withdrawn": self.withdrawn,
                "invalid": len(self.invalid), "invalid_examples": list(self.invalid[:5]),
                "loaded_at": self.loaded_at}


@dataclass(frozen=True, slots=True)
class EnvPackage:
    """One installed package as the audit sees it."""

    source: str  # "conda" or "pip"
    name: str
    version: str
    pypi: tuple[str, str] | None  # (distribution name, version) when it is a Python distribution


def signature(path: Path) -> tuple[int, ...] | None:
    """What changes when the database does: the file's (or directory's) inode, size and mtime."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def load_database(path: Path) -> Database:
    """Read every OSV record of a directory (recursively) or a zip; withdrawn ones are counted, not used."""
    sig = signature(path)
    if sig is None:
        raise AuditDatabaseError(f"{path}: no such OSV database", hint="a directory or a zip of OSV JSON records")
    advisories, invalid, withdrawn = [], [], 0
    try:
        records = list(_records(path))
    except OSError as exc:  # replaced or removed while being read
        raise AuditDatabaseError(f"{path}: cannot read the OSV database: {exc.strerror or exc}",
                                 hint="the next change of the file is read again") from None
    for origin, raw in records:
        try:
            advisory = parse_record(json.loads(raw), origin)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            invalid.append(f"{origin}: {str(exc)[:120]}")
            continue
        except AuditDatabaseError as exc:
            invalid.append(exc.message)
            continue
        if advisory.withdrawn:
            withdrawn += 1
        advisories.append(advisory)
    index = Index(advisories)
    if invalid:
        log.warning("OSV database %s: %d records unreadable (first: %s)", path, len(invalid), invalid[0])
    log.info("OSV database %s: %d advisories (%d withdrawn, skipped)", path, index.count, withdrawn)
    return Database(path, sig, index, withdrawn, tuple(invalid), time.time())


def _records(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each record: ``*.json`` in a directory or one level below it (a folder per
    ecosystem), or in a zip. Never deeper: a mistyped ``--db /`` must not walk the whole disk."""
    if path.is_dir():
        for file in sorted([*path.glob("*.json"), *path.glob("*/*.json")]):
            if file.is_file() and file.stat().st_size <= MAX_RECORD_BYTES:
                yield str(file.relative_to(path)), file.read_bytes()
        return
    if not path.is_file():  # a FIFO or a device would block or never end
        raise AuditDatabaseError(f"{path}: neither a directory nor a regular file",
                                 hint="a directory or a zip of OSV JSON records")
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".json") and not info.is_dir() and info.file_size <= MAX_RECORD_BYTES:
                    yield info.filename, zf.read(info)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AuditDatabaseError(f"{path}: not a zip of OSV records ({exc})",
                                 hint="point audit_db at OSV's all.zip of an ecosystem, or a directory of "
                                      "OSV JSON files") from None


def env_packages(store: Store, env_key: str, prefix: Path) -> tuple[EnvPackage, ...]:
    """The env's conda and pip packages, with the Python distribution each conda package installs."""
    lock = store.read_lock(env_key)
    dists = _conda_dists(prefix)
    out = [EnvPackage("conda", p.name, p.version, dists.get(p.name)) for p in lock.packages]
    out += [EnvPackage("pip", p.name, p.version, (p.name, p.version)) for p in lock.pip if p.version]
    return tuple(out)


def _conda_dists(prefix: Path) -> dict[str, tuple[str, str]]:
    """conda package name -> (distribution, version) of the dist-info/egg-info it installed."""
    found: dict[str, tuple[str, str]] = {}
    meta = prefix / "conda-meta"
    try:
        files = [f for f in meta.iterdir() if f.suffix == ".json" and f.is_file()]
    except OSError:
        return found
    for file in files:
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        name = record.get("name") if isinstance(record, dict) else None
        if not isinstance(name, str):
            continue
        for path in record.get("files") or ():
            match = _DIST.search(path) if isinstance(path, str) else None
            if match:
                found[name] = (match.group(1), match.group(2))
                break
    return found


def findings_of(db: Database, packages: Iterable[EnvPackage]) -> list[tuple[EnvPackage, Finding]]:
    """Every (package, finding) of an env."""
    out = []
    for package in packages:
        if package.source == "conda":
            out += [(package, f) for f in db.index.findings("conda", package.name, package.version)]
        if package.pypi is not None:
            name, version = package.pypi
            out += [(package, f) for f in db.index.findings("PyPI", name, version)]
    return out


class Auditor:
    """The daemon's audit: the loaded database, findings per env_key, and the watcher of the file."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._dbs: dict[Path, Database] = {}
        self._packages: dict[str, tuple[EnvPackage, ...]] = {}
        self._findings: dict[tuple[Path, str], list[tuple[EnvPackage, Finding]]] = {}
        self._reconfigured = asyncio.Event()
        self._loading: dict[Path, asyncio.Task[Database]] = {}

    def apply(self, settings: Settings) -> None:
        if settings.audit_db != self.settings.audit_db:
            self._reconfigured.set()
        self.settings = settings

    def _path(self, db: str | None) -> Path:
        if db is not None:
            return Path(db).expanduser().resolve()
        if self.settings.audit_db is None:
            raise AuditDatabaseError("no OSV database is configured",
                                     hint="set audit_db in config.toml (docs/audit.md), or pass --db PATH")
        return self.settings.audit_db

    async def database(self, db: str | None = None) -> Database:
        """The database at ``db`` (default: the configured one), loaded again if its file changed."""
        path = self._path(db)
        current = self._dbs.get(path)
        if current is not None and current.signature == signature(path):
            return current
        task = self._loading.get(path)
        if task is None:  # one load per path at a time; every caller awaits it
            task = asyncio.create_task(asyncio.to_thread(load_database, path))
            self._loading[path] = task
            task.add_done_callback(lambda _t: self._loading.pop(path, None))
        loaded = await asyncio.shield(task)
        if self._dbs.get(path) is not loaded:
            self._dbs[path] = loaded
            for key in [k for k in self._findings if k[0] == path]:
                del self._findings[key]
        if path != self.settings.audit_db:  # a one-off --db: keep only the configured one and this
            for other in [p for p in self._dbs if p not in (path, self.settings.audit_db)]:
                del self._dbs[other]
        return loaded

    async def report(self, *, target: NameRecord | None = None, db: str | None = None,
                     package: str | None = None) -> dict[str, Any]:
        """Findings of every live env (or of ``target``), optionally of one package only."""
        database = await self.database(db)
        records = [target] if target is not None else self.store.list_names()
        live = [(r, prefix) for r in records if r.env_key and (prefix := self.store.find_env(r.env_key))]
        todo = {r.env_key or "": prefix for r, prefix in live if (database.path, r.env_key) not in self._findings}
        if todo:
            found = await asyncio.to_thread(self._audit_envs, database, todo)
            for env_key, rows in found.items():
                self._findings[(database.path, env_key)] = rows
        wanted = normalize("PyPI", package) if package else None
        out = []
        for record, _prefix in live:
            for env_package, finding in self._findings.get((database.path, record.env_key or ""), ()):
                if wanted is not None and wanted not in (normalize("PyPI", env_package.name), finding.name):
                    continue
                out.append(_row(record, env_package, finding))
        out.sort(key=lambda f: (f["env"], f["package"], f["advisory"]))
        return {"db": database.to_wire(), "envs": len(live), "findings": out}

    def _audit_envs(self, db: Database, todo: dict[str, Path]) -> dict[str, list[tuple[EnvPackage, Finding]]]:
        """In a thread: what each env holds (read once per env_key), matched against ``db``."""
        out = {}
        for env_key, prefix in todo.items():
            packages = self._packages.get(env_key)
            if packages is None:
                try:
                    packages = env_packages(self.store, env_key, prefix)
                except (ProvisionError, OSError) as exc:
                    log.warning("audit: cannot read env %s: %s", env_key[:16], exc)
                    continue
                self._packages[env_key] = packages
            out[env_key] = findings_of(db, packages)
        return out

    async def refresh(self) -> None:
        """Load the configured database again and re-audit every live env; log what was found."""
        try:
            result = await self.report()
        except ProvisionError as exc:
            log.warning("audit: %s", exc.message)
            return
        except Exception:  # a bug: say so, and keep the daemon serving (the next change tries again)
            log.exception("audit of the live envs failed")
            return
        findings = result["findings"]
        envs = sorted({f["env"] for f in findings})
        log.info("audit: %d findings in %d of %d envs against %s (%d advisories)%s", len(findings), len(envs),
                 result["envs"], result["db"]["path"], result["db"]["advisories"],
                 f": {', '.join(envs)}" if envs else "")

    async def watch(self, stop: asyncio.Event) -> None:
        """Until ``stop``: audit at start-up and whenever the configured database file changes."""
        while not stop.is_set():
            self._reconfigured.clear()
            path = self.settings.audit_db
            restart = asyncio.Event()
            waiter = asyncio.create_task(first_of(stop, self._reconfigured, then=restart))
            try:
                if path is None:
                    await restart.wait()
                    continue
                if signature(path) is not None:
                    await self.refresh()
                watched = path if path.is_dir() else _existing_parent(path)
                if watched is None:
                    await restart.wait()
                    continue
                try:
                    async for changes in awatch(watched, watch_filter=None, stop_event=restart,
                                                recursive=path.is_dir(), debounce=self.settings.watch_debounce_ms,
                                                step=self.settings.watch_step_ms, ignore_permission_denied=True):
                        if any(Path(changed) == path or path in Path(changed).parents for _c, changed in changes):
                            log.info("OSV database %s changed: auditing every env again", path)
                            await self.refresh()
                except (OSError, RuntimeError) as exc:  # no inotify watch left, say: requests still see changes
                    log.warning("cannot watch the OSV database %s (%s): it is read again when asked", path, exc)
                    await restart.wait()
            finally:
                waiter.cancel()
                await asyncio.gather(waiter, return_exceptions=True)


def _row(record: NameRecord, package: EnvPackage, finding: Finding) -> dict[str, Any]:
    advisory = finding.advisory
    return {"env": record.name, "kind": record.kind, "project": record.source if record.kind == "project" else None,
            "env_key": record.env_key, "package": package.name, "version": package.version,
            "source": package.source, "ecosystem": finding.ecosystem, "matched": f"{finding.name} {finding.version}",
            "advisory": advisory.id, "aliases": list(advisory.aliases), "severity": advisory.severity,
            "score": advisory.score, "fixed": finding.fixed, "summary": advisory.summary}


def _existing_parent(path: Path) -> Path | None:
    for parent in path.parents:
        if parent.is_dir():
            return parent
    return None

