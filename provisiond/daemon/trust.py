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
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import rattler

from provisiond.domain.lock import Lock
from provisiond.domain.spec import EnvSpec
from provisiond.domain.urls import mask
from provisiond.engines.pip import absolute_paths, included_files
from provisiond.shell.dotenv import parse_dotenv
from provisiond.store.files import read_regular

__all__ = ["Fingerprint", "blocked_message", "dotenv_part", "fingerprint", "local_projects", "lock_fingerprint",
           "project_content", "reached_files", "under_prefix", "what_changed"]

SCHEME = 1
_BUILD_FILES = ("pyproject.toml", "setup.py", "setup.cfg")
MAX_INCLUDED = 1 << 20  # bytes of a .env or requirements file we read: more is not a real one
MAX_HASHED = 64 << 20  # bytes of a local file hashed by content; larger ones count by size and mtime
MAX_BACKEND_FILES = 1000  # *.py files of an in-tree build backend we hash
# Names for what changed, as the hook's one line says them.
_PART_NAMES = {"channels": "channels", "pip": "pip: section", "variables": "variables:", "dotenv": ".env names",
               "lock": "conda-lock.yml (its channels or pip packages)"}


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

    @property
    def files(self) -> tuple[str, ...]:
        """The local files and directories it covers (``reached_files``), sorted."""
        return tuple(sorted(key[len("file:"):] for key in self.parts if key.startswith("file:")))


def fingerprint(spec: EnvSpec, path: str, dotenv: Path | None = None) -> Fingerprint:
    """The fingerprint of ``spec`` (parsed from a file) for the allowance keyed by ``path``.

    ``dotenv`` is a project's ``.env``; named envs have none.
    """
    parts = {
        "channels": _hash([list(spec.channels), spec.nodefaults, _dependency_channels(spec)]),
        "pip": _hash(list(spec.pip)),
        "variables": _hash([list(kv) for kv in spec.variables]),
    }
    for file in sorted(reached_files(spec)):
        parts[f"file:{file}"] = _file_hash(file)
    if dotenv is not None:
        parts["dotenv"] = dotenv_part(dotenv)
    return Fingerprint(path=path, parts=parts)


def dotenv_part(dotenv: Path) -> str:
    """The fingerprint part of a project's ``.env``: its variable names, never its values."""
    return _hash(sorted(_dotenv_names(dotenv)))


def lock_fingerprint(lock: Lock, path: str) -> Fingerprint:
    """A lockfile's fingerprint (``create -f conda-lock.yml``): where its packages come from, and
    its pip entries; a package moved to another version on the same channels keeps it."""
    channels = sorted({mask(p.url).rsplit("/", 2)[0] for p in lock.packages})
    pip = sorted(f"{p.name} {mask(p.url)} {p.editable or ''}" for p in lock.pip) + list(lock.pip_options)
    return Fingerprint(path=path, parts={"channels": _hash(channels), "pip": _hash(pip)})


def project_lock_part(lock_file: Path) -> dict[str, str]:
    """A project's ``conda-lock.yml`` in its fingerprint: where its packages come from and its pip
    entries, for every platform (nothing when there is no lock: older allowances keep holding).
    A version moved on the same channels keeps trust, as a dependency edit of the file does."""
    from provisiond.daemon.locking import read_project_lock
    from provisiond.domain.errors import ProvisionError

    try:
        project_lock = read_project_lock(lock_file)  # parsed once per content (cached by stat)
    except ProvisionError:
        return {"lock": _hash("unreadable")}  # the build reports the error itself
    if project_lock is None:
        return {}
    locks = project_lock.locks.values()
    channels = sorted({mask(p.url).rsplit("/", 2)[0] for lock in locks for p in lock.packages})
    pip = sorted({f"{p.name} {mask(p.url)}" for lock in locks for p in lock.pip})
    return {"lock": _hash([channels, pip])}


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


def reached_files(spec: EnvSpec) -> set[str]:
    """Local files and directories the pip section makes uv read or run: included files, the build
    files of local projects, local archives and find-links directories."""
    base = Path(spec.project_dir) if spec.project_dir else None
    includes = set(included_files(spec))
    found = {str(p) for p in includes}
    lines = [(absolute_paths(line, base), base) for line in spec.pip]
    for include in includes:
        data = read_regular(include, MAX_INCLUDED)
        if data is not None:
            lines += [(n.strip(), include.parent) for n in data.decode(errors="replace").splitlines()]
    for line, here in lines:
        links = line.startswith(("-f", "--find-links"))
        for local in _local_paths(line, here):
            if local.is_dir() and not links:
                found.update(_build_files(local))
            else:
                found.add(str(local))  # a file by its content, a find-links directory by its listing
    return found


MAX_CONTENT_FILES = 2000  # files of a local project keyed by content; past that, the first ones (sorted walk)
_NOT_SOURCE = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", "build", "dist",
                         ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".eggs"})


def local_projects(spec: EnvSpec) -> dict[str, bool]:
    """The local project directories the pip section installs (``./mypkg``, ``-e .``): path -> editable."""
    base = Path(spec.project_dir) if spec.project_dir else None
    found: dict[str, bool] = {}
    for line in spec.pip:
        line = absolute_paths(line, base)
        if line.startswith(("-f", "--find-links", "-r", "--requirement", "-c", "--constraint")):
            continue
        editable = line.startswith(("-e", "--editable"))
        for local in _local_paths(line, base):
            if local.is_dir():
                found[str(local)] = found.get(str(local), False) or editable
    return found


def project_content(directory: str, editable: bool) -> tuple[str, tuple[str, ...]]:
    """A local project's content digest, and the files it covers (for the warm fast path's stat()s).

    Not editable: every file of its source tree (a code edit must rebuild: the code is copied into the
    env). Editable: the build files only (``_build_files``): its code is used in place, while a new
    dependency or entry point in ``pyproject.toml`` needs a new install. Same hashing as the fingerprint.
    """
    root = Path(directory)
    if editable:
        files = sorted(_build_files(root))
    else:
        files = []
        for top, dirs, names in os.walk(root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d not in _NOT_SOURCE and not d.endswith(".egg-info"))
            files += [os.path.join(top, n) for n in sorted(names) if not n.endswith((".pyc", ".pyo"))]
            if len(files) >= MAX_CONTENT_FILES:
                files = files[:MAX_CONTENT_FILES]
                break
    digest = _hash([[os.path.relpath(f, root), _file_hash(f)] for f in files])
    return digest, tuple(files)


def _build_files(directory: Path) -> set[str]:
    """What a build of a local project runs: its build files, its in-tree build backend
    (``backend-path``), and the modules beside ``setup.py`` it may import (versioneer.py)."""
    names = {str(directory / name) for name in _BUILD_FILES if (directory / name).is_file()}
    if not names:
        return names  # nothing to build: uv fails on it
    try:
        names.update(str(p) for p in directory.glob("*.py") if p.is_file())
    except OSError:
        pass
    data = read_regular(directory / "pyproject.toml", MAX_INCLUDED)
    if data is not None:
        try:
            backend = tomllib.loads(data.decode(errors="replace")).get("build-system", {}).get("backend-path", [])
        except (tomllib.TOMLDecodeError, AttributeError):
            backend = []
        for entry in backend if isinstance(backend, list) else []:
            root = (directory / str(entry)).resolve()
            if root.is_dir() and root.is_relative_to(directory.resolve()):  # never outside the project
                names.update(_python_files(root))
    return names


def _python_files(root: Path) -> list[str]:
    """The ``*.py`` files under an in-tree build backend, walked lazily: at most MAX_BACKEND_FILES,
    no symlinked dirs, no VCS or node_modules."""
    found: list[str] = []
    for top, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in (".git", ".hg", ".svn", "node_modules", "__pycache__"))
        found += [os.path.join(top, f) for f in sorted(files) if f.endswith(".py")]
        if len(found) >= MAX_BACKEND_FILES:
            return found[:MAX_BACKEND_FILES]
    return found


def _local_paths(line: str, here: Path | None) -> list[Path]:
    """The local paths a pip line installs or builds from: ``-e .``, ``--editable=./lib``,
    ``./pkg``, ``name @ file:./lib``, ``git+file:///repo``, ``-f ./wheels``."""
    words = line.split()
    if not words:
        return []
    head = words[0]
    option, _, attached = head.partition("=") if head.startswith("--") else (head, "", "")
    if option in ("-f", "--find-links", "-e", "--editable"):
        targets = [attached] if attached else words[1:2]
    elif head.startswith(("-e", "-f")) and len(head) > 2:  # `-e./lib`
        targets = [head[2:]]
    elif head.startswith("-"):
        return []
    elif "@" in words:  # `name @ file:./lib` (PEP 508)
        targets = words[words.index("@") + 1:words.index("@") + 2]
    elif "@" in head and "/" not in head.split("@", 1)[0] and ":" not in head.split("@", 1)[0]:
        targets = [head.split("@", 1)[1]]  # `name@file:./lib`
    else:
        targets = [head]
    out = []
    for target in targets:
        path = _as_local(target)
        if path is None:
            continue
        if not path.is_absolute() and here is not None:
            path = here / path
        out.append(Path(os.path.normpath(path)))
    return out


def _as_local(target: str) -> Path | None:
    """``target`` as a local path, or None for a URL fetched over the network or a requirement name."""
    target = target.split(";", 1)[0].strip().strip("'\"")  # an environment marker, quotes
    vcs = target.startswith("git+file:")
    if vcs:
        target = target[len("git+"):]
    if target.startswith("file:"):
        url = urlparse(target)
        if url.netloc not in ("", "localhost"):
            return None  # file://host/...: not this machine
        target = unquote(url.path)
        if vcs and "@" in target:
            target = target.rsplit("@", 1)[0]  # a VCS revision: `git+file:///repo@main`
    elif "://" in target:
        return None  # fetched: the pip line itself is in the fingerprint
    elif not target.startswith((".", "/", "~")) and "/" not in target:
        return None  # a requirement name
    target = target.split("#", 1)[0].split("[", 1)[0]
    return Path(os.path.expanduser(target)) if target else None


def _dependency_channels(spec: EnvSpec) -> list[str]:
    """Channels the dependencies name themselves (``https://x/ch::pkg``, ``pkg[channel=...]``) beyond
    ``channels:``: a "dependency edit" that brings a new channel is a channel edit."""
    listed = {c.rstrip("/") for c in spec.channels}
    out = set()
    for dependency in spec.dependencies:
        if "::" not in dependency and "channel=" not in dependency and "url=" not in dependency:
            continue
        try:
            channel = rattler.MatchSpec(dependency, strict=False).channel
        except Exception:
            channel = None
        if channel is None:
            out.add(dependency)  # a url= or an unparsed form: the whole entry
        elif channel.name not in listed and str(channel.base_url).rstrip("/") not in listed:
            out.add(str(channel.base_url))
    return sorted(out)


def _dotenv_names(file: Path) -> list[str]:
    data = read_regular(file, MAX_INCLUDED)
    if data is None:
        return ["<missing or not a regular file>"] if os.path.lexists(file) else []
    pairs, _problems = parse_dotenv(data.decode("utf-8", errors="replace"))
    return [name for name, _value in pairs]


def _file_hash(file: str) -> str:
    """sha256 of a regular file (its size folded in); a directory by its listing (names, sizes,
    mtimes). Never a FIFO or a device, and never more than the size fstat() gave: a clone may ship
    ``x -> /dev/zero`` or ``x -> /proc/self/pagemap`` (a "regular" file of size 0 that reads for
    minutes). A file over MAX_HASHED bytes (a large wheel) counts by its size, mtime and inode."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return "missing"
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(fd))
            return _hash(entries)
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if st.st_size > MAX_HASHED:
            return _hash(["large", st.st_size, st.st_mtime_ns, st.st_ino])
        digest = hashlib.sha256(f"{st.st_size}:".encode())
        left = st.st_size
        while left > 0 and (block := os.read(fd, min(left, 1 << 20))):
            digest.update(block)
            left -= len(block)
        return digest.hexdigest()
    except OSError:
        return "unreadable"
    finally:
        os.close(fd)


def _hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
