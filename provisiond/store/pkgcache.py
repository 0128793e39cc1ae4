"""The store's one package cache (``pkgs/``), as both engines lay it out.

rattler extracts a package into ``pkgs/<name>-<version>-<build>/`` (beside a ``.lock`` file).
micromamba ≥ 2.6 caches hierarchically, by URL: ``pkgs/file/<abs path>/<subdir>/<stem>/`` and
``pkgs/http/<host>[_<port>]/<path>/<subdir>/<stem>/`` (the archive beside it, a ``urls.txt`` per
folder), plus its bookkeeping: ``pkgs/cache/`` (repodata) and ``pkgs/urls.txt``. Neither engine
reads the other's entries, so before an install ``share`` hardlinks what one engine extracted into
the place the other looks (no byte is copied or downloaded twice), and ``entries`` gives gc every
package of both layouts, grouped by ``<name>-<version>-<build>``, and never the bookkeeping.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from provisiond.domain.lock import Package
from provisiond.domain.urls import strip_credentials

# micromamba's bookkeeping at the top of pkgs/ and its hierarchical roots (never packages themselves).
MICROMAMBA_ROOTS = ("file", "http", "https")
BOOKKEEPING = frozenset({"cache", "urls.txt", "urls"})
_ARCHIVES = (".conda", ".tar.bz2")


def stem(package: Package) -> str:
    """``name-version-build``: the file name without its archive suffix."""
    name = package.file_name
    for suffix in _ARCHIVES:
        name = name.removesuffix(suffix)
    return name


def rattler_entry(pkgs: Path, package: Package) -> Path:
    return pkgs / f"{package.name}-{package.version}-{package.build}"


def micromamba_dir(pkgs: Path, url: str) -> Path | None:
    """The folder micromamba ≥ 2.6 caches ``url``'s archive in (credentials are not part of it)."""
    parsed = urlparse(strip_credentials(url))
    path = unquote(parsed.path)
    if parsed.scheme == "file":
        return (pkgs / "file" / path.lstrip("/")).parent
    if parsed.scheme in ("http", "https") and parsed.hostname:
        host = parsed.hostname + (f"_{parsed.port}" if parsed.port else "")
        return (pkgs / "http" / host / path.lstrip("/")).parent
    return None


def micromamba_entry(pkgs: Path, package: Package) -> Path | None:
    folder = micromamba_dir(pkgs, package.url)
    return None if folder is None else folder / stem(package)


def _extracted(entry: Path | None, *, record: bool) -> bool:
    if entry is None:
        return False
    return (entry / "info" / ("repodata_record.json" if record else "index.json")).is_file()


def in_rattler_cache(pkgs: Path, package: Package) -> bool:
    return _extracted(rattler_entry(pkgs, package), record=False)


def in_micromamba_cache(pkgs: Path, package: Package) -> bool:
    """Extracted (with the record micromamba checks) or downloaded where micromamba looks."""
    entry = micromamba_entry(pkgs, package)
    if entry is None:
        return False
    return _extracted(entry, record=True) or (entry.parent / package.file_name).is_file() or \
        _extracted(pkgs / stem(package), record=True) or (pkgs / package.file_name).is_file()  # < 2.6 flat


def share(pkgs: Path, packages: Iterable[Package], engine: str) -> list[str]:
    """Make what the other engine extracted visible to ``engine`` (hardlinks); the dists linked."""
    linked = []
    for package in packages:
        if engine == "micromamba":
            target = micromamba_entry(pkgs, package)
            source = rattler_entry(pkgs, package)
            if target is None or in_micromamba_cache(pkgs, package) or not _extracted(source, record=False):
                continue
            _link_tree(source, target, record=package)
        else:
            target, found = rattler_entry(pkgs, package), micromamba_entry(pkgs, package)
            if in_rattler_cache(pkgs, package) or not _extracted(found, record=True) or found is None:
                continue
            _link_tree(found, target, record=None)
        linked.append(package.dist)
    return linked


def repodata_record(package: Package) -> dict[str, object]:
    """``info/repodata_record.json`` as micromamba writes it (it checks url, sha256 and size)."""
    record: dict[str, object] = {
        "name": package.name, "version": package.version, "build": package.build,
        "build_string": package.build, "build_number": package.build_number,
        "channel": (package.channel or package.url.rsplit("/", 2)[0]).rstrip("/"),
        "subdir": package.subdir, "fn": package.file_name, "url": package.url,
        "depends": list(package.depends), "constrains": list(package.constrains),
    }
    optional = {"sha256": package.sha256, "md5": package.md5, "size": package.size, "license": package.license,
                "noarch": package.noarch,
                "timestamp": package.timestamp // 1000 if package.timestamp else None}  # seconds, as 2.8.1
    record.update({k: v for k, v in optional.items() if v is not None})
    return record


def _link_tree(source: Path, target: Path, record: Package | None) -> None:
    """Hardlink ``source``'s files into a new ``target`` (a copy across file systems), atomically."""
    staging = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(source, staging, symlinks=True, copy_function=_link_or_copy)
        if record is not None:  # a fresh file, never through a hardlink into rattler's entry
            info = staging / "info" / "repodata_record.json"
            info.unlink(missing_ok=True)
            info.write_text(json.dumps(repodata_record(record), indent=4, sort_keys=True))
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # a racing build made it, or no space: the engine fetches


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(src, dst)


@dataclass
class Entry:
    """One package in the cache, in one or both layouts: every path gc removes together."""

    dist: str
    paths: list[Path] = field(default_factory=list)

    def last_modified(self) -> float:
        return max((p.lstat().st_mtime for p in self.paths if p.exists() or p.is_symlink()), default=0.0)


def entries(pkgs: Path) -> list[Entry]:
    """Every cached package of both layouts, grouped by ``name-version-build``; never bookkeeping
    (``cache/``, ``urls.txt``, lock files, partial links, micromamba's hierarchy folders)."""
    found: dict[str, Entry] = {}

    def add(dist: str, path: Path) -> None:
        found.setdefault(dist, Entry(dist)).paths.append(path)

    if not pkgs.is_dir():
        return []
    for path in pkgs.iterdir():
        name = path.name
        if name.startswith(".") or name in BOOKKEEPING or name in MICROMAMBA_ROOTS:
            continue
        if name.endswith(".lock"):
            if not (pkgs / name.removesuffix(".lock")).exists():
                path.unlink(missing_ok=True)  # rattler's lock of an entry already gone
            continue
        add(_dist_of(name), path)
        if (lock := pkgs / f"{name}.lock").exists():
            add(name, lock)
    for root in MICROMAMBA_ROOTS:
        for folder in _package_folders(pkgs / root):
            for path in folder.iterdir():
                name = path.name
                if name.startswith(".") or name in BOOKKEEPING:
                    continue
                if path.is_dir() and (path / "info").is_dir():
                    add(name, path)
                elif name.endswith(_ARCHIVES) and path.is_file():
                    add(_dist_of(name), path)
    return sorted(found.values(), key=lambda e: e.dist)


def _dist_of(file_name: str) -> str:
    for suffix in _ARCHIVES:
        if file_name.endswith(suffix):
            return file_name.removesuffix(suffix)
    return file_name


def _package_folders(root: Path) -> Iterator[Path]:
    """Folders of micromamba's hierarchy that hold packages (a ``urls.txt``, an archive or an entry)."""
    if not root.is_dir():
        return
    for directory, dirs, files in os.walk(root):
        here = Path(directory)
        holds = "urls.txt" in files or any(f.endswith(_ARCHIVES) for f in files) or \
            any((here / d / "info").is_dir() for d in dirs)
        if holds:
            yield here
            dirs[:] = [d for d in dirs if not (here / d / "info").is_dir()]  # never walk into a package


def scrub_credentials(pkgs: Path, packages: Iterable[Package]) -> int:
    """Rewrite what micromamba cached for ``packages`` without channel credentials: an @EXPLICIT
    install writes its URLs, token and all, into ``info/repodata_record.json`` and ``urls.txt``.
    A rewritten file is a new inode, so rattler's hardlinks of it never held the secret."""
    files: set[Path] = {pkgs / "urls.txt"}
    for package in packages:
        entry = micromamba_entry(pkgs, package)
        if entry is not None:
            files |= {entry / "info" / "repodata_record.json", entry.parent / "urls.txt"}
    return sum(scrub_file(path) for path in files)


def scrub_file(path: Path) -> bool:
    """Rewrite ``path`` without channel credentials (a new inode, by rename); False if it held none
    or is missing."""
    try:
        text = path.read_text(errors="surrogateescape")
    except (FileNotFoundError, NotADirectoryError):
        return False
    clean = strip_credentials(text)
    if clean == text:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(clean, errors="surrogateescape")
    os.replace(tmp, path)
    return True


def scrub_repodata_cache(pkgs: Path, secrets: Iterable[str]) -> int:
    """micromamba's repodata bookkeeping (``pkgs/cache/``) without the channel credentials it records
    from the channel URLs: ``*.state.json`` rewritten with clean URLs, a ``*.solv`` holding one removed
    (micromamba rebuilds it from the ``.json`` beside it). The number of files changed."""
    needles = [s.encode() for s in secrets if s]
    cache = pkgs / "cache"
    if not needles or not cache.is_dir():
        return 0
    changed = 0
    for path in cache.iterdir():
        if not path.is_file() or path.name.startswith("."):
            continue
        data = path.read_bytes()
        if not any(n in data for n in needles):
            continue
        if path.suffix == ".solv":
            path.unlink(missing_ok=True)
        else:
            clean = strip_credentials(data.decode(errors="surrogateescape"))
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(clean, errors="surrogateescape")
            os.replace(tmp, path)
        changed += 1
    return changed
