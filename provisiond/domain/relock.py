"""Incremental re-lock: keep the previous lock when it still satisfies the edited file (pure).

After an edit, the previous lock (the env's, or a project's ``conda-lock.yml``) is asked first:

- **keep**: every dependency of the new file is matched by a package of the lock (name, version,
  build and any bracket field), every virtual-package requirement and constraint of the kept
  packages holds for this machine's virtual packages, and the channels and their priority are
  the lock's. The answer is the lock pruned to the closure of the new roots: removing a
  dependency drops what only it pulled in. No solver runs.
- **extend**: the same, except that some dependencies name packages the lock does not have
  (``new``). The caller solves with the lock's packages preferred (rattler's
  ``locked_packages``), first in a pool of the locked records plus every record those names reach.
- **solve**: anything else (a pin the locked version breaks, other channels or priority, a
  ``channel::pkg`` dependency, a pip section, a virtual package this machine lacks): a full solve.

Why the kept set is a valid solution: the previous lock was one (every ``depends`` of each of
its packages met inside it, every ``constrains`` respected), pruning to a dependency closure
removes only packages nothing kept depends on, so each kept ``depends`` is still met, and a
``constrains`` only restricts packages that are present. What remains to check is what the lock
cannot know: the new roots, and this machine's virtual packages. The result is a function of
the previous lock and the new file only, so it is deterministic (docs/store.md, "Re-locking").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import rattler

from provisiond.domain.lock import Lock, Package

__all__ = ["Relock", "closure", "dependency_name", "relock"]

_NAME = re.compile(r"^\s*(?:[^\s:]+::)?([A-Za-z0-9_.\-]+)")


@dataclass(frozen=True, slots=True)
class Relock:
    """The outcome: ``kind`` is ``keep`` (``lock`` is the answer), ``extend`` (``new`` names to add
    with the lock preferred) or ``solve``; ``reason`` says why, for the log."""

    kind: str
    reason: str
    lock: Lock | None = None
    new: tuple[str, ...] = ()  # names the lock does not have: opened in the solve
    prefer: bool = True  # whether a solve may prefer the lock's packages (not from other channels)


def dependency_name(dep: str) -> str:
    """The package name a dependency or MatchSpec string names, lower-case (``conda-forge::NumPy>=1`` -> numpy)."""
    m = _NAME.match(dep)
    return m.group(1).lower() if m else dep.strip().lower()


def relock(previous: Lock, dependencies: Sequence[str], *, platform: str, channels: Sequence[str],
           channel_priority: str, virtual_packages: Sequence[str]) -> Relock:
    """Decide how the edited file's ``dependencies`` relate to ``previous`` (see the module doc)."""
    if previous.platform != platform:
        return Relock("solve", f"the lock is for {previous.platform}, not {platform}")
    if previous.pip:
        return Relock("solve", "the lock has pip packages")
    if _clean(previous.channels) != _clean(channels):
        return Relock("solve", "the channels changed", prefer=False)
    if previous.meta.get("channel_priority", "strict") != channel_priority:
        return Relock("solve", "the channel priority changed", prefer=False)
    by_name = {p.name: p for p in previous.packages}
    virtual = _virtual_records(tuple(virtual_packages))
    new: list[str] = []
    roots: list[str] = []
    for dep in sorted(set(dependencies)):
        if "::" in dep:
            return Relock("solve", f"{dep} names its channel")
        name = dependency_name(dep)
        if name.startswith("__"):
            if not _virtual_ok(dep, name, virtual):
                return Relock("solve", f"{dep} is not met by this machine")
            continue
        package = by_name.get(name)
        if package is None:
            new.append(name)
            continue
        if not _spec(dep).matches(_record(package)):
            # Opening only this name in a restricted pool was measured slower than a whole solve
            # (a pinned root reaches most of the channel, and the pool often has no answer).
            return Relock("solve", f"{dep} is not met by the locked {package.dist}")
        roots.append(name)
    kept = closure(by_name, roots)
    for p in (by_name[n] for n in kept):
        for dep in (*p.depends, *p.constrains):
            name = dependency_name(dep)
            if name.startswith("__") and not _virtual_ok(dep, name, virtual, constraint=dep in p.constrains):
                return Relock("solve", f"{p.dist} needs {dep}, which this machine does not meet")
    if new:
        return Relock("extend", f"new: {', '.join(new)}", new=tuple(new))
    packages = tuple(by_name[n] for n in sorted(kept))
    removed = len(previous.packages) - len(packages)
    lock = replace(previous, packages=packages, meta={**previous.meta, "relock": "kept"})
    return Relock("keep", f"the lock satisfies the file ({removed} unreferenced package(s) pruned)", lock=lock)


def closure(by_name: dict[str, Package], roots: Iterable[str]) -> set[str]:
    """The names reachable from ``roots`` through ``depends`` (virtual packages left out)."""
    seen: set[str] = set()
    stack = [r for r in roots if r in by_name]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for dep in by_name[name].depends:
            child = dependency_name(dep)
            if child in by_name and child not in seen:
                stack.append(child)
    return seen


def _clean(channels: Iterable[str]) -> list[str]:
    from provisiond.domain.urls import strip_credentials

    return [strip_credentials(c).rstrip("/") for c in channels]


def _virtual_ok(dep: str, name: str, virtual: dict[str, rattler.PackageRecord], *, constraint: bool = False) -> bool:
    """A requirement on a virtual package holds: it is present and matches (a constraint: absent, or matches)."""
    record = virtual.get(name)
    if record is None:
        return constraint
    return _spec(dep).matches(record)


@functools.lru_cache(maxsize=8)
def _virtual_records(virtual_packages: tuple[str, ...]) -> dict[str, rattler.PackageRecord]:
    found = {}
    for text in virtual_packages:
        name, version, build = (text.split("=", 2) + ["", ""])[:3]
        found[name.lower()] = rattler.PackageRecord(name=name, version=version or "0",
                                                    build=rattler.BuildString(build or "0"), build_number=0,
                                                    subdir="noarch")
    return found


@functools.lru_cache(maxsize=16384)
def _spec(dep: str) -> rattler.MatchSpec:
    return rattler.MatchSpec(dep, strict=False)


@functools.lru_cache(maxsize=16384)
def _record(p: Package) -> rattler.PackageRecord:
    """The fields a MatchSpec can ask about (name, version, build, number, subdir, hashes, license)."""
    return rattler.PackageRecord(name=p.name, version=p.version, build=rattler.BuildString(p.build),
                                 build_number=p.build_number, subdir=p.subdir,
                                 sha256=bytes.fromhex(p.sha256) if p.sha256 else None,
                                 md5=bytes.fromhex(p.md5) if p.md5 else None, license=p.license)
