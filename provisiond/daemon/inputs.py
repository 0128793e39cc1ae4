"""What a build depends on beyond the environment file: local pip projects by content, the files
beside it that a change rebuilds from, and a lockfile's trust fingerprint (all of a pixi.lock's
environments)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from provisiond.daemon import trust
from provisiond.domain.lock import Lock
from provisiond.domain.lockfiles import trusted_lock
from provisiond.domain.projectlock import LOCK_FILE
from provisiond.domain.spec import EnvSpec


def local_contents(spec: EnvSpec) -> tuple[dict[str, str], tuple[str, ...]]:
    """Local project dir -> content digest (``trust.project_content``), and the files they cover.

    Reads files: call it in a thread.
    """
    contents: dict[str, str] = {}
    files: list[str] = []
    for directory, editable in trust.local_projects(spec).items():
        contents[directory], covered = trust.project_content(directory, editable)
        files += covered
    return contents, tuple(files)


def referenced_files(spec: EnvSpec) -> set[str]:
    """Files next to the spec that its pip section names with -r/-c, and a project's lock (a change rebuilds)."""
    found = {LOCK_FILE}  # a project's lock: a pulled one is installed (or blocked) at once
    for line in spec.pip:
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("-r", "-c", "--requirement", "--constraint"):
            found.add(Path(parts[1]).name)
    return found


def with_contents(lock: Lock, contents: Mapping[str, str]) -> Lock:
    """``lock`` with each local-project pip pin carrying its directory's content digest (part of env_key)."""
    if not contents:
        return lock
    pins = []
    for pin in lock.pip:
        parts = urlsplit(pin.url)
        path = unquote(parts.path) if parts.scheme == "file" and not parts.fragment else None
        digest = contents.get(path) if path else None
        pins.append(dataclasses.replace(pin, content=digest) if digest and not pin.sha256 else pin)
    return dataclasses.replace(lock, pip=tuple(pins))


def lock_fingerprint(path: Path, platform: str, lock: Lock) -> trust.Fingerprint:
    """A lockfile's trust fingerprint: a pixi.lock's covers all its environments (``trusted_lock``)."""
    return trust.lock_fingerprint(trusted_lock(path, platform, lock), str(path))
