"""``provisionctl bundle``: exactly what an image needs to cold-start named envs (``unbundle.py`` restores it).

A bundle is a directory or a tar laid out relative to ``PROVISIOND_HOME``::

    bundle.json                  the manifest: the store path it was built for, its names and envs
    envs/<env_key[:16]>/         each env's prefix; hardlinks into the package cache become plain files
    locks/<env_key>.json         its lock
    activation/<env_key>/        its env-level activation
    activation/names/<name>/     each name's activation, last: its presence means "ready"
    bin/cold-start               the POSIX sh entrypoint
    leases/                      empty, for cold-start's leases

so ``tar -x -C $PROVISIOND_HOME`` (or a Dockerfile's ``COPY bundle/ /opt/provisiond/``) restores it.
Conda writes the prefix into installed files, so a bundle works only under the home it was built
in (contract §5): ``unbundle`` refuses any other. Bundling only reads the store, under a lease: the
daemon may be running. No aiohttp, ruamel or rattler.

A bundle leaves the machine: channel credentials (``user:password@``, ``/t/<token>/``) are stripped
from the URLs of its locks and of its prefixes' ``conda-meta`` records (the store keeps its own).
A bundle may come from anywhere: ``unbundle`` checks every name, env_key, path and symlink before
it writes anything, and writes only inside the home.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisiond import __version__
from provisiond.config.layout import MARKER, NAME_TARGET
from provisiond.config.layout import NAMES as NAMES_DIR
from provisiond.config.settings import Paths
from provisiond.domain.errors import BadRequestError, EnvNotFoundError
from provisiond.store.names import target_of_name
from provisiond.store.scrub import scrub_lock, scrub_prefix_file

__all__ = ["MANIFEST", "bundle"]

SCHEME = 1
MANIFEST = "bundle.json"
ROOTS = ("envs", "locks", "activation", "bin", "leases")
COLD_START = Path(__file__).parents[1] / "shell" / "cold-start"
TAR_SUFFIXES = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz"}
# A name's files in the order they must appear: its "env" file (the one cold-start reads first) last.
NAME_FILES = ("activate.sh", "activate.json", NAME_TARGET)
ENV_KEY = re.compile(r"[0-9a-f]{64}")
MAX_SYMLINK_HOPS = 40  # as the kernel's ELOOP limit


@dataclass(frozen=True, slots=True)
class Entry:
    """One path of a bundle, relative to the home: a directory, a file (on disk or given) or a symlink."""

    rel: str
    kind: str  # "dir", "file" or "symlink"
    mode: int
    mtime: float
    source: Path | None = None
    data: bytes | None = None
    link: str = ""


def bundle(paths: Paths, names: Sequence[str], out: Path) -> dict[str, Any]:
    """Write the bundle of ``names`` to ``out``: a .tar/.tar.gz/.tgz file, else a new (or empty) directory."""
    from provisiond.store.gc import lease_path, take_lease

    manifest = _manifest(paths, names)
    keys = sorted({env["env_key"] for env in manifest["names"].values()})
    for key in keys:
        take_lease(paths, key)  # no collection while we read
    try:
        writer = _TarWriter(out) if _tar_mode(out) else _DirWriter(out)
        files = size = 0
        try:
            for entry in _entries(paths, manifest, keys):
                size += writer.add(entry)
                files += entry.kind == "file"
        except BaseException:
            writer.abort()
            raise
        writer.commit()
    finally:
        for key in keys:
            lease_path(paths, key, os.getpid()).unlink(missing_ok=True)
    return {"output": str(out.resolve()), "home": manifest["home"], "names": manifest["names"],
            "files": files, "bytes": size}


# -- what goes in ------------------------------------------------------------------------------

def _manifest(paths: Paths, names: Sequence[str]) -> dict[str, Any]:
    found: dict[str, dict[str, str]] = {}
    for name in names:
        target = target_of_name(paths, name)
        if target is None:
            raise EnvNotFoundError(f"no env named {name!r} ready in the store {paths.home}",
                                   hint=f"build it first: provisionctl warm {name}")
        env_key, prefix = target
        if prefix != str(paths.prefix(env_key)) or not os.path.isfile(os.path.join(prefix, MARKER)):
            raise EnvNotFoundError(f"env {name!r}: its prefix {prefix} is not a published env of {paths.home}",
                                   hint=f"run: provisionctl warm {name}")
        found[name] = {"env_key": env_key, "prefix": prefix}
    return {"scheme": SCHEME, "home": str(paths.home), "provisiond": __version__, "names": found}


def _entries(paths: Paths, manifest: dict[str, Any], keys: list[str]) -> Iterator[Entry]:
    """Everything in extraction order: an interrupted ``tar -x`` never leaves a name pointing at half an env."""
    now = time.time()
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    yield Entry(MANIFEST, "file", 0o644, now, data=text.encode())
    for directory in (*ROOTS, f"activation/{NAMES_DIR}"):
        yield Entry(directory, "dir", 0o755, now)
    for key in keys:
        yield from _walk(paths.prefix(key), f"envs/{key[:16]}", scrub=scrub_prefix_file)
        yield from _walk(paths.locks / f"{key}.json", f"locks/{key}.json", scrub=scrub_lock)
        yield from _walk(paths.activation / key, f"activation/{key}")
    for name in manifest["names"]:
        directory = paths.activation / NAMES_DIR / name
        yield Entry(f"activation/{NAMES_DIR}/{name}", "dir", 0o755, now)
        for file in NAME_FILES:
            yield from _walk(directory / file, f"activation/{NAMES_DIR}/{name}/{file}")
    yield Entry("bin/cold-start", "file", 0o755, now, source=COLD_START)


# ``scrub(path, inner)`` returns a file's bundled content when it differs from the store's, else None;
# ``inner`` is the file's path below the directory given to ``_walk``.
Scrub = Callable[[Path, str], bytes | None]


def _walk(path: Path, rel: str, *, scrub: Scrub | None = None, inner: str = "") -> Iterator[Entry]:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        yield Entry(rel, "symlink", 0o777, st.st_mtime, link=os.readlink(path))
    elif stat.S_ISREG(st.st_mode):
        data = scrub(path, inner) if scrub is not None else None
        yield Entry(rel, "file", stat.S_IMODE(st.st_mode), st.st_mtime,
                    source=path if data is None else None, data=data)
    elif stat.S_ISDIR(st.st_mode):
        yield Entry(rel, "dir", stat.S_IMODE(st.st_mode), st.st_mtime)
        for child in sorted(os.listdir(path)):
            yield from _walk(path / child, f"{rel}/{child}", scrub=scrub,
                              inner=f"{inner}/{child}" if inner else child)
    else:
        raise BadRequestError(f"{path}: a special file (not a file, directory or symlink) cannot be bundled")


def _tar_mode(out: Path) -> str | None:
    return next((mode for suffix, mode in TAR_SUFFIXES.items() if out.name.endswith(suffix)), None)


class _TarWriter:
    """Hardlinks are written as regular files: the image has no package cache to link to."""

    def __init__(self, out: Path) -> None:
        self.out, self.tmp = out, out.with_name(f".{out.name}.{os.getpid()}.tmp")
        out.parent.mkdir(parents=True, exist_ok=True)
        # Closed by commit() or abort(): the writer outlives this call.
        self.tar = tarfile.open(self.tmp, _tar_mode(out) or "w", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]  # noqa: SIM115

    def add(self, entry: Entry) -> int:
        info = tarfile.TarInfo(entry.rel)
        info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = \
            entry.mode, int(entry.mtime), 0, 0, "", ""
        if entry.kind == "dir":
            info.type = tarfile.DIRTYPE
            self.tar.addfile(info)
        elif entry.kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, entry.link
            self.tar.addfile(info)
        elif entry.data is not None:
            info.size = len(entry.data)
            self.tar.addfile(info, _Bytes(entry.data))
        else:
            assert entry.source is not None
            with open(entry.source, "rb") as f:
                info.size = os.fstat(f.fileno()).st_size
                self.tar.addfile(info, f)
        return info.size

    def commit(self) -> None:
        self.tar.close()
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        self.tar.close()
        self.tmp.unlink(missing_ok=True)


class _DirWriter:
    """Copies, so hardlinks into the package cache become files of their own."""

    def __init__(self, out: Path) -> None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise BadRequestError(f"{out}: exists and is not an empty directory",
                                  hint="give a new directory, or FILE.tar")
        self.out, self.tmp = out, out.with_name(f".{out.name}.{os.getpid()}.tmp")
        self.tmp.mkdir(parents=True)

    def add(self, entry: Entry) -> int:
        dst = self.tmp / entry.rel
        if entry.kind == "dir":
            dst.mkdir(exist_ok=True)
            os.chmod(dst, entry.mode)
            return 0
        if entry.kind == "symlink":
            os.symlink(entry.link, dst)
            return 0
        if entry.data is not None:
            dst.write_bytes(entry.data)
        else:
            assert entry.source is not None
            shutil.copyfile(entry.source, dst)
        os.chmod(dst, entry.mode)
        os.utime(dst, (entry.mtime, entry.mtime))
        return dst.stat().st_size

    def commit(self) -> None:
        if self.out.exists():
            self.out.rmdir()  # empty, checked above
        os.rename(self.tmp, self.out)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class _Bytes:
    """The smallest file object ``TarFile.addfile`` reads from."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.pos + size
        chunk, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return chunk


