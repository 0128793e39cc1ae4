"""Provisioner: named envs and projects → spec → lock (solve cache) → one build per env_key → store."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisiond import activation, trust
from provisiond.builder import Builder, shared
from provisiond.engines.base import Engine
from provisiond.gate import TrustGate, project_dir
from provisiond.errors import (BadRequestError, BlockedError, EnvNotFoundError, ProvisionError,
                               ShuttingDownError, SpecError)
from provisiond.exports import export
from provisiond.locations import SPEC_FILES
from provisiond.lock import EnvKey, Lock
from provisiond.lockfiles import kind_of, load_lockfile
from provisiond.pip import find_uv, inputs_key, resolve_pip, resolver_settings
from provisiond.settings import Settings
from provisiond.spec import EnvSpec, load_spec, read_spec, spec_key
from provisiond.store import NameRecord, Store
from provisiond.urls import mask

log = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class EnvView:
    """A named env as the API and CLI show it."""

    name: str
    kind: str
    source: str | None
    status: str
    env_key: str | None
    prefix: str | None
    error: str | None
    build_id: int | None
    projects: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "source": self.source, "status": self.status,
            "env_key": self.env_key, "prefix": self.prefix, "error": self.error,
            "build_id": self.build_id, "projects": list(self.projects),
        }


# conda's rule (no '/', ' ', ':', '#'), plus what would break a file name, a URL or a shell word.
_NAME = re.compile(r"[A-Za-z0-9_.+@=~-]{1,100}")


def check_name(name: str) -> str:
    """An env name usable as a file name, a URL segment and a conda name, or BadRequestError."""
    if not _NAME.fullmatch(name) or name in (".", "..") or name.startswith("-"):
        raise BadRequestError(f"{name[:120]!r} is not a valid env name",
                              hint="use 1-100 letters, digits and . _ - + @ = ~, not starting with '-'")
    return name


def _as_name(text: str) -> str:
    """``text`` made into a valid name (a directory called "My Project" becomes "My-Project")."""
    name = re.sub(r"[^A-Za-z0-9_.+@=~-]+", "-", text).strip("-.")[:100] or "env"
    return name if name not in (".", "..") else "env"


def spec_file_of(directory: Path) -> Path:
    """The environment file of a project directory."""
    for name in SPEC_FILES:
        if (directory / name).is_file():
            return directory / name
    raise SpecError(f"{directory}: no environment.yml in this directory",
                    hint="create one, or point at the file with: provisionctl create -f FILE")


class Provisioner:
    """The core: idempotent ``ensure``/``warm``; never knows about HTTP or argv."""

    def __init__(self, store: Store, engine: Engine, settings: Settings) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.builder = Builder(store, engine, settings)
        self.gate = TrustGate(store, settings)
        self.events = self.builder.events
        self._solves: dict[str, asyncio.Task[Lock]] = {}
        self._background: dict[str, asyncio.Task[Any]] = {}
        self._again: set[str] = set()
        self._specs: dict[str, EnvSpec] = {}
        # name -> (inputs signature, env_key, spec_key) of its last good warm (see _unchanged).
        self._fresh: dict[str, tuple[tuple[Any, ...], str, str]] = {}
        # Set when projects are added or removed, so the watcher re-reads the set it watches.
        self.projects_changed = asyncio.Event()
        self._closing = False

    def apply(self, settings: Settings) -> None:
        """Run with reloaded settings (SIGHUP); ``reload.reloaded`` kept those that need a restart."""
        self.settings = settings
        self.builder.apply(settings)
        self.gate.settings = settings

    async def close(self) -> None:
        """Cancel background work and wait for it (builds in flight leave only `.building/` garbage).

        Names being built keep their previous state; requests waiting get ShuttingDownError (503).
        """
        self._closing = True
        tasks = [*self._background.values(), *self._solves.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.builder.close()

    # -- the pipeline -------------------------------------------------------------------------

    def spec_key(self, spec: EnvSpec) -> str:
        """The solve-cache key: the spec plus everything of this daemon that changes its answer."""
        engine = self.engine
        key = spec_key(spec, engine.platform, engine.virtual_packages(), channels=engine.channel_urls(spec),
                       engine=engine.version(), pip=resolver_settings() if spec.pip else ())
        return inputs_key(spec, key) if spec.pip else key  # an edited -r file must re-resolve

    async def resolve(self, spec: EnvSpec, *, update: bool = False) -> Lock:
        """The spec's lock: from the solve cache unless expired or ``update``; one solve per spec_key."""
        key = self.spec_key(spec)
        if not update:
            cached = self.store.cached_lock(key, self.settings.solve_ttl)
            if cached is not None:
                return cached
        task = self._solves.get(key)
        if task is None:
            if self._closing:
                raise ShuttingDownError("provisiond is shutting down: no new solves",
                                        hint="run the command again once provisiond is back")
            task = asyncio.create_task(self._solve(key, spec, update))
            self._solves[key] = task
            task.add_done_callback(lambda _t: self._solves.pop(key, None))
        return await shared(task)

    async def _solve(self, key: str, spec: EnvSpec, update: bool) -> Lock:
        started = time.perf_counter()
        # Repodata older than the solve TTL is checked again: a channel's new versions show up.
        lock = await self.engine.solve(spec, refresh=update, max_age=self.settings.solve_ttl)
        if spec.pip:
            lock = await resolve_pip(spec, lock, uv=find_uv(), cache_dir=self.settings.paths.uv_cache,
                                     virtual_packages=self.engine.virtual_packages(), refresh=update,
                                     on_line=lambda line: log.debug("pip: %s", mask(line)))
        self.store.cache_lock(key, lock)
        log.info("solved %s: %d packages in %.1f ms (env %s)", spec.source or "spec", len(lock.packages),
                 (time.perf_counter() - started) * 1000, lock.env_key[:16])
        return lock

    async def ensure(self, lock: Lock, name: str | None = None) -> Path:
        """The published prefix of ``lock``: found in the store, or built once however many ask."""
        return await self.builder.ensure(lock, name)

    # -- names and projects -------------------------------------------------------------------

    async def add_project(self, path: str, name: str | None = None, *, allow: bool = False) -> EnvView:
        """Register a project directory (idempotent); its env is named by ``name``, the file, or the dir.

        ``allow``: the user asked for it (``provisionctl watch``), which records consent for the
        current content. Without it (the shell hook) only an allowed project is registered.
        """
        directory = project_dir(path)
        spec_path = spec_file_of(directory)
        existing = self.store.find_project(str(directory))
        spec = None
        if allow or existing is None:
            spec = await read_spec(spec_path)
            fp = self.gate.fingerprint(spec, str(directory), "project")
            if allow:
                self.gate.consent(fp)
            elif existing is None:
                self.gate.check(None, fp, spec_path.name)
        if existing is not None and (name is None or name == existing.name):
            return self.view(existing.name)
        if name is None:
            name = self._implicit_name(spec.name if spec else None, directory)
        else:
            check_name(name)
            taken = self.store.find_name(name)
            if taken is not None and taken.source != str(directory):
                raise BadRequestError(f"the name {name!r} is already used by {taken.source or 'another env'}",
                                      hint="choose another name with --name")
        with self.store.transaction():  # a rename is one change: never lose the registration halfway
            if existing is not None:
                self.store.remove_name(existing.name)
            self.store.add_name(name, "project", str(directory))
        if existing is not None:
            self._remove_name_activation(existing.name)
        self.projects_changed.set()
        log.info("watching project %s as %r", directory, name)
        return self.view(name)

    def _implicit_name(self, base: str | None, directory: Path) -> str:
        """The file's ``name:`` (``base``), else the directory's; made unique when another project has
        it (a second clone or worktree of the same repo registers from the shell hook, which shows
        no errors)."""
        base = _as_name(base or directory.name)
        for candidate in (base, _as_name(f"{base}-{directory.name}"),
                          _as_name(f"{base}-{hashlib.sha256(str(directory).encode()).hexdigest()[:8]}")):
            taken = self.store.find_name(candidate)
            if taken is None or taken.source == str(directory):
                return candidate
        raise BadRequestError(f"no free name for {directory}", hint="choose one with --name")

    def remove(self, name_or_path: str) -> EnvView:
        """Forget a name or a project (the env stays in the store for other names and GC)."""
        record = self._lookup(name_or_path)
        view = self.view(record.name)
        self.store.remove_name(record.name)
        self._specs.pop(record.name, None)
        self._fresh.pop(record.name, None)
        self._remove_name_activation(record.name)
        if record.kind == "project":
            self.projects_changed.set()
            if record.source:
                self.gate.clear(record.source)
            self._remove_project_activation(record)
        return view

    async def create(self, file: str, name: str | None = None, *, update: bool = False) -> EnvView:
        """`conda env create -f FILE [-n NAME]`: a named env from an environment.yml or a lockfile.

        A lockfile (@EXPLICIT, conda-lock.yml v1, pixi.lock) is installed without solving.
        """
        if "\0" in file:
            raise BadRequestError(f"{file!r} is not a path")
        path = Path(file).expanduser().resolve()
        kind = kind_of(path)
        spec = await read_spec(path) if kind == "spec" else None
        name = name or (spec.name if spec else None)
        if not name:
            raise BadRequestError(f"{file}: the file has no 'name:'", hint="give one with -n NAME")
        check_name(name)
        taken = self.store.find_name(name)
        if taken is not None and taken.kind == "project":
            raise BadRequestError(f"the name {name!r} is already used by project {taken.source}",
                                  hint="choose another name with -n NAME")
        if spec is not None:
            self.gate.consent(self.gate.fingerprint(spec, str(path), "file"))  # `create -f FILE` is consent
            self.store.add_name(name, "file", str(path))
            return await self._warm(self.store.get_name(name), spec, update=update)
        lock = await asyncio.to_thread(load_lockfile, path, self.engine.platform)
        self.gate.consent(trust.lock_fingerprint(lock, str(path)))
        self.store.add_name(name, "lock", str(path))
        return await self._install_lock(name, lock)

    async def _install_lock(self, name: str, lock: Lock) -> EnvView:
        before = self.store.get_name(name)
        self.store.update_name(name, status="building", error=None)
        try:
            await self.ensure(lock, name)
        except (asyncio.CancelledError, ShuttingDownError):
            self._keep_state(before)
            raise
        except BaseException as exc:
            message = exc.message if isinstance(exc, ProvisionError) else "interrupted"
            self.store.update_name(name, status="failed", error=message)
            raise
        self.store.update_name(name, status="ready", error=None, env_key=lock.env_key, spec_key=None)
        self._write_name_activation(name, lock.env_key)
        return self.view(name)

    def clone(self, source: str, target: str) -> EnvView:
        """A new name for the same env_key: O(1), no file is copied."""
        record = self._lookup(source)
        if not record.env_key or self.store.find_env(record.env_key) is None:
            raise BadRequestError(f"{record.name!r} has no built env to clone",
                                  hint=f"run: provisionctl warm {record.name}")
        check_name(target)
        if self.store.find_name(target) is not None:
            raise BadRequestError(f"the name {target!r} is already used", hint="choose another name")
        self.store.add_name(target, "clone", record.name)
        self.store.update_name(target, status="ready", env_key=record.env_key)
        self._write_name_activation(target, record.env_key,
                                    activation.name_variables(self.settings.paths, record.name))
        return self.view(target)

    async def remove_env(self, name_or_path: str) -> tuple[EnvView, bool]:
        """Remove a name; delete its env only when no other name, project, lease or build uses it.

        A leased env (a running `provisionctl run`, cold-start or shell) is left to gc.
        """
        from provisiond.gc import leased

        record = self._lookup(name_or_path)
        view = self.remove(record.name)
        key = record.env_key
        if not key or self.store.names_of(key) or key in self.builder.busy or key in leased(self.settings.paths):
            return view, False
        trash = self.store.unpublish(record.env_key)
        if trash is not None:
            await asyncio.to_thread(shutil.rmtree, trash, True)
        return view, True

    def export(self, name_or_path: str, *, fmt: str = "yml", no_builds: bool = False,
               from_history: bool = False) -> str:
        """The env as environment.yml, @EXPLICIT or conda-lock text (see exports.py)."""
        record = self._lookup(name_or_path)
        lock = self.lock_of(record.name)
        return export(lock, name=record.name, fmt=fmt, no_builds=no_builds, from_history=from_history,
                      spec=self._spec_of(record), channel_alias=self.settings.channel_alias)

    def _spec_of(self, record: NameRecord) -> EnvSpec | None:
        """The spec a name was built from, if it still has one (clones follow their source)."""
        seen = set()
        while record.kind == "clone" and record.source and record.source not in seen:
            seen.add(record.source)
            found = self.store.find_name(record.source)
            if found is None:
                return None
            record = found
        if record.kind == "project" and record.source:
            path = spec_file_of(Path(record.source))
        elif record.kind == "file" and record.source:
            path = Path(record.source)
        else:
            return None
        return self._specs.get(record.name) or load_spec(path)

    async def warm(self, name_or_path: str, *, update: bool = False) -> EnvView:
        """Make a named env (or a project, by path) ready; return it with its prefix."""
        record = self._lookup(name_or_path)
        spec_path = Path(record.source or "")
        if record.kind in ("clone", "lock"):
            return await self._warm_snapshot(record)
        if not update and self._unchanged(record):
            self.store.touch_env(record.env_key or "")
            return self.view(record.name)
        # Taken before reading the file: an edit during the build must not pass for the built spec.
        signature = self._inputs_signature(record)
        try:
            spec_file = spec_file_of(spec_path) if record.kind == "project" else spec_path
            spec = await read_spec(spec_file)
        except SpecError as exc:
            if record.kind == "file" and record.env_key and not spec_path.exists():
                return self.view(record.name)  # a snapshot whose file is gone keeps serving
            self.store.update_name(record.name, status="failed", error=exc.message)
            kept = " (the previous env stays active)" if record.env_key else ""
            self.gate.notify(record, f"{exc.message}{kept}", f"provisionctl show {record.name}")
            raise
        self.gate.check(record, self.gate.fingerprint(spec, record.source or "", record.kind), spec_file.name)
        return await self._warm(record, spec, update=update, signature=signature)

    def _inputs_signature(self, record: NameRecord) -> tuple[Any, ...]:
        """stat() of the spec file, the files its pip section names and a project's `.env`.

        Cheap change detection for the warm fast path. `.env` is in it because a warm after editing
        `.env` must re-render the activation even before the watcher notices.
        """
        source = Path(record.source or "")
        try:
            spec_path = spec_file_of(source) if record.kind == "project" else source
        except SpecError:
            return ()
        files = [spec_path, *(spec_path.parent / f for f in sorted(self.referenced_files(record.name)))]
        signature: list[Any] = []
        for f in files:
            try:
                st = f.stat()
            except OSError:
                return ()
            signature.append((str(f), st.st_ino, st.st_size, st.st_mtime_ns))
        if record.kind == "project":
            try:
                st = (source / ".env").stat()
                signature.append((".env", st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                signature.append((".env", None))
        return tuple(signature)

    def _unchanged(self, record: NameRecord) -> bool:
        """True when a ready env's inputs are untouched and its solve is still fresh: no parse, no solve.

        This is the path of every `provisionctl warm` of a ready env; parsing YAML alone costs ms.
        """
        fresh = self._fresh.get(record.name)
        if fresh is None or record.status != "ready" or record.env_key != fresh[1]:
            return False
        signature = self._inputs_signature(record)
        if not signature or signature != fresh[0] or self.store.find_env(fresh[1]) is None:
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
        """The prefix of ``name`` if a warm would change nothing (see ``_unchanged``), else None."""
        record = self.store.find_name(name)
        if record is None or not record.env_key:
            return None
        if record.kind in ("project", "file") and not self._unchanged(record):
            return None
        if record.kind == "lock" or record.status != "ready":
            return None
        prefix = self.store.find_env(record.env_key)
        if prefix is not None:
            self.store.touch_env(record.env_key)
        return str(prefix) if prefix else None

    async def _warm_snapshot(self, record: NameRecord) -> EnvView:
        """Clones and lockfile envs: re-read the lockfile if it is still there, else rebuild from our lock."""
        if record.kind == "lock" and record.source and Path(record.source).is_file():
            lock = await asyncio.to_thread(load_lockfile, Path(record.source), self.engine.platform)
            self.gate.check(record, trust.lock_fingerprint(lock, record.source), Path(record.source).name)
            return await self._install_lock(record.name, lock)
        if record.env_key and self.store.find_env(record.env_key) is None:
            return await self._install_lock(record.name, self.store.read_lock(record.env_key))
        if record.env_key:
            self._write_name_activation(record.name, record.env_key)  # a no-op unless missing or stale
        return self.view(record.name)

    def warm_in_background(self, name: str) -> None:
        """Warm ``name`` soon; a request during a running warm runs once more after it (coalesced)."""
        if name in self._background:
            self._again.add(name)
            return
        if self._closing:
            return
        task = asyncio.create_task(self._quiet_warm(name))
        self._background[name] = task

    async def _quiet_warm(self, name: str) -> None:
        try:
            while True:
                self._again.discard(name)
                try:
                    await self.warm(name)
                except EnvNotFoundError:
                    return  # removed meanwhile
                except ProvisionError as exc:
                    log.warning("background build of %r failed: %s", name, exc.message)
                if name not in self._again:
                    return
        finally:
            self._background.pop(name, None)

    def mark_gone(self, name: str) -> None:
        """A project whose directory disappeared: keep its env, stop building it."""
        self.store.update_name(name, status="gone", error="the project directory no longer exists")

    def referenced_files(self, name: str) -> set[str]:
        """Files next to the spec that its pip section names with -r/-c (a change rebuilds)."""
        spec = self._specs.get(name)
        if spec is None:
            return set()
        found = set()
        for line in spec.pip:
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("-r", "-c", "--requirement", "--constraint"):
                found.add(Path(parts[1]).name)
        return found

    def refresh_activation(self, name: str) -> None:
        """Re-render a project's activation (its .env changed); no rebuild."""
        record = self.store.find_name(name)
        if record is None or record.kind != "project" or not record.env_key or not record.source:
            return
        spec = self._specs.get(name)
        if spec is None or record.status == "blocked":
            self.warm_in_background(name)  # reads the file and checks trust first
            return
        try:  # a new name in .env changes the shell: it needs a new allow (trust.py)
            self.gate.check(record, self.gate.fingerprint(spec, record.source, "project"), Path(spec.source or "").name)
        except BlockedError as exc:
            log.warning("%s", exc.message)
            return
        self._write_project_activation(record, spec)

    async def _warm(self, record: NameRecord, spec: EnvSpec, *, update: bool,
                    signature: tuple[Any, ...] = ()) -> EnvView:
        name = record.name
        self.store.update_name(name, status="building", error=None)
        try:
            lock = await self.resolve(spec, update=update)
            await self.ensure(lock, name)
        except (asyncio.CancelledError, ShuttingDownError):
            self._keep_state(record)
            raise
        except BaseException as exc:
            message = exc.message if isinstance(exc, ProvisionError) else "interrupted"
            # The previous env (if any) stays active: env_key is left as it was.
            self.store.update_name(name, status="failed", error=message)
            if isinstance(exc, ProvisionError):
                self.gate.notify(record, f"the build failed: {message}", f"provisionctl log {record.source or name}")
            raise
        self._specs[name] = spec
        key = self.spec_key(spec)
        self.store.update_name(name, status="ready", error=None, env_key=lock.env_key, spec_key=key)
        if signature:
            self._fresh[name] = (signature, lock.env_key, key)
        if record.status == "gone":  # its directory is back: the watcher must watch it again
            self.projects_changed.set()
        self._write_name_activation(name, lock.env_key, spec.variables)
        if record.kind == "project":
            self._write_project_activation(self.store.get_name(name), spec)
            if record.source:
                self.gate.clear(record.source)
        return self.view(name)

    # -- trust (gate.py) -------------------------------------------------------------------------

    async def allow(self, path: str) -> dict[str, Any]:
        """`provisionctl allow`: trust the current content of a project dir (or env file), then build it."""
        target = self.gate.target(path)
        if target.is_dir():
            spec = await read_spec(spec_file_of(target))
            fp = self.gate.fingerprint(spec, str(target), "project")
        elif kind_of(target) == "spec":
            fp = self.gate.fingerprint(await read_spec(target), str(target), "file")
        else:
            lock = await asyncio.to_thread(load_lockfile, target, self.engine.platform)
            fp = trust.lock_fingerprint(lock, str(target))
        self.gate.consent(fp)
        if target.is_dir():
            names = [(await self.add_project(str(target))).name]
        else:
            names = [r.name for r in self.store.list_names() if r.kind in ("file", "lock") and r.source == str(target)]
        for name in names:
            self.warm_in_background(name)
        return {"path": str(target), "digest": fp.digest, "names": names}

    def _keep_state(self, before: NameRecord) -> None:
        """A warm stopped by shutdown is not the name's failure: it keeps the state it had."""
        status = before.status
        if status == "building":  # another warm's mark: settle it as the start-up sweep would
            status = "ready" if before.env_key else "new"
        self.store.update_name(before.name, status=status, error=before.error)

    # -- activation (rendered when an env or a project changes; read by shells without us) -----

    def _write_project_activation(self, record: NameRecord, spec: EnvSpec | None) -> None:
        """Render a project's activation (variables, .env values) where its shell hook looks."""
        prefix = self.store.find_env(record.env_key) if record.env_key else None
        if record.source is None or prefix is None or record.env_key is None:
            return
        try:
            if spec is None:  # .env edited, no spec in memory (e.g. after a restart): reuse the last render
                activation.refresh_project_activation(self.settings.paths, record.source)
            else:
                activation.write_project_activation(self.settings.paths, record.source, record.name,
                                                    record.env_key, prefix, spec.variables)
        except OSError as exc:
            log.error("cannot write the activation of project %s: %s", record.source, exc)

    def _write_name_activation(self, name: str, env_key: str,
                               variables: Sequence[tuple[str, str]] | None = None) -> None:
        """Render a name's activation into the store for `run` and cold starts.

        ``variables`` None: a clone keeps those copied from its source, a lockfile env has none.
        """
        prefix, record, paths = self.store.find_env(env_key), self.store.find_name(name), self.settings.paths
        if prefix is None or record is None:
            return
        if variables is None:
            variables = activation.name_variables(paths, name) if record.kind == "clone" else ()
        try:
            activation.write_name_activation(paths, name, env_key, prefix, variables)
        except OSError as exc:  # the env is ready; the next warm writes it again
            log.error("cannot write the activation of env %r: %s", name, exc)

    def _remove_name_activation(self, name: str) -> None:
        activation.remove_name_activation(self.settings.paths, name)

    def _remove_project_activation(self, record: NameRecord) -> None:
        if record.source:
            activation.remove_project_activation(self.settings.paths, record.source)

    def _lookup(self, name_or_path: str) -> NameRecord:
        if "\0" in name_or_path or len(name_or_path) > 4096:
            raise EnvNotFoundError(f"no env or project {name_or_path[:120]!r}")
        record = self.store.find_name(name_or_path)
        if record is not None:
            return record
        if "/" in name_or_path or name_or_path in (".", ".."):
            directory = Path(name_or_path).expanduser().resolve()
            if directory.is_file():
                directory = directory.parent
            record = self.store.find_project(str(directory))
            if record is not None:
                return record
        raise EnvNotFoundError(f"no env or project {name_or_path!r}",
                               hint="see: provisionctl list; register a project with: provisionctl watch DIR")

    def view(self, name: str) -> EnvView:
        record = self.store.get_name(name)
        prefix = self.store.find_env(record.env_key) if record.env_key else None
        projects = ()
        if record.env_key:
            projects = tuple(r.source for r in self.store.list_names("project")
                             if r.env_key == record.env_key and r.source)
        return EnvView(name=record.name, kind=record.kind, source=record.source, status=record.status,
                       env_key=record.env_key, prefix=str(prefix) if prefix else None, error=record.error,
                       build_id=record.build_id, projects=projects)

    def list(self, kind: str | None = None) -> list[EnvView]:
        return [self.view(r.name) for r in self.store.list_names(kind)]

    async def gc(self, *, dry_run: bool, older_than_days: float | None = None,
                 cache_budget_bytes: int | None = None) -> dict[str, Any]:
        """Remove unreferenced, unleased envs unused for N days; prune the package cache to a budget."""
        from provisiond import gc

        days = self.settings.gc_days if older_than_days is None else older_than_days
        budget = self.settings.cache_budget_bytes if cache_budget_bytes is None else cache_budget_bytes
        if self.builder.busy:
            budget = None  # a build links from the package cache right now: prune it another time
        report = gc.plan(self.store, older_than_days=days, cache_budget_bytes=budget, busy=self.builder.busy)
        await asyncio.to_thread(gc.disk_usage, report, self.store.paths)
        report.dry_run = dry_run
        if not dry_run:
            # Sizing yielded to the loop: an env may have gained a name or a lease meanwhile.
            still = {e["env_key"] for e in gc.plan(self.store, older_than_days=days, cache_budget_bytes=None,
                                                   busy=self.builder.busy).envs}
            report.envs = [e for e in report.envs if e["env_key"] in still]
            doomed = [p for p in (self.store.unpublish(e["env_key"]) for e in report.envs) if p is not None]
            doomed += [Path(p["path"]) for p in report.packages]
            await asyncio.to_thread(gc.delete_paths, doomed)
            log.info("gc freed %d bytes (%d envs, %d cached packages)", report.freed_bytes,
                     len(report.envs), len(report.packages))
        return report.to_wire()

    def lock_of(self, name: str) -> Lock:
        record = self.store.get_name(name)
        if not record.env_key:
            raise EnvNotFoundError(f"env {name!r} has not been built yet", hint=f"run: provisionctl warm {name}")
        return self.store.read_lock(EnvKey(record.env_key))
