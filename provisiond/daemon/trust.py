"""The trust gate: what in a project can run code or change the shell, and how it is fingerprinted.

A project is built, watched and activated only while its fingerprint is allowed (docs/activation.md,
"Trust"). The fingerprint covers what can run code or reach the shell, not the whole file:

- ``channels``: packages (their link and activate.d scripts) come from them;
- ``pip``: every line, options included (``-e .`` runs the directory's build backend, an
  ``--index-url`` names a new source);
- the files the pip section reaches: ``-r``/``-c`` files by content, and for local paths
  (``-e .``, ``./pkg``, ``./dist/x.whl``) the build files uv runs (``pyproject.toml``,
  ``setup.py``, ``setup.cfg``) or the archive itself;
- ``variables``: names and values, exported in the shell;
- ``.env``: the variable *names* only (a project's): a new name changes the shell, a rotated
  secret does not, and no secret's hash is stored.

A pure dependency edit (a new package, a changed pin) from the same channels keeps the
fingerprint: its packages come from channels the user already trusted, and saving your own file
must rebuild on save. This mirrors DESIGN.md's "Trust before anything runs".
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from provisiond.domain.lock import Lock
from provisiond.domain.spec import EnvSpec
from provisiond.domain.urls import mask
from provisiond.engines.pip import absolute_paths, included_files
from provisiond.shell.dotenv import parse_dotenv

__all__ = ["Fingerprint", "blocked_message", "fingerprint", "lock_fingerprint", "under_prefix", "what_changed"]

SCHEME = 1
_BUILD_FILES = ("pyproject.toml", "setup.py", "setup.cfg")
_EDITABLE = ("-e", "--editable")
# Names for what changed, as the hook's one line says them.
_PART_NAMES = {"channels": "channels", "pip": "pip: section", "variables": "variables:", "dotenv": ".env names"}


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What of a project can run code, hashed part by part (so a block can say what changed)."""

    path: str  # the project directory's real path, or the environment file's for a named env
    parts: Mapping[str, str]

    @property
    def digest(self) -> str:
        payload = json.dumps({"scheme": SCHEME, "path": self.path, "parts": dict(self.parts)},
                             sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


def fingerprint(spec: EnvSpec, path: str, dotenv: Path | None = None) -> Fingerprint:
    """The fingerprint of ``spec`` (parsed from a file) for the allowance keyed by ``path``.

    ``dotenv`` is a project's ``.env``; named envs have none.
    """
    parts = {
        "channels": _hash([list(spec.channels), spec.nodefaults]),
        "pip": _hash(list(spec.pip)),
        "variables": _hash([list(kv) for kv in spec.variables]),
    }
    for file in sorted(_reached_files(spec)):
        parts[f"file:{file}"] = _file_hash(file)
    if dotenv is not None:
        parts["dotenv"] = _hash(sorted(_dotenv_names(dotenv)))
    return Fingerprint(path=path, parts=parts)


def lock_fingerprint(lock: Lock, path: str) -> Fingerprint:
    """A lockfile's fingerprint (``create -f conda-lock.yml``): where its packages come from, and
    its pip entries; a package moved to another version on the same channels keeps it."""
    channels = sorted({mask(p.url).rsplit("/", 2)[0] for p in lock.packages})
    pip = sorted(f"{p.name} {mask(p.url)} {p.editable or ''}" for p in lock.pip) + list(lock.pip_options)
    return Fingerprint(path=path, parts={"channels": _hash(channels), "pip": _hash(pip)})


def what_changed(allowed: Mapping[str, str], current: Mapping[str, str], base: str, spec_name: str) -> str:
    """Why an allowance no longer holds, in words: ``its environment.yml changed: channels`` and/or
    ``requirements.txt changed`` (files relative to ``base``, the project dir)."""
    parts, files = [], []
    for key in sorted(set(allowed) | set(current)):
        if allowed.get(key) == current.get(key):
            continue
        if key.startswith("file:"):
            file = key[5:]
            files.append(os.path.relpath(file, base) if file.startswith(base + os.sep) else file)
        else:
            parts.append(_PART_NAMES.get(key, key))
    said = [f"its {spec_name} changed: {', '.join(parts)}"] if parts else []
    if files:
        said.append(f"{', '.join(files)} changed")
    return "; ".join(said) or f"its {spec_name} changed"


def blocked_message(directory: str, reason: str) -> str:
    """The one line the hook prints for a blocked project (also the API's error message)."""
    return f"provisiond: {directory} is blocked ({reason}); run 'provisionctl allow' to trust it"


def under_prefix(path: str, prefixes: Iterable[str]) -> bool:
    """True when ``path`` is one of ``prefixes`` or inside one (direnv's ``whitelist.prefix``)."""
    for prefix in filter(None, prefixes):
        prefix = prefix.rstrip("/")
        if not prefix or path == prefix or path.startswith(prefix + "/"):  # "/" trusts everything
            return True
    return False


def _reached_files(spec: EnvSpec) -> set[str]:
    """Local files the pip section makes uv read or run: included files, build files, archives."""
    base = Path(spec.project_dir) if spec.project_dir else None
    includes = set(included_files(spec))
    found = {str(p) for p in includes}
    lines = [(absolute_paths(line, base), base) for line in spec.pip]
    for include in includes:
        try:
            lines += [(n.strip(), include.parent) for n in include.read_text(errors="replace").splitlines()]
        except OSError:
            continue
    for line, here in lines:
        local = _local_path(line, here)
        if local is None:
            continue
        if local.is_dir():
            found.update(str(local / name) for name in _BUILD_FILES if (local / name).is_file())
        else:
            found.add(str(local))
    return found


def _local_path(line: str, here: Path | None) -> Path | None:
    """The local path a pip line installs from (``-e .``, ``./pkg``, ``file:///x``), or None."""
    words = line.split()
    if not words or (words[0].startswith("-") and words[0] not in _EDITABLE):
        return None
    target = words[1] if words[0] in _EDITABLE and len(words) > 1 else words[0]
    if target.startswith("file://"):
        target = target[len("file://"):]
    elif "://" in target or "@" in target:
        return None  # a URL or `name @ url`: fetched, so covered by the pip line itself
    if not target.startswith((".", "/", "~")) and "/" not in target:
        return None  # a requirement name
    path = Path(os.path.expanduser(target.split("#", 1)[0].split("[", 1)[0]))
    if not path.is_absolute() and here is not None:
        path = here / path
    return Path(os.path.normpath(path))


def _dotenv_names(file: Path) -> list[str]:
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    pairs, _problems = parse_dotenv(text)
    return [name for name, _value in pairs]


def _file_hash(file: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return "missing"
    return digest.hexdigest()


def _hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
