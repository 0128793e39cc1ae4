"""Garbage collection: unreferenced, unused envs and a package cache over its budget.

An env is never removed while a name or project references it, a build is publishing it, or a
live process holds a lease on it (``provisionctl run``, ``cold-start``, an active shell).
Leases are files ``leases/<env_key>.<pid>``: a process takes one by creating it, and it lapses
when that pid is gone, so a crashed holder never pins an env forever.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisiond.config import layout
from provisiond.config.settings import Paths

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # `provisionctl run` takes leases: no sqlite3 import on its way to exec
    from provisiond.store import pkgcache
    from provisiond.store.store import Store


def lease_path(paths: Paths, env_key: str, pid: int) -> Path:
    """The lease file of ``env_key`` held by ``pid`` (scripts/cold-start writes the same name)."""
    return Path(layout.lease(str(paths.home), env_key, pid))


def take_lease(paths: Paths, env_key: str, pid: int | None = None) -> Path:
    """Hold ``env_key`` for process ``pid`` (default: this one) until it exits."""
    path = lease_path(paths, env_key, pid or os.getpid())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def leased(paths: Paths) -> set[str]:
    """env_keys with a lease held by a live process; lapsed leases are removed."""
    held: set[str] = set()
    directory = paths.leases
    if not directory.is_dir():
        return held
    for entry in directory.iterdir():
        env_key, _, pid = entry.name.rpartition(".")
        if pid.isdigit() and _alive(int(pid)):
            held.add(env_key)
        else:
            entry.unlink(missing_ok=True)
    return held


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class GcReport:
    dry_run: bool
    envs: list[dict[str, Any]] = field(default_factory=list)
    packages: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        freed: int = sum(e["bytes"] for e in self.envs) + sum(p["bytes"] for p in self.packages)
        return freed

    def to_wire(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "envs": self.envs, "packages": self.packages, "kept": self.kept,
                "freed_bytes": self.freed_bytes}


def plan(store: Store, *, older_than_days: float, cache_budget_bytes: int | None,
         in_use: Callable[..., str | None], pinned: Callable[[], set[str]],
         sizes: dict[str, int] | None = None) -> GcReport:
    """What a collection would remove: registry reads, one listing of the package cache, and the
    ``sizes`` measured once (``measure``); nothing here walks a prefix.

    ``in_use(env_key, leases=...)`` is the lifecycle's one answer; ``pinned()`` names the cache
    entries running builds link from.
    """
    sizes = store.sizes() if sizes is None else sizes
    report = GcReport(dry_run=True)
    held = leased(store.paths)
    cutoff = time.time() - older_than_days * 86400
    for env in store.list_envs():
        key = env["env_key"]
        reason = in_use(key, leases=held) or ("recently used" if env["last_used"] > cutoff else None)
        entry = {"env_key": key, "prefix": env["prefix"]}
        if reason:
            report.kept.append({**entry, "reason": reason})
        else:
            report.envs.append({**entry, "bytes": sizes.get(env["prefix"], 0)})
    if cache_budget_bytes is not None:
        report.packages = _over_budget(cache_entries(store.paths.pkgs), cache_budget_bytes, store.cache_last_used(),
                                       pinned(), sizes)
    return report


def cache_entries(pkgs: Path) -> list[pkgcache.Entry]:
    """The package cache's packages in both engines' layouts, one entry per ``name-version-build``
    (``store/pkgcache.py``): never locks, hidden files or micromamba's bookkeeping."""
    from provisiond.store import pkgcache  # here: `provisionctl run` imports this module for its lease

    return pkgcache.entries(pkgs)


def unmeasured(store: Store, sizes: dict[str, int]) -> list[tuple[str, str]]:
    """(kind, path) of every env and cache entry without a kept size: what ``measure`` must walk."""
    todo = [("env", env["prefix"]) for env in store.list_envs() if env["prefix"] not in sizes]
    todo += [("pkg", str(p)) for e in cache_entries(store.paths.pkgs) for p in e.paths if str(p) not in sizes]
    return todo


def measure(paths: Paths, todo: list[tuple[str, str]]) -> dict[str, int]:
    """Walk each path once (slow: call in a thread). An env counts what removing it frees: its files
    not hardlinked elsewhere, its lock and its activation; a cache entry counts all of its bytes."""
    out = {}
    for kind, path in todo:
        if kind == "pkg":
            out[path] = _tree_bytes(Path(path), only_unshared=False)
            continue
        key = _env_key_of(path)
        extra = [paths.locks / f"{key}.json", paths.activation / key] if key else []
        out[path] = sum(_tree_bytes(p, only_unshared=True) for p in (Path(path), *extra) if p.exists())
    return out


def _env_key_of(prefix: str) -> str | None:
    from provisiond.config.layout import MARKER

    try:
        with open(os.path.join(prefix, MARKER), encoding="utf-8") as f:
            key = json.load(f).get("env_key")
    except (OSError, ValueError, AttributeError):
        return None
    return key if isinstance(key, str) and key.isalnum() else None


async def collect(store: Store, *, dry_run: bool, older_than_days: float, cache_budget_bytes: int | None,
                  in_use: Callable[..., str | None], pinned: Callable[[], set[str]]) -> dict[str, Any]:
    """Measure what was never measured (in a thread; once per env and cache entry, kept in the
    registry), plan, then (unless ``dry_run``) remove. The plan, the last check (``in_use``,
    ``pinned``) and the unpublish happen in one synchronous step after the measuring; the slow
    deletion of what was moved out of sight runs in a thread."""
    import asyncio  # here: `provisionctl run` imports this module for its lease, and must start fast
    sizes = store.sizes()
    todo = unmeasured(store, sizes)
    if todo:
        measured = await asyncio.to_thread(measure, store.paths, todo)
        store.record_sizes(measured)
        sizes.update(measured)
    report = plan(store, older_than_days=older_than_days, cache_budget_bytes=cache_budget_bytes,
                  in_use=in_use, pinned=pinned, sizes=sizes)
    report.dry_run = dry_run
    if dry_run:
        return report.to_wire()
    doomed = [p for p in (store.unpublish(e["env_key"]) for e in report.envs) if p is not None]
    doomed += [t for p in report.packages for t in (store.trash(Path(x)) for x in p["paths"]) if t is not None]
    store.forget_sizes([e["prefix"] for e in report.envs] + [x for p in report.packages for x in p["paths"]])
    await asyncio.to_thread(delete_paths, doomed)
    log.info("gc freed %d bytes (%d envs, %d cached packages)", report.freed_bytes,
             len(report.envs), len(report.packages))
    return report.to_wire()


def _over_budget(entries: list[pkgcache.Entry], budget: int, last_used: dict[str, float], pinned: set[str],
                 sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Least recently linked cache entries to drop until the cache fits ``budget`` bytes.

    An entry is one package in both engines' layouts (``store/pkgcache.py``): rattler's
    ``pkgs/<dist>/``, micromamba's ``pkgs/file|http/…/<dist>/`` and its archive; micromamba's
    bookkeeping (``cache/``, ``urls.txt``) is never one. Its size is the sum of its paths' kept
    sizes, so files hardlinked between the two layouts count in each. Use is what builds recorded
    (``Store.touch_cache``); an entry no build recorded counts by its mtime. Entries a running build
    links from are never dropped.
    """
    listed = []
    for entry in entries:
        used = last_used.get(entry.dist) or entry.last_modified()
        if used:  # 0.0: every path of it is gone
            listed.append((used, entry, sum(sizes.get(str(p), 0) for p in entry.paths)))
    total = sum(size for _, _, size in listed)
    dropped = []
    for _, entry, size in sorted(listed, key=lambda e: e[0]):
        if total <= budget:
            break
        if entry.dist in pinned:
            continue
        dropped.append({"package": entry.dist, "path": str(entry.paths[0]), "paths": [str(p) for p in entry.paths],
                        "bytes": size})
        total -= size
    return dropped


def _tree_bytes(path: Path, *, only_unshared: bool) -> int:
    """Bytes under ``path``; with ``only_unshared``, only files whose deletion frees space (nlink 1)."""
    if path.is_file():
        st = path.stat()
        return st.st_size if not only_unshared or st.st_nlink == 1 else 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            if not only_unshared or st.st_nlink == 1:
                total += st.st_size
    return total


def delete_paths(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
