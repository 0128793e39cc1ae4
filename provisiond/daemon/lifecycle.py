"""The lifecycle owner: every warm of a name, every build, and the one answer to "is this env in use?".

- **Ordered warms.** Each warm of a name takes the next generation of that name *before* it reads
  the file. Only the newest generation may re-point the name (or mark it failed); an older warm
  that finishes later changes nothing, and its caller answers with the newest warm's outcome. So
  the newest input always wins, whatever order the builds finish in.
- **One in-use answer** (``in_use``): a name references the env, a build is making it, a warm has
  it published but not yet named (``_pins``), or a live process leases it. gc and remove ask only
  this, and do their last check and the unpublish in one synchronous step, with no ``await`` in
  between. Package-cache entries that a running build links from are pinned the same way.
- Activation files are written here, after each change of what a name points at.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from provisiond.config.settings import Settings
from provisiond.daemon import trust
from provisiond.daemon.builder import Builder, shared
from provisiond.daemon.freshness import Freshness, context_of, spec_file_of
from provisiond.daemon.gate import TrustGate
from provisiond.daemon.inputs import local_contents, lock_fingerprint, referenced_files
from provisiond.daemon.kernels import Kernels
from provisiond.daemon.locking import Locker, ProjectLockUse, lock_path_of
from provisiond.daemon.solves import Solves
from provisiond.domain.errors import (
    BlockedError,
    EnvNotFoundError,
    ProvisionError,
    ShuttingDownError,
    SpecError,
)
from provisiond.domain.lock import Lock, LockFormatError
from provisiond.domain.lockfiles import load_lockfile
from provisiond.domain.spec import EnvSpec, read_spec
from provisiond.engines.base import Engine
from provisiond.shell import activation
from provisiond.store import conda_envs, gc
from provisiond.store.registry import NameRecord
from provisiond.store.store import Store

log = logging.getLogger(__name__)


class Lifecycle:
    """Warms names into envs, in order; owns builds (through ``solves`` and ``builder``), gc and activation writes."""

    def __init__(self, store: Store, engine: Engine, settings: Settings, gate: TrustGate) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.gate = gate
        self.builder = Builder(store, engine, settings)
        self.locker = Locker(engine, settings)
        self.solves = Solves(store, engine, settings, self.locker)
        self._background: dict[str, asyncio.Task[Any]] = {}
        self._again: set[str] = set()
        self._specs: dict[str, EnvSpec] = {}
        self.fresh = Freshness(store, settings, context_of(engine, settings))
        self.kernels = Kernels(store, settings)  # Jupyter kernelspecs follow the names (kernels.py)
        gate.on_block = self.kernels.withdraw  # nothing of a blocked project runs, its kernel neither
        self._generation: dict[str, int] = {}
        self._newest: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self._pins: Counter[str] = Counter()  # env_keys a warm has published but not yet named
        self._reading: dict[str, tuple[int, tuple[Any, ...]]] = {}  # name -> (generation, inputs' stat) it read
        # Set when projects come back or go, so the watcher re-reads the set it watches.
        self.projects_changed = asyncio.Event()
        self._closing = False

    def apply(self, settings: Settings) -> None:
        self.settings = settings
        self.fresh.settings = settings
        self.locker.settings = settings
        self.solves.settings = settings
        self.builder.apply(settings)
        self.kernels.apply(settings)

    async def close(self) -> None:
        """Cancel background work and wait for it; names being built keep their previous state."""
        self._closing = True
        tasks = [*self._background.values(), *self.solves.close(), *(t for _g, t in self._newest.values())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.builder.close()

    def last_spec(self, name: str) -> EnvSpec | None:
        """The spec of ``name``'s last good warm in this daemon's life (None after a restart)."""
        return self._specs.get(name)

    def forget(self, name: str) -> None:
        """``name`` was removed: drop what we remember of it (not its generation: a warm still in
        flight must not commit under a name that comes back)."""
        self._specs.pop(name, None)
        self.fresh.forget(name)
        self.kernels.withdraw(name)
        newest = self._newest.get(name)
        if newest is not None and newest[1].done():
            del self._newest[name]

    # -- solving (solves.py) ------------------------------------------------------------------

    def spec_key(self, spec: EnvSpec, contents: Mapping[str, str] | None = None) -> str:
        """The solve-cache key (``Solves.spec_key``)."""
        return self.solves.spec_key(spec, contents)

    async def resolve(self, spec: EnvSpec, *, update: bool = False, contents: Mapping[str, str] | None = None,
                      previous: Lock | None = None, update_names: tuple[str, ...] = ()) -> Lock:
        """The spec's lock, from the solve cache or one solve per spec_key (``Solves.resolve``)."""
        return await self.solves.resolve(spec, update=update, contents=contents, previous=previous,
                                         update_names=update_names)

    def previous_lock(self, record: NameRecord) -> Lock | None:
        """The lock of the env ``record`` points at now, if the store still has it."""
        if not record.env_key:
            return None
        try:
            return self.store.read_lock(record.env_key)
        except ProvisionError:
            return None

    # -- warming, in generations ----------------------------------------------------------------

    async def warm(self, record: NameRecord, *, update: bool = False, update_names: tuple[str, ...] = ()) -> None:
        """Make ``record``'s env ready; when a newer warm of the name supersedes this one, its outcome.

        ``update_names``: re-lock those packages against fresh repodata, the rest preferred as locked.
        """
        if record.kind in ("project", "file") and not update and not update_names and self.fresh.unchanged(record):
            self.store.touch_env(record.env_key or "")
            return
        await self._newest_of(record.name, lambda generation: self._warm(record, generation, update, update_names))

    async def install(self, record: NameRecord, lock: Lock) -> None:
        """Point ``record`` (a lockfile env) at ``lock``'s env, built if needed, as its newest warm."""
        recheck = self._lock_recheck(record, lock)
        await self._newest_of(record.name,
                              lambda generation: self._build(record, generation, _ready(lock), recheck=recheck))

    def _lock_recheck(self, record: NameRecord, lock: Lock) -> tuple[Callable[[], trust.Fingerprint], str]:
        source = record.source or ""
        return partial(lock_fingerprint, Path(source), self.engine.platform, lock), Path(source).name

    async def _newest_of(self, name: str, start: Callable[[int], Coroutine[Any, Any, None]]) -> None:
        """Run ``start(generation)`` as the name's newest warm (the one path that takes a generation)
        and answer with its outcome, or with that of a newer warm that superseded it."""
        if self._closing:
            raise ShuttingDownError("provisiond is shutting down", hint="run the command again once it is back")
        generation = self._generation[name] = self._generation.get(name, 0) + 1
        task = asyncio.create_task(start(generation))
        self._newest[name] = (generation, task)
        while True:
            try:
                await shared(task)
            except Exception:
                if self._generation.get(name) == generation:
                    raise
            else:
                if self._generation.get(name) == generation:
                    return
            newer = self._newest[name]  # superseded by an edit: answer with the newest warm
            if newer[1] is task:
                return
            generation, task = newer

    def _is_newest(self, name: str, generation: int) -> bool:
        return self._generation.get(name) == generation

    async def _warm(self, record: NameRecord, generation: int, update: bool,
                    update_names: tuple[str, ...] = ()) -> None:
        if record.kind in ("clone", "lock", "oci"):  # oci: pulled from a registry (daemon/oci)
            return await self._warm_snapshot(record, generation)
        source = Path(record.source or "")
        # Taken before reading the file: an edit during the build must not pass for the built spec.
        signature = self.fresh.signature(record)
        self._reading[record.name] = (generation, signature)
        try:
            spec_file = spec_file_of(source) if record.kind == "project" else source
            spec = await read_spec(spec_file)
        except SpecError as exc:
            if record.kind == "file" and record.env_key and not source.exists():
                return  # a snapshot whose file is gone keeps serving
            if self._is_newest(record.name, generation):
                self.store.update_name(record.name, status="failed", error=exc.message)
                kept = " (the previous env stays active)" if record.env_key else ""
                self.gate.notify(record, f"{exc.message}{kept}", f"provisionctl show {record.name}")
            raise
        fingerprint = partial(self.gate.fingerprint, spec, record.source or "", record.kind)
        allowed = await asyncio.to_thread(fingerprint)
        self.gate.check(record, allowed, spec_file.name)
        # Local pip projects (`./mypkg`, `-e .`) are keyed by content; their files join the fast path's stat()s.
        contents, covered = await asyncio.to_thread(local_contents, spec) if spec.pip else ({}, ())
        files = tuple(dict.fromkeys((*allowed.files, *covered)))
        lock_file = lock_path_of(spec_file)
        if record.kind != "project" or not self.locker.uses_project_lock(lock_file):
            # After an edit only: the same request again (its cached solve expired) is solved anew, so
            # that solve_ttl brings a channel's new versions (docs/store.md, "Re-locking").
            edited = update_names or record.spec_key != self.spec_key(spec, contents)
            previous = self.previous_lock(record) if edited else None
            await self._build(record, generation,
                              lambda: self.resolve(spec, update=update, contents=contents, previous=previous,
                                                   update_names=update_names),
                              spec=spec, signature=(signature, files), recheck=(fingerprint, spec_file.name),
                              contents=contents)
            return
        project_lock = ProjectLockUse(self.locker, spec, lock_file, update, update_names)

        async def locked() -> Lock:  # from conda-lock.yml as it is, or re-locked (written once built)
            lock = await project_lock.lock()
            self.store.cache_lock(self.spec_key(spec, contents), lock)  # the warm fast path asks the solve's age
            return lock
        await self._build(record, generation, locked, spec=spec, signature=(signature, files),
                          recheck=(fingerprint, spec_file.name), contents=contents)
        if self._is_newest(record.name, generation) and await project_lock.write():
            self.fresh.restat(record.name, lock_file)
            self.gate.relocked(record, allowed, await asyncio.to_thread(fingerprint))

    async def _warm_snapshot(self, record: NameRecord, generation: int) -> None:
        """Clones and lockfile envs: re-read the lockfile if it is still there, else rebuild from our lock."""
        if record.kind == "lock" and record.source and Path(record.source).is_file():
            environment = self.lock_environment(record)
            lock = await asyncio.to_thread(load_lockfile, Path(record.source), self.engine.platform, environment)
            recheck = self._lock_recheck(record, lock)
            self.gate.check(record, await asyncio.to_thread(recheck[0]), recheck[1])  # a pixi.lock: parsed again
            return await self._build(record, generation, _ready(lock), recheck=recheck)
        if record.env_key and self.store.find_env(record.env_key) is None:
            return await self._build(record, generation, _ready(self.store.read_lock(record.env_key)))
        if record.env_key:
            self.write_name_activation(record.name, record.env_key)  # a no-op unless missing or stale

    def lock_environment(self, record: NameRecord) -> str | None:
        """The pixi.lock environment a lockfile env was created from: its built Lock's meta keeps it."""
        try:
            return self.store.read_lock(record.env_key).meta.get("environment") if record.env_key else None
        except (EnvNotFoundError, LockFormatError, OSError):
            return None

    async def _build(self, record: NameRecord, generation: int, locked: Any, *, spec: EnvSpec | None = None,
                     signature: tuple[tuple[Any, ...], tuple[str, ...]] = ((), ()),
                     recheck: tuple[Callable[[], trust.Fingerprint], str] | None = None,
                     contents: Mapping[str, str] | None = None) -> None:
        """Solve (``locked()``), build, and re-point the name, unless a newer warm came meanwhile.

        ``recheck``: how to fingerprint the content again, and its file's name. A deny or a new
        ``.env`` name may have come during the build: the fingerprint is taken again (in a thread),
        and the check and the commit then run with no await between them.
        """
        name = record.name
        self.store.update_name(name, status="building", error=None)
        try:
            lock = await locked()
            with self._pinned(lock.env_key):  # published, not yet named: gc must not take it
                await self.builder.ensure(lock, name)
                fingerprint = await asyncio.to_thread(recheck[0]) if recheck is not None else None
                if not self._is_newest(name, generation):
                    log.info("warm of %r superseded by a newer one: %s not used", name, lock.env_key[:16])
                    return
                if fingerprint is not None and recheck is not None:
                    self.gate.check(record, fingerprint, recheck[1])
                self._commit(record, lock, spec, signature, contents)
        except BlockedError:
            raise  # the gate has set the name's state and notice
        except (asyncio.CancelledError, ShuttingDownError):
            if self._is_newest(name, generation):
                self._keep_state(record)
            raise
        except BaseException as exc:
            if self._is_newest(name, generation):
                message = exc.message if isinstance(exc, ProvisionError) else "interrupted"
                # The previous env (if any) stays active: env_key is left as it was.
                self.store.update_name(name, status="failed", error=message)
                if isinstance(exc, ProvisionError):
                    self.gate.notify(record, f"the build failed: {message}",
                                     f"provisionctl log {record.source or name}")
            raise

    def _commit(self, record: NameRecord, lock: Lock, spec: EnvSpec | None,
                signature: tuple[tuple[Any, ...], tuple[str, ...]], contents: Mapping[str, str] | None) -> None:
        """Re-point the name at ``lock``'s published env, and write its activation."""
        name = record.name
        key = self.spec_key(spec, contents) if spec is not None else None
        self.store.update_name(name, status="ready", error=None, env_key=lock.env_key, spec_key=key)
        if spec is not None:
            self._specs[name] = spec
            if signature[0] and key is not None:  # (the inputs' stat()s, the files they reached)
                self.fresh.remember(name, signature[0], lock.env_key, key, signature[1])
        if record.status == "gone":  # its directory is back: the watcher must watch it again
            self.projects_changed.set()
        self.write_name_activation(name, lock.env_key, spec.variables if spec is not None else None)
        if record.kind == "project" and record.source:
            self._write_project_activation(self.store.get_name(name), spec)
            self.gate.clear(record.source)
        conda_envs.sync(self.settings, self.store.list_names())  # ~/.conda/environments.txt

    def _keep_state(self, before: NameRecord) -> None:
        """A warm stopped by shutdown is not the name's failure: it keeps the state it had."""
        status = before.status
        if status == "building":  # another warm's mark: settle it as the start-up sweep would
            status = "ready" if before.env_key else "new"
        self.store.update_name(before.name, status=status, error=before.error)

    @contextmanager
    def _pinned(self, env_key: str) -> Iterator[None]:
        self._pins[env_key] += 1
        try:
            yield
        finally:
            self._pins[env_key] -= 1
            if not self._pins[env_key]:
                del self._pins[env_key]

    def ready_prefix(self, name: str) -> str | None:
        """The prefix of ``name`` if a warm would change nothing (freshness.py), else None."""
        return self.fresh.ready_prefix(name)

    # -- background work (the watcher, start-up, allow) ---------------------------------------------

    def warm_in_background(self, name: str) -> None:
        """Warm ``name`` soon; a request during a running warm runs once more after it (coalesced)."""
        if name in self._background:
            self._again.add(name)
            return
        if self._closing:
            return
        self._background[name] = asyncio.create_task(self._quiet_warm(name))

    async def _quiet_warm(self, name: str) -> None:
        try:
            while True:
                self._again.discard(name)
                record = self.store.find_name(name)
                if record is None:
                    return  # removed meanwhile
                if self._in_flight_for(record):
                    return  # a warm already reading these very files will answer (e.g. an `update`)
                try:
                    await self.warm(record)
                except EnvNotFoundError:
                    return
                except ProvisionError as exc:
                    log.warning("background build of %r failed: %s", name, exc.message)
                except Exception:  # a bug: say so, and keep warming the others
                    log.exception("background build of %r failed", name)
                if name not in self._again:
                    return
        finally:
            self._background.pop(name, None)

    def _in_flight_for(self, record: NameRecord) -> bool:
        """True when the name's newest warm is running and read the files as they are now."""
        newest, reading = self._newest.get(record.name), self._reading.get(record.name)
        return (newest is not None and not newest[1].done() and reading is not None and reading[0] == newest[0]
                and bool(reading[1]) and reading[1] == self.fresh.signature(record))

    def referenced_files(self, name: str) -> set[str]:
        """The files beside ``name``'s spec whose change rebuilds it (``inputs.referenced_files``)."""
        spec = self._specs.get(name)
        return referenced_files(spec) if spec is not None else set()

    def refresh_activation(self, name: str) -> None:
        """Re-render a project's activation (its .env changed); no rebuild."""
        record = self.store.find_name(name)
        if record is None or record.kind != "project" or not record.env_key or not record.source:
            return
        spec = self._specs.get(name)
        # A new name in .env changes the shell: the full warm reads the file and checks trust.
        if spec is None or record.status == "blocked" or not self.gate.dotenv_allowed(record.source):
            self.warm_in_background(name)
            return
        self._write_project_activation(record, spec)

    # -- in use, remove, gc -----------------------------------------------------------------------

    def in_use(self, env_key: str, *, leases: set[str] | None = None) -> str | None:
        """Why ``env_key`` must stay (``referenced``, ``building``, ``leased``), or None."""
        if self.store.names_of(env_key):
            return "referenced"
        if env_key in self.builder.busy or env_key in self._pins:
            return "building"
        if env_key in (gc.leased(self.settings.paths) if leases is None else leases):
            return "leased"
        return None

    async def delete_env(self, env_key: str) -> bool:
        """Delete an env nothing uses; the check and the unpublish are one step (no await between)."""
        if self.in_use(env_key) is not None:
            return False
        trash = self.store.unpublish(env_key)
        if trash is not None:
            await asyncio.to_thread(gc.delete_paths, [trash])
        return True

    async def gc(self, *, dry_run: bool, older_than_days: float | None = None,
                 cache_budget_bytes: int | None = None) -> dict[str, Any]:
        """Remove unused envs not used for N days; prune the package cache to a budget (gc.py)."""
        days = self.settings.gc_days if older_than_days is None else older_than_days
        budget = self.settings.cache_budget_bytes if cache_budget_bytes is None else cache_budget_bytes
        report = await gc.collect(self.store, dry_run=dry_run, older_than_days=days, cache_budget_bytes=budget,
                                  in_use=self.in_use, pinned=self.builder.pinned_packages)
        if not dry_run:
            self.kernels.sync()  # a spec whose env went goes too
        return report

    # -- activation (rendered when an env or a project changes; read by shells without us) -----

    def _write_project_activation(self, record: NameRecord, spec: EnvSpec | None) -> None:
        """Render a project's activation (variables, .env values) where its shell hook looks."""
        prefix = self.store.find_env(record.env_key) if record.env_key else None
        if record.source is None or prefix is None or record.env_key is None:
            return
        try:
            if spec is None:  # .env edited, no spec in memory (e.g. after a restart): reuse the last render
                activation.refresh_project_activation(self.settings.paths, record.source,
                                                      prompt=self.settings.changeps1)
            else:
                activation.write_project_activation(self.settings.paths, record.source, record.name,
                                                    record.env_key, prefix, spec.variables,
                                                    prompt=self.settings.changeps1)
        except OSError as exc:
            log.error("cannot write the activation of project %s: %s", record.source, exc)

    def write_name_activation(self, name: str, env_key: str,
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
            activation.write_name_activation(paths, name, env_key, prefix, variables, prompt=self.settings.changeps1,
                                             project=record.source if record.kind == "project" else None)
        except OSError as exc:  # the env is ready; the next warm writes it again
            log.error("cannot write the activation of env %r: %s", name, exc)
        self.kernels.publish(name)  # the same kernel name, now pointing at this prefix


def _ready(lock: Lock) -> Any:
    """A ``locked()`` for a lock already known (lockfiles, clones): nothing to solve."""
    async def locked() -> Lock:
        return lock
    return locked
