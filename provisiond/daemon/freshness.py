"""The warm fast path: which ready envs a warm would leave as they are, told without parsing YAML.

Every `provisionctl warm NAME` of a ready env (and its raw-socket fast path in the CLI) asks this.
A name's last good warm leaves a signature: ``stat()`` of its spec file, of every file its pip
section reached then (``trust.reached_files``, the files the trust fingerprint covers, computed by
that warm off the loop) and of a project's ``.env``. While that signature, the env, its activation
files and the solve's age hold, nothing needs to run; anything else takes the full warm, which
parses, checks trust and solves.

Signatures are kept in the registry (``fresh``) under a context (the engine, the platform and the
settings), so a restart checks every project with ``stat()`` alone; a changed engine or setting
makes them all stale, and the first warm of each takes the full path again.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from provisiond.config.locations import SPEC_FILES
from provisiond.config.settings import Settings
from provisiond.domain.errors import SpecError
from provisiond.domain.projectlock import LOCK_FILE
from provisiond.engines.base import Engine
from provisiond.shell import activation
from provisiond.store.registry import NameRecord
from provisiond.store.store import Store


def spec_file_of(directory: Path) -> Path:
    """The environment file of a project directory."""
    for name in SPEC_FILES:
        if (directory / name).is_file():
            return directory / name
    raise SpecError(f"{directory}: no environment.yml in this directory",
                    hint="create one, or point at the file with: provisionctl create -f FILE")


def context_of(engine: Engine, settings: Settings) -> str:
    """What a persisted signature is valid under: the engine, its platform and the settings."""
    text = json.dumps([engine.name, engine.version(), engine.platform, [str(v) for v in engine.virtual_packages()],
                       settings.to_wire()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Freshness:
    """Signatures of the last good warm of each name, and the questions they answer."""

    def __init__(self, store: Store, settings: Settings, context: str = "") -> None:
        self.store = store
        self.settings = settings  # replaced on SIGHUP (solve_ttl)
        self.context = context  # what else decides a solve (engine, settings): rows of another are stale
        # name -> (inputs signature as JSON, env_key, spec_key) of its last good warm.
        self._fresh: dict[str, tuple[str, str, str]] = {}
        # name -> the files its pip section reached at its last good warm (trust.reached_files,
        # computed then, off the loop): the fast path only stat()s them, it never parses again.
        self._files: dict[str, tuple[str, ...]] = {}
        for row in store.fresh_rows(context):  # one query: a restart re-parses nothing unchanged
            self._fresh[row["name"]] = (row["signature"], row["env_key"], row["spec_key"])
            self._files[row["name"]] = tuple(json.loads(row["files"]))

    def remember(self, name: str, signature: tuple[Any, ...], env_key: str, spec_key: str,
                 files: tuple[str, ...]) -> None:
        encoded = _encode(signature)
        self._fresh[name] = (encoded, env_key, spec_key)
        self._files[name] = files
        self.store.record_fresh(name, self.context, encoded, env_key, spec_key, files)

    def restat(self, name: str, path: Path) -> None:
        """``path`` was written by us after the warm took its signature (a project's re-written
        lock): its new stat() replaces the old one, so the watcher's echo of it changes nothing."""
        fresh = self._fresh.get(name)
        if fresh is None:
            return
        try:
            st = path.stat()
        except OSError:
            return
        entries = tuple([str(path), st.st_ino, st.st_size, st.st_mtime_ns]
                        if isinstance(e, list) and e and e[0] == str(path) else e for e in json.loads(fresh[0]))
        self.remember(name, entries, fresh[1], fresh[2], self._files.get(name, ()))

    def forget(self, name: str) -> None:
        self._fresh.pop(name, None)
        self._files.pop(name, None)
        self.store.forget_fresh(name)

    def signature(self, record: NameRecord) -> tuple[Any, ...]:
        """stat() of the spec file, every file its pip section reached at the last good warm (the
        files the trust fingerprint covers) and a project's `.env`.

        Cheap change detection for the warm fast path. `.env` is in it because a warm after editing
        `.env` must re-render the activation even before the watcher notices.
        """
        source = Path(record.source or "")
        try:
            spec_path = spec_file_of(source) if record.kind == "project" else source
        except SpecError:
            return ()
        files = [spec_path, *(Path(f) for f in self._files.get(record.name, ()))]
        if record.kind == "project":  # a pulled or edited conda-lock.yml is installed as it is
            files.append(spec_path.with_name(LOCK_FILE))
        signature: list[Any] = []
        for i, f in enumerate(files):
            try:
                st = f.stat()
            except (OSError, ValueError):
                if i == 0:
                    return ()  # no spec file: nothing to say
                signature.append((str(f), None))  # a reached file that is missing is a state too
                continue
            signature.append((str(f), st.st_ino, st.st_size, st.st_mtime_ns))
            if stat.S_ISDIR(st.st_mode):  # a find-links dir: a wheel replaced in place keeps its mtime
                try:
                    signature.append(tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                                                  for e in os.scandir(f))))
                except OSError:
                    signature.append(None)
        if record.kind == "project":
            try:
                st = (source / ".env").stat()
                signature.append((".env", st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                signature.append((".env", None))
        return tuple(signature)

    def unchanged(self, record: NameRecord) -> bool:
        """True when a ready env's inputs are untouched and its solve is still fresh: no parse, no solve.

        This is the path of every `provisionctl warm` of a ready env; parsing YAML alone costs ms.
        """
        fresh = self._fresh.get(record.name)
        if fresh is None or record.status != "ready" or record.env_key != fresh[1]:
            return False
        signature = self.signature(record)
        if not signature or _encode(signature) != fresh[0] or self.store.find_env(fresh[1]) is None:
            return False
        if not self._activation_written(record):
            return False  # a write failed or the files were removed: the full warm writes them again
        return self.store.cached_lock_age(fresh[2]) < self.settings.solve_ttl

    def _activation_written(self, record: NameRecord) -> bool:
        paths = self.settings.paths
        names = activation.name_activation_dir(paths, record.name)
        if names is not None and not (names / activation.NAME_TARGET).is_file():
            return False
        return record.kind != "project" or not record.source or \
            (activation.project_activation_dir(paths, record.source) / activation.STAMP).is_file()

    def ready_prefix(self, name: str) -> str | None:
        """The prefix of ``name`` if a warm would change nothing (see ``unchanged``), else None."""
        record = self.store.find_name(name)
        if record is None or not record.env_key:
            return None
        if record.kind in ("project", "file") and not self.unchanged(record):
            return None
        if record.kind == "lock" or record.status != "ready":
            return None
        prefix = self.store.find_env(record.env_key)
        if prefix is not None:
            self.store.touch_env(record.env_key)
        return str(prefix) if prefix else None


def _encode(signature: tuple[Any, ...]) -> str:
    """A signature as the registry keeps it (tuples become lists: compare encoded forms only)."""
    return json.dumps(signature, separators=(",", ":"))
