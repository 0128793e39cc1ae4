"""``provisionctl unbundle``: restore a bundle (``bundle.py``) into the store it was built for.

A bundle may come from anywhere: every name, env_key, path and symlink is checked before anything
is written, and only inside the home; a bad bundle is a BadRequestError that leaves no trace.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from provisiond.config.layout import MARKER
from provisiond.config.layout import NAMES as NAMES_DIR
from provisiond.config.settings import Paths
from provisiond.domain.errors import BadRequestError
from provisiond.store.bundle import ENV_KEY, MANIFEST, MAX_SYMLINK_HOPS, NAME_FILES, ROOTS, SCHEME
from provisiond.store.names import name_activation_dir

__all__ = ["unbundle"]


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
    """Names are file names (the rule of ``names.name_activation_dir``), env_keys are 64 hex digits."""

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
