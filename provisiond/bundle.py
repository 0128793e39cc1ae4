"""``provisionctl bundle`` / ``unbundle``: exactly what an image needs to cold-start named envs.

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
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from provisiond import __version__
from provisiond.coldstart import MARKER, NAME_TARGET, NAMES_DIR, target_of_name
from provisiond.errors import BadRequestError, EnvNotFoundError
from provisiond.settings import Paths

__all__ = ["MANIFEST", "bundle", "unbundle"]

SCHEME = 1
MANIFEST = "bundle.json"
ROOTS = ("envs", "locks", "activation", "bin", "leases")
COLD_START = Path(__file__).parent / "shell" / "cold-start"
TAR_SUFFIXES = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz"}
# A name's files in the order they must appear: its "env" file (the one cold-start reads first) last.
NAME_FILES = ("activate.sh", "activate.json", NAME_TARGET)


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
    from provisiond.gc import lease_path, take_lease

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


def unbundle(source: Path, home: Path) -> dict[str, Any]:
    """Restore a bundle (tar or directory) into ``home``, which must be the home it was built in."""
    if not source.exists():
        raise BadRequestError(f"{source}: no such file or directory")
    manifest = _read_manifest(source)
    recorded = str(manifest["home"])
    if os.path.abspath(recorded) != os.path.abspath(home) and os.path.realpath(recorded) != os.path.realpath(home):
        raise BadRequestError(
            f"{source} was built for the store at {recorded}, not {home}: conda writes prefixes into "
            "installed files, so an env cannot move", hint=f"unbundle it with --home {recorded} (the same path "
            f"in the image), or bundle it again from a store built with PROVISIOND_HOME={home}")
    staging = home / "envs" / ".building" / f"unbundle-{os.getpid()}-{time.monotonic_ns()}"
    staging.mkdir(parents=True)
    try:
        _unpack(source, staging)
        _check_staged(source, staging, manifest)
        _install(staging, home, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.parent.rmdir()  # the daemon makes .building itself; an image has no use for it
        except OSError:
            pass
    return {"home": str(home), "names": manifest["names"]}


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
        yield from _walk(paths.prefix(key), f"envs/{key[:16]}")
        yield from _walk(paths.locks / f"{key}.json", f"locks/{key}.json")
        yield from _walk(paths.activation / key, f"activation/{key}")
    for name in manifest["names"]:
        directory = paths.activation / NAMES_DIR / name
        yield Entry(f"activation/{NAMES_DIR}/{name}", "dir", 0o755, now)
        for file in NAME_FILES:
            yield from _walk(directory / file, f"activation/{NAMES_DIR}/{name}/{file}")
    yield Entry("bin/cold-start", "file", 0o755, now, source=COLD_START)


def _walk(path: Path, rel: str) -> Iterator[Entry]:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        yield Entry(rel, "symlink", 0o777, st.st_mtime, link=os.readlink(path))
    elif stat.S_ISREG(st.st_mode):
        yield Entry(rel, "file", stat.S_IMODE(st.st_mode), st.st_mtime, source=path)
    elif stat.S_ISDIR(st.st_mode):
        yield Entry(rel, "dir", stat.S_IMODE(st.st_mode), st.st_mtime)
        for child in sorted(os.listdir(path)):
            yield from _walk(path / child, f"{rel}/{child}")
    else:
        raise BadRequestError(f"{path}: a special file (not a file, directory or symlink) cannot be bundled")


def _tar_mode(out: Path) -> str | None:
    return next((mode for suffix, mode in TAR_SUFFIXES.items() if out.name.endswith(suffix)), None)


class _TarWriter:
    """Hardlinks are written as regular files: the image has no package cache to link to."""

    def __init__(self, out: Path) -> None:
        self.out, self.tmp = out, out.with_name(f".{out.name}.{os.getpid()}.tmp")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tar = tarfile.open(self.tmp, _tar_mode(out) or "w", format=tarfile.PAX_FORMAT)

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


# -- what comes out ----------------------------------------------------------------------------

def _read_manifest(source: Path) -> dict[str, Any]:
    try:
        if source.is_dir():
            text = (source / MANIFEST).read_bytes()
        else:
            with tarfile.open(source) as tar:
                member = next((m for m in tar.getmembers() if PurePosixPath(m.name) == PurePosixPath(MANIFEST)), None)
                reader = tar.extractfile(member) if member is not None else None
                if reader is None:
                    raise FileNotFoundError(MANIFEST)
                text = reader.read()
        manifest = json.loads(text)
    except (OSError, ValueError, tarfile.TarError) as exc:
        raise BadRequestError(f"{source}: not a provisiond bundle ({type(exc).__name__}: {exc})",
                              hint="make one with: provisionctl bundle NAME -o FILE.tar") from None
    if not isinstance(manifest, dict) or manifest.get("scheme") != SCHEME or "home" not in manifest:
        raise BadRequestError(f"{source}: not a bundle this provisiond can read (scheme {manifest.get('scheme')!r})")
    return manifest


def _unpack(source: Path, staging: Path) -> None:
    """Copy or extract the bundle into ``staging`` (on the home's filesystem, for the renames)."""
    if source.is_dir():
        for root in ROOTS:
            if (source / root).is_dir():
                shutil.copytree(source / root, staging / root, symlinks=True)
        return
    with tarfile.open(source) as tar:
        members = tar.getmembers()
        strays = [m.name for m in members if PurePosixPath(m.name).parts[:1] not in ((), (MANIFEST,),
                                                                                       *((r,) for r in ROOTS))]
        if strays:
            raise BadRequestError(f"{source}: not a provisiond bundle (it holds {strays[0]!r})")
        # "tar": no absolute paths, nothing outside staging; unlike "data", symlinks in a prefix may be absolute.
        tar.extractall(staging, members=members, filter="tar")


def _check_staged(source: Path, staging: Path, manifest: dict[str, Any]) -> None:
    needed = [staging / "bin" / "cold-start"]
    for name, env in manifest["names"].items():
        key = env["env_key"]
        needed += [staging / "envs" / key[:16] / MARKER, staging / "locks" / f"{key}.json",
                   staging / "activation" / key / "env.json",
                   *(staging / "activation" / NAMES_DIR / name / file for file in NAME_FILES)]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        raise BadRequestError(f"{source}: incomplete bundle, no {missing[0].relative_to(staging)}",
                              hint="make it again with: provisionctl bundle NAME -o FILE.tar")


def _install(staging: Path, home: Path, manifest: dict[str, Any]) -> None:
    """Move staged files into place: envs, locks and env activation first, each name's "env" file last."""
    keys = sorted({env["env_key"] for env in manifest["names"].values()})
    for key in keys:
        _place_dir(staging / "envs" / key[:16], home / "envs" / key[:16], keep_if=MARKER)
        (home / "locks").mkdir(parents=True, exist_ok=True)
        os.replace(staging / "locks" / f"{key}.json", home / "locks" / f"{key}.json")
        _place_dir(staging / "activation" / key, home / "activation" / key, keep_if="env.json")
    (home / "bin").mkdir(exist_ok=True)
    os.replace(staging / "bin" / "cold-start", home / "bin" / "cold-start")
    (home / "leases").mkdir(exist_ok=True)
    for name in manifest["names"]:
        directory = home / "activation" / NAMES_DIR / name
        directory.mkdir(parents=True, exist_ok=True)
        for file in NAME_FILES:
            os.replace(staging / "activation" / NAMES_DIR / name / file, directory / file)
    (home / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _place_dir(staged: Path, final: Path, *, keep_if: str) -> None:
    """Rename ``staged`` to ``final``, unless a complete copy is there already (same env_key, same files)."""
    if (final / keep_if).exists():
        return
    if final.exists() or final.is_symlink():
        shutil.rmtree(final)  # an incomplete leftover
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged, final)
