"""Other tools' package caches (conda, mamba, micromamba, pixi): seed ours from them before a build.

``pkgs_dirs`` (settings, from ``.condarc`` or ``CONDA_PKGS_DIRS``) names caches that may already
hold a package a lock needs, extracted. Before a build, each such package is linked into our
cache (``seed``): its files hardlinked (copied across file systems, or when the kernel refuses a
link to another user's file), laid out as rattler's cache expects, so the engine neither downloads
nor extracts it. Their directories are only read: nothing is created, renamed or written in them,
and a file we link is never opened for writing (rattler links or copies out of the cache; a
package it must re-extract is removed by unlinking, which leaves the other name intact).

An entry is used only when it is complete and is the same package: conda and micromamba write
``info/repodata_record.json`` last, with the package's sha256 and md5; rattler (pixi) keeps the
sha256 in ``<dist>.lock`` beside the directory. A package whose hashes do not match is ignored.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provisiond.domain.lock import Package

log = logging.getLogger(__name__)

# rattler's cache entry lock: a u64 revision (big-endian) then the package's sha256 (32 bytes).
_REVISION = struct.pack(">Q", 1)


@dataclass
class Seeded:
    """What ``seed`` did: dists linked from another cache (with the cache), and dists nobody has."""

    linked: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def in_our_cache(pkgs: Path, package: Package) -> bool:
    """True when our cache holds ``package`` extracted, as rattler leaves it."""
    return os.path.isfile(os.path.join(pkgs, package.dist, "info", "index.json"))


def _hashes_of(entry: Path) -> tuple[str | None, str | None] | None:
    """(sha256, md5) of a complete cache entry of conda/micromamba or rattler; None if incomplete."""
    if not (entry / "info" / "index.json").is_file():
        return None
    try:
        record = json.loads((entry / "info" / "repodata_record.json").read_text(encoding="utf-8"))
        if isinstance(record, dict):
            return record.get("sha256") or None, record.get("md5") or None
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return None
    try:
        blob = entry.with_name(entry.name + ".lock").read_bytes()
    except OSError:
        return None
    return (blob[8:40].hex(), None) if len(blob) >= 40 else None


def _same(package: Package, hashes: tuple[str | None, str | None]) -> bool:
    sha256, md5 = hashes
    if package.sha256 and sha256:
        return package.sha256.lower() == sha256.lower()
    return bool(package.md5 and md5 and package.md5.lower() == md5.lower())


def find(dirs: Sequence[str], package: Package, listing: dict[str, set[str]] | None = None) -> Path | None:
    """The first complete entry of ``package`` in the caches ``dirs`` with the same hashes
    (``listing``: each dir's names, read once per build instead of a stat per package and dir)."""
    for d in dirs:
        if listing is not None and package.dist not in listing.get(d, ()):
            continue
        entry = Path(d) / package.dist
        hashes = _hashes_of(entry)
        if hashes is not None and _same(package, hashes):
            return entry
    return None


def _link_tree(source: Path, target: Path) -> None:
    """``target`` as a copy of ``source`` whose files are hardlinks where the kernel allows."""
    for root, dirs, files in os.walk(source):
        rel = os.path.relpath(root, source)
        out = target if rel == "." else target / rel
        out.mkdir(exist_ok=True)
        for name in dirs:
            if os.path.islink(os.path.join(root, name)):
                os.symlink(os.readlink(os.path.join(root, name)), out / name)
        for name in files:
            src = os.path.join(root, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), out / name)
                continue
            try:
                os.link(src, out / name)
            except OSError:  # another file system, or another user's file (protected_hardlinks)
                shutil.copy2(src, out / name)


def _seed_one(pkgs: Path, package: Package, entry: Path) -> bool:
    """Link ``entry`` into our cache under rattler's lock for the dist; False when it got there first."""
    assert package.sha256, "seed only packages with a sha256 (rattler's lock records it)"
    lock_path = pkgs / f"{package.dist}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # rattler (fs4) locks the same file while it fills the entry
        if (pkgs / package.dist).exists():
            return False
        scratch = pkgs / f".seed-{package.dist}-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            _link_tree(entry, scratch)
            os.rename(scratch, pkgs / package.dist)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _REVISION + bytes.fromhex(package.sha256), 0)
        return True
    finally:
        os.close(fd)


def seed(pkgs: Path, dirs: Sequence[str], packages: Sequence[Package], *, offline: bool = False) -> Seeded:
    """Link into ``pkgs`` every package of ``packages`` that it lacks and one of ``dirs`` holds.

    ``offline``: also list in ``missing`` the remote packages that neither our cache nor ``dirs``
    hold (an offline build cannot install them); otherwise a package no other cache has costs a
    set lookup, not a stat. Never raises for a foreign cache: an unreadable one is skipped.
    """
    result = Seeded()
    ours = str(pkgs.resolve()) if pkgs.exists() else str(pkgs)
    listing: dict[str, set[str]] = {}
    for d in dirs:
        if os.path.realpath(d) == ours:
            continue
        try:
            listing[d] = set(os.listdir(d))
        except OSError:  # absent, or not ours to read
            continue
    dirs = list(listing)
    for package in packages:
        if not offline and not any(package.dist in names for names in listing.values()):
            continue  # nobody else has it: the engine fetches it as usual
        if in_our_cache(pkgs, package):
            continue
        entry = find(dirs, package, listing) if package.sha256 and dirs else None
        if entry is not None:
            try:
                pkgs.mkdir(parents=True, exist_ok=True)
                if _seed_one(pkgs, package, entry):
                    result.linked[package.dist] = str(entry.parent)
                continue
            except OSError as exc:
                log.warning("could not link %s from %s: %s", package.dist, entry.parent, exc)
        if offline and not package.url.startswith("file:"):
            result.missing.append(package.dist)
    if result.linked:
        log.info("linked %d packages from other caches: %s", len(result.linked),
                 ", ".join(sorted(set(result.linked.values()))))
    return result
