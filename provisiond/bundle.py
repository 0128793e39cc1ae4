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

A bundle leaves the machine: channel credentials (``user:password@``, ``/t/<token>/``) are stripped
from the URLs of its locks and of its prefixes' ``conda-meta`` records (the store keeps its own).
A bundle may come from anywhere: ``unbundle`` checks every name, env_key, path and symlink before
it writes anything, and writes only inside the home.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from provisiond import __version__
from provisiond.coldstart import target_of_name
from provisiond.layout import MARKER, NAME_TARGET
from provisiond.layout import NAMES as NAMES_DIR
from provisiond.errors import BadRequestError, EnvNotFoundError
from provisiond.settings import Paths
from provisiond.urls import strip_credentials

__all__ = ["MANIFEST", "bundle", "unbundle"]

SCHEME = 1
MANIFEST = "bundle.json"
ROOTS = ("envs", "locks", "activation", "bin", "leases")
COLD_START = Path(__file__).parent / "shell" / "cold-start"
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
    """Restore a bundle (tar or directory) into ``home``, which must be the home it was built in.

    Everything is checked before anything is written: a bad bundle is a BadRequestError and leaves
    no trace (not even ``home``).
    """
    if not source.exists():
        raise BadRequestError(f"{source}: no such file or directory")
    tar = None if source.is_dir() else _open_tar(source)
    try:
        manifest = _read_manifest(source, tar)
        recorded = str(manifest["home"])
        if os.path.abspath(recorded) != os.path.abspath(home) and os.path.realpath(recorded) != os.path.realpath(home):
            raise BadRequestError(
                f"{source} was built for the store at {recorded}, not {home}: conda writes prefixes into "
                "installed files, so an env cannot move", hint=f"unbundle it with --home {recorded} (the same "
                f"path in the image), or bundle it again from a store built with PROVISIOND_HOME={home}")
        _check_manifest(source, manifest, home)
        members = _dir_members(source) if tar is None else _tar_members(source, tar)
        _check_members(source, members, manifest)
        staging = home / "envs" / ".building" / f"unbundle-{os.getpid()}-{time.monotonic_ns()}"
        _check_destinations(home, [staging, *_destinations(home, manifest)])
        staging.mkdir(parents=True)
        try:
            _unpack(source, tar, staging)
            _check_staged(source, staging, manifest)
            _install(staging, home, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            try:
                staging.parent.rmdir()  # the daemon makes .building itself; an image has no use for it
            except OSError:
                pass
    finally:
        if tar is not None:
            tar.close()
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
        yield from _walk(paths.prefix(key), f"envs/{key[:16]}", scrub=scrub_prefix_file)
        yield from _walk(paths.locks / f"{key}.json", f"locks/{key}.json", scrub=_scrub_lock)
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


# -- channel credentials stay in the store ----------------------------------------------------

def _scrub_lock(path: Path, inner: str) -> bytes | None:
    """The lock with credentials stripped from every URL in it, in the lock's canonical JSON.

    Its ``env_key`` field stays the store's: the key names the prefix (and the prefix is written
    into installed files), even though the stripped URLs no longer hash to it.
    """
    return _scrub_json(path.read_bytes(), lambda clean: json.dumps(
        clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def scrub_prefix_file(path: Path, inner: str) -> bytes | None:
    """The files of a prefix that record channel URLs: conda-meta's records and history, pip's direct_url.json."""
    parts = PurePosixPath(inner).parts
    record = len(parts) == 2 and parts[0] == "conda-meta" and parts[1].endswith(".json")
    direct_url = len(parts) >= 2 and parts[-1] == "direct_url.json" and parts[-2].endswith(".dist-info")
    is_json = record or direct_url
    if not is_json and parts != ("conda-meta", "history"):
        return None
    raw = path.read_bytes()
    if b"://" not in raw and b":\\/\\/" not in raw:  # JSON may write "/" as "\/"
        return None
    if is_json:
        return _scrub_json(raw, lambda clean: json.dumps(clean, indent=2, ensure_ascii=False) + "\n")
    return _scrub_text(raw)


def _scrub_json(raw: bytes, dump: Callable[[Any], str]) -> bytes | None:
    """Every string of a JSON document stripped, written back with ``dump`` if anything changed."""
    try:
        data = json.loads(raw)
    except ValueError:
        return _scrub_text(raw)  # not ours to judge: strip it as text
    clean = _strip_json(data)
    return None if clean == data else dump(clean).encode()


def _scrub_text(raw: bytes) -> bytes | None:
    text = raw.decode("utf-8", "surrogateescape")
    clean = strip_credentials(text)
    return None if clean == text else clean.encode("utf-8", "surrogateescape")


def _strip_json(value: Any) -> Any:
    if isinstance(value, str):
        return strip_credentials(value)
    if isinstance(value, list):
        return [_strip_json(v) for v in value]
    if isinstance(value, dict):
        return {strip_credentials(k): _strip_json(v) for k, v in value.items()}
    return value


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

NOT_A_BUNDLE_HINT = "make one with: provisionctl bundle NAME -o FILE.tar"
# What the top of a bundle must be, when it is there.
ROOT_KINDS = {".": "dir", MANIFEST: "file", **{root: "dir" for root in ROOTS}}


@dataclass(frozen=True, slots=True)
class Member:
    """One path of a bundle being read, relative to its root: a "dir", "file", "symlink" or something else."""

    rel: str
    kind: str
    link: str = ""


def _open_tar(source: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(source)
    except (OSError, tarfile.TarError) as exc:
        raise BadRequestError(f"{source}: not a provisiond bundle ({type(exc).__name__}: {exc})",
                              hint=NOT_A_BUNDLE_HINT) from None


def _read_manifest(source: Path, tar: tarfile.TarFile | None) -> dict[str, Any]:
    try:
        if tar is None:
            if not (source / MANIFEST).is_file() or (source / MANIFEST).is_symlink():
                raise FileNotFoundError(MANIFEST)
            text = (source / MANIFEST).read_bytes()
        else:
            member = next((m for m in tar.getmembers() if PurePosixPath(m.name) == PurePosixPath(MANIFEST)), None)
            reader = tar.extractfile(member) if member is not None and member.isreg() else None
            if reader is None:
                raise FileNotFoundError(MANIFEST)
            text = reader.read()
        manifest = json.loads(text)
    except (OSError, ValueError, tarfile.TarError) as exc:
        raise BadRequestError(f"{source}: not a provisiond bundle ({type(exc).__name__}: {exc})",
                              hint=NOT_A_BUNDLE_HINT) from None
    if not isinstance(manifest, dict) or manifest.get("scheme") != SCHEME or "home" not in manifest:
        scheme = manifest.get("scheme") if isinstance(manifest, dict) else None
        raise BadRequestError(f"{source}: not a bundle this provisiond can read (scheme {scheme!r})")
    return manifest


def _check_manifest(source: Path, manifest: dict[str, Any], home: Path) -> None:
    """Names are file names (the rule of ``activation.name_activation_dir``), env_keys are 64 hex digits."""
    from provisiond.activation import name_activation_dir

    names = manifest.get("names")
    if not isinstance(names, dict):
        raise BadRequestError(f"{source}: not a provisiond bundle (its manifest has no names)", hint=NOT_A_BUNDLE_HINT)
    paths = Paths(home=home, socket=home, state=home)  # only its activation dir is used
    for name, env in names.items():
        directory = name_activation_dir(paths, name)
        if directory is None or directory.parent != paths.activation / NAMES_DIR:
            raise BadRequestError(f"{source}: refusing the env name {name!r}: not a file name",
                                  hint="a bundle made by provisionctl bundle names only envs of a store")
        key = env.get("env_key") if isinstance(env, dict) else None
        if not isinstance(key, str) or not ENV_KEY.fullmatch(key):
            raise BadRequestError(f"{source}: refusing env {name!r}: its env_key {key!r} is not 64 hex digits",
                                  hint="a bundle made by provisionctl bundle names only envs of a store")
        prefix = os.path.normpath(os.path.join(str(manifest["home"]), "envs", key[:16]))
        if not isinstance(env.get("prefix"), str) or os.path.normpath(env["prefix"]) != prefix:
            raise BadRequestError(f"{source}: refusing env {name!r}: its prefix {env.get('prefix')!r} is not {prefix}")


def _tar_members(source: Path, tar: tarfile.TarFile) -> list[Member]:
    members = []
    for m in tar.getmembers():
        kind = "dir" if m.isdir() else "file" if m.isreg() else "symlink" if m.issym() else \
            "hardlink" if m.islnk() else "special file"
        members.append(Member(_member_path(source, m.name), kind, m.linkname if m.issym() else ""))
    return members


def _dir_members(source: Path) -> list[Member]:
    """A directory bundle as tar members, never following a symlink; only what ``_unpack`` copies."""
    def walk(path: Path, rel: str) -> Iterator[Member]:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            yield Member(rel, "symlink", os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            yield Member(rel, "file")
        elif stat.S_ISDIR(st.st_mode):
            yield Member(rel, "dir")
            for child in sorted(os.listdir(path)):
                yield from walk(path / child, f"{rel}/{child}")
        else:
            yield Member(rel, "special file")

    members = [Member(MANIFEST, "file")]  # _read_manifest checked it
    for root in ROOTS:
        if os.path.lexists(source / root):
            members += walk(source / root, root)
    return members


def _member_path(source: Path, name: str) -> str:
    """A member's path, normalized; refused if absolute, with "..", or outside the bundle's roots."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\0" in name:
        raise BadRequestError(f"{source}: refusing a bundle that writes outside its root ({name!r})",
                              hint=NOT_A_BUNDLE_HINT)
    if path.parts not in ((), (MANIFEST,)) and path.parts[0] not in ROOTS:
        raise BadRequestError(f"{source}: not a provisiond bundle (it holds {name!r})", hint=NOT_A_BUNDLE_HINT)
    return str(path)


def _check_members(source: Path, members: list[Member], manifest: dict[str, Any]) -> None:
    """Only files, directories and symlinks; symlinks only inside a prefix and resolving inside it;
    no path through a symlink; every file ``_install`` moves present."""
    prefixes = {f"envs/{env['env_key'][:16]}" for env in manifest["names"].values()}
    links = {m.rel: m.link for m in members if m.kind == "symlink"}
    kinds: dict[str, str] = {}
    for m in members:
        if m.kind not in ("dir", "file", "symlink"):
            raise BadRequestError(f"{source}: refusing {m.rel!r}: a {m.kind} (a bundle holds only files, "
                                  "directories and symlinks inside an env)", hint=NOT_A_BUNDLE_HINT)
        if m.rel in kinds and (m.kind, kinds[m.rel]) != ("dir", "dir"):
            raise BadRequestError(f"{source}: refusing {m.rel!r}: it is in the bundle twice", hint=NOT_A_BUNDLE_HINT)
        kinds[m.rel] = m.kind
        if m.kind != ROOT_KINDS.get(m.rel, m.kind):
            raise BadRequestError(f"{source}: refusing {m.rel!r}: a {m.kind}, not a {ROOT_KINDS[m.rel]}",
                                  hint=NOT_A_BUNDLE_HINT)
        through = next((str(p) for p in PurePosixPath(m.rel).parents if str(p) in links), None)
        if through is not None:
            raise BadRequestError(f"{source}: refusing {m.rel!r}: its path goes through the symlink {through!r}",
                                  hint=NOT_A_BUNDLE_HINT)
        if m.kind == "symlink":
            prefix = "/".join(PurePosixPath(m.rel).parts[:2])
            if prefix not in prefixes or m.rel == prefix:
                raise BadRequestError(f"{source}: refusing the symlink {m.rel!r}: symlinks belong only inside "
                                      "an env's prefix", hint=NOT_A_BUNDLE_HINT)
            target = _resolve(m.rel, links, os.path.normpath(str(manifest["home"]))) if m.link else None
            if target is None or (target != prefix and not target.startswith(prefix + "/")):
                raise BadRequestError(f"{source}: refusing the symlink {m.rel!r} -> {m.link!r}: it points outside "
                                      f"its env ({prefix})", hint=NOT_A_BUNDLE_HINT)
    needed = ["bin/cold-start"]
    for name, env in manifest["names"].items():
        key = env["env_key"]
        needed += [f"envs/{key[:16]}/{MARKER}", f"locks/{key}.json", f"activation/{key}/env.json",
                   *(f"activation/{NAMES_DIR}/{name}/{file}" for file in NAME_FILES)]
    missing = next((rel for rel in needed if kinds.get(rel) != "file"), None)
    if missing is not None:
        raise BadRequestError(f"{source}: incomplete bundle, no {missing}",
                              hint="make it again with: provisionctl bundle NAME -o FILE.tar")


def _resolve(rel: str, links: dict[str, str], home: str) -> str | None:
    """Where ``rel`` leads once unbundled, following the bundle's symlinks as the kernel would;
    relative to the bundle's root, or None when it leaves the root (or loops).

    An absolute target counts as the path under ``home`` it names (the bundle's home is its root).
    """
    pending = list(reversed(PurePosixPath(rel).parts))
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        resolved.append(part)
        target = links.get("/".join(resolved))
        if target is None:
            continue
        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            return None
        resolved.pop()
        if posixpath.isabs(target):
            target = posixpath.normpath(target)
            if target != home and not target.startswith(home.rstrip("/") + "/"):
                return None
            resolved, target = [], posixpath.relpath(target, home)
        pending += reversed(PurePosixPath(target).parts)
    return "/".join(resolved)


def _destinations(home: Path, manifest: dict[str, Any]) -> list[Path]:
    """Every path ``_install`` writes or replaces."""
    out = [home / "bin" / "cold-start", home / "leases", home / MANIFEST]
    for env in manifest["names"].values():
        key = env["env_key"]
        out += [home / "envs" / key[:16], home / "locks" / f"{key}.json", home / "activation" / key]
    for name in manifest["names"]:
        out += [home / "activation" / NAMES_DIR / name / file for file in NAME_FILES]
    return out


def _check_destinations(home: Path, destinations: list[Path]) -> None:
    """Nothing may resolve outside ``home``: not a name, and not a symlink already in the store."""
    root = os.path.realpath(home)
    for path in destinations:
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root:
            raise BadRequestError(f"refusing to unbundle into {home}: {path} resolves to {real}, outside it",
                                  hint=f"remove the symlink on the way to {path}")


def _unpack(source: Path, tar: tarfile.TarFile | None, staging: Path) -> None:
    """Copy or extract the checked bundle into ``staging`` (on the home's filesystem, for the renames)."""
    if tar is None:
        for root in ROOTS:
            if (source / root).is_dir() and not (source / root).is_symlink():
                shutil.copytree(source / root, staging / root, symlinks=True)
        return
    # Members and symlinks are checked (_check_members): absolute symlinks inside a prefix are fine, so
    # not "data"; "tar" still refuses any write that would land outside staging.
    tar.extractall(staging, filter="tar")


def _check_staged(source: Path, staging: Path, manifest: dict[str, Any]) -> None:
    needed = [staging / "bin" / "cold-start"]
    for name, env in manifest["names"].items():
        key = env["env_key"]
        needed += [staging / "envs" / key[:16] / MARKER, staging / "locks" / f"{key}.json",
                   staging / "activation" / key / "env.json",
                   *(staging / "activation" / NAMES_DIR / name / file for file in NAME_FILES)]
    missing = [p for p in needed if not p.is_file() or p.is_symlink()]
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
    if final.is_symlink():
        final.unlink()
    elif final.exists():
        shutil.rmtree(final)  # an incomplete leftover
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged, final)
