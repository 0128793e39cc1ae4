"""Provisioner: the registry of named envs and projects, trust consent, export and clone.

Warming a name into an env (solve, build, publish, activation) and deciding what is in use belong
to ``lifecycle.Lifecycle``; this module turns requests into names and hands them over.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisiond.config.channels import effective_spec
from provisiond.config.settings import Settings
from provisiond.daemon.audit import Auditor
from provisiond.daemon.gate import TrustGate, project_dir
from provisiond.daemon.inputs import lock_fingerprint
from provisiond.daemon.lifecycle import Lifecycle, spec_file_of
from provisiond.daemon.locking import lock_path_of, read_project_lock, spec_for, write_lock_file
from provisiond.domain.errors import BadRequestError, BlockedError, EnvNotFoundError, ProvisionError
from provisiond.domain.exports import export
from provisiond.domain.lock import EnvKey, Lock
from provisiond.domain.lockfiles import kind_of, load_lockfile
from provisiond.domain.projectlock import input_hash
from provisiond.domain.spec import EnvSpec, load_spec, read_spec
from provisiond.engines.base import Engine
from provisiond.shell import activation
from provisiond.store import conda_envs
from provisiond.store.files import write_atomic
from provisiond.store.registry import NameRecord
from provisiond.store.store import Store

if TYPE_CHECKING:
    from provisiond.daemon.oci.ops import Transfers

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


def _view(record: NameRecord, prefix: str | None, projects: tuple[str, ...]) -> EnvView:
    return EnvView(name=record.name, kind=record.kind, source=record.source, status=record.status,
                   env_key=record.env_key, prefix=prefix, error=record.error, build_id=record.build_id,
                   projects=projects)


class Provisioner:
    """The core: names, projects and consent; never knows about HTTP or argv."""

    def __init__(self, store: Store, engine: Engine, settings: Settings) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.gate = TrustGate(store, settings)
        self.lifecycle = Lifecycle(store, engine, settings, self.gate)
        self.builder = self.lifecycle.builder
        self.events = self.builder.events
        self.auditor = Auditor(store, settings)  # OSV audit of the live envs (audit.py)
        # Set when projects are added or removed, so the watcher re-reads the set it watches.
        self.projects_changed = self.lifecycle.projects_changed
        self._startup: asyncio.Task[None] | None = None  # check_projects' warms

    @functools.cached_property
    def oci(self) -> Transfers:
        """push, pull and image (daemon/oci): made on first use."""
        from provisiond.daemon.oci.ops import Transfers

        return Transfers(self)

    def apply(self, settings: Settings) -> None:
        """Run with reloaded settings (SIGHUP); ``reload.reloaded`` kept those that need a restart."""
        self.settings = settings
        self.gate.settings = settings
        self.lifecycle.apply(settings)
        self.auditor.apply(settings)

    async def close(self) -> None:
        """Cancel background work and wait for it (builds in flight leave only `.building/` garbage).

        Names being built keep their previous state; requests waiting get ShuttingDownError (503).
        """
        if self._startup is not None:
            self._startup.cancel()
            await asyncio.gather(self._startup, return_exceptions=True)
        await self.lifecycle.close()

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
            fp = await asyncio.to_thread(self.gate.fingerprint, spec, str(directory), "project")
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
            activation.remove_name_activation(self.settings.paths, existing.name)
            self.lifecycle.kernels.withdraw(existing.name)
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
        self.lifecycle.forget(record.name)
        activation.remove_name_activation(self.settings.paths, record.name)
        if record.kind == "project":
            self.projects_changed.set()
            if record.source:
                self.gate.clear(record.source)
                activation.remove_project_activation(self.settings.paths, record.source)
        conda_envs.sync(self.settings, self.store.list_names())  # ~/.conda/environments.txt
        return view

    async def create(self, file: str, name: str | None = None, *, update: bool = False,
                     environment: str | None = None, content: str | None = None,
                     force: bool = False) -> EnvView:
        """`conda env create -f FILE [-n NAME]`: a named env from an environment.yml or a lockfile.

        A lockfile (@EXPLICIT, conda-lock.yml v1, pixi.lock) is installed without solving;
        ``environment`` picks one of a pixi.lock's (the Lock's meta keeps it for later warms). With
        ``content`` (a file only the client can read, such as ``<(...)``), the text is kept in the
        store (``sources/<sha256>/``) and the name follows that copy. An existing named env is
        replaced only with ``force``; a failure leaves no new name behind and gives an existing one
        back its file (its env, still served, was never replaced).
        """
        if "\0" in file:
            raise BadRequestError(f"{file!r} is not a path")
        path = self._keep(file, content) if content is not None else Path(file).expanduser().resolve()
        kind = kind_of(path)
        if environment is not None and kind == "spec":
            raise BadRequestError(f"{file}: --environment is for pixi.lock files, not environment files")
        spec = await read_spec(path) if kind == "spec" else None
        name = name or (spec.name if spec else None)
        if not name:
            raise BadRequestError(f"{file}: the file has no 'name:'", hint="give one with -n NAME")
        check_name(name)
        taken = self.store.find_name(name)
        if taken is not None and taken.kind == "project":
            raise BadRequestError(f"the name {name!r} is already used by project {taken.source}",
                                  hint="choose another name with -n NAME")
        if taken is not None and not force:
            raise BadRequestError(f"an env named {name!r} exists already (from {taken.source})",
                                  hint="replace it with --force (it is served until the new one is ready), "
                                       "or choose another name with -n NAME")
        try:
            if spec is not None:
                # `create -f FILE` is consent for that file's content.
                self.gate.consent(await asyncio.to_thread(self.gate.fingerprint, spec, str(path), "file"))
                self.store.add_name(name, "file", str(path))
                await self.lifecycle.warm(self.store.get_name(name), update=update)
                return self.view(name)
            lock = await asyncio.to_thread(load_lockfile, path, self.engine.platform, environment)
            self.gate.consent(await asyncio.to_thread(lock_fingerprint, path, self.engine.platform, lock))
            self.store.add_name(name, "lock", str(path))
            await self.lifecycle.install(self.store.get_name(name), lock)
            return self.view(name)
        except BaseException as exc:
            if taken is None:
                # A deny while it built keeps the name, blocked: `allow FILE` builds it then.
                if self.store.find_name(name) is not None and not isinstance(exc, BlockedError):
                    self.remove(name)
            else:
                self.store.add_name(name, taken.kind, taken.source)  # its file back; its env was kept
            raise

    def _keep(self, file: str, content: str) -> Path:
        """Store the text of a file the client sent; its path (same text, same path)."""
        base = os.path.basename(file)
        # The lockfile kinds are told by name first (kind_of); anything else is read by its content.
        keep = base if base == "pixi.lock" or base.endswith(("-lock.yml", "-lock.yaml")) else "environment.yml"
        path = self.settings.paths.home / "sources" / hashlib.sha256(content.encode()).hexdigest()[:32] / keep
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, content, 0o644)
        return path

    def cancel(self, name_or_path: str) -> list[int]:
        """Stop the running builds of a name (``provisionctl cancel``): the ids of those stopped."""
        record = self._lookup(name_or_path)
        running = [b for b in self.store.list_builds("running")
                   if b.name == record.name or (record.build_id is not None and b.id == record.build_id)]
        return [b.id for b in running if self.lifecycle.builder.cancel(b.env_key)]

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
        self.lifecycle.write_name_activation(target, record.env_key,
                                             activation.name_variables(self.settings.paths, record.name))
        return self.view(target)

    async def remove_env(self, name_or_path: str) -> tuple[EnvView, bool]:
        """Remove a name; delete its env only when nothing else uses it (``Lifecycle.in_use``).

        A leased env (a running `provisionctl run`, cold-start or shell) is left to gc.
        """
        record = self._lookup(name_or_path)
        view = self.remove(record.name)
        return view, bool(record.env_key) and await self.lifecycle.delete_env(record.env_key or "")

    def export(self, name_or_path: str, *, fmt: str = "yml", no_builds: bool = False,
               from_history: bool = False) -> str:
        """The env as environment.yml, @EXPLICIT or conda-lock text (see exports.py)."""
        record = self._lookup(name_or_path)
        lock = self.lock_of(record.name)
        spec = self._spec_of(record)
        if spec is not None:  # the channels it was solved with, .condarc's included (config/channels.py)
            spec = effective_spec(spec, self.settings)
        return export(lock, name=record.name, fmt=fmt, no_builds=no_builds, from_history=from_history,
                      spec=spec, channel_alias=self.settings.channel_alias)

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
        return self.lifecycle.last_spec(record.name) or load_spec(path)

    # -- warming (lifecycle.py) ----------------------------------------------------------------

    async def warm(self, name_or_path: str, *, update: bool = False) -> EnvView:
        """Make a named env (or a project, by path) ready; return it with its prefix."""
        record = self._lookup(name_or_path)
        await self.lifecycle.warm(record, update=update)
        return self.view(record.name)

    async def update(self, name_or_path: str, packages: list[str]) -> EnvView:
        """`provisionctl update`: re-lock ``packages`` against fresh repodata, the rest preferred as
        locked; no packages: re-lock everything. A project's conda-lock.yml is written back."""
        record = self._lookup(name_or_path)
        if record.kind not in ("project", "file"):
            raise BadRequestError(f"{record.name!r} was made from a {'lockfile' if record.kind == 'lock' else 'clone'}",
                                  hint="update the file it came from, then create it again")
        previous = self.lifecycle.previous_lock(record)
        names = tuple(dict.fromkeys(p.strip().lower() for p in packages))
        missing = [n for n in names if previous is None or all(p.name != n for p in previous.packages)]
        if missing:
            raise BadRequestError(f"{', '.join(missing)}: not in {record.name!r}'s env",
                                  hint="add it to the environment file instead")
        await self.lifecycle.warm(record, update=not names, update_names=names)
        return self.view(record.name)

    async def lock(self, path: str, platforms: list[str], *, output: str | None = None,
                   check: bool = False) -> dict[str, Any]:
        """`provisionctl lock`: solve ``path``'s environment file for each platform, no download or
        install, and write conda-lock v1 (``output``, default conda-lock.yml beside it).
        ``check``: only say whether that lock is current for the file (no solve, nothing written)."""
        spec_file = self._spec_file(path)
        spec = await read_spec(spec_file)
        target = Path(output).expanduser().resolve() if output else lock_path_of(spec_file)
        previous = await asyncio.to_thread(read_project_lock, target)
        chosen = self.lifecycle.locker.platforms_for(spec, previous, platforms)
        answer: dict[str, Any] = {"file": str(target), "source": str(spec_file), "platforms": chosen}
        if check:
            platform = self.engine.platform
            specs = [await asyncio.to_thread(spec_for, spec, p, platform) for p in chosen]
            stale = [p for p, s in zip(chosen, specs, strict=True)
                     if previous is None or previous.hashes.get(p) != input_hash(s, p) or p not in previous.locks]
            return {**answer, "current": not stale, "stale": stale, "exists": previous is not None}
        new = await self.lifecycle.locker.lock_all(spec, chosen, previous, lock_dir=str(target.parent))
        written = await asyncio.to_thread(write_lock_file, target, new)
        locks = new[0].locks
        return {**answer, "written": written, "packages": {p: len(lock.packages) for p, lock in locks.items()},
                "env_keys": {p: lock.env_key for p, lock in locks.items()}}

    def _spec_file(self, path: str) -> Path:
        """The environment file named by a path (a file, or a project dir) or by an env's name."""
        if "\0" in path:
            raise BadRequestError(f"{path!r} is not a path")
        record = self.store.find_name(path) if "/" not in path else None
        if record is not None and record.kind in ("project", "file") and record.source:
            target = Path(record.source)
        else:
            target = Path(path).expanduser().resolve()
        if target.is_dir():
            return spec_file_of(target)
        if kind_of(target) != "spec":
            raise BadRequestError(f"{target}: a lockfile, not an environment file", hint="lock the environment.yml")
        return target

    def warm_in_background(self, name: str) -> None:
        self.lifecycle.warm_in_background(name)

    async def check_projects(self) -> tuple[int, int]:
        """At start-up: files may have changed while we were down, so look at every project.

        An unchanged one (its persisted signature still holds: ``stat()`` only) costs nothing; the
        others are warmed in the background, ``max_builds`` at a time. The loop is yielded to after
        each project, so requests are answered while hundreds are checked. Returns (unchanged, warmed).
        """
        unchanged, stale = 0, []
        for record in self.store.list_names("project"):
            if record.status != "gone":
                if self.lifecycle.fresh.unchanged(record):
                    unchanged += 1
                else:
                    stale.append(record.name)
            await asyncio.sleep(0)
        log.info("start-up check of %d projects: %d unchanged, %d warming", unchanged + len(stale), unchanged,
                 len(stale))
        if stale:
            self._startup = asyncio.create_task(self._warm_few_at_a_time(stale))
        return unchanged, len(stale)

    async def _warm_few_at_a_time(self, names: list[str]) -> None:
        """Warm ``names``, ``max_builds`` at a time: hundreds started at once (the first start after an
        upgrade, or a changed setting) would each parse and fingerprint at once and crowd out requests."""
        slots = asyncio.Semaphore(max(1, self.settings.max_builds))

        async def one(name: str) -> None:
            async with slots:
                record = self.store.find_name(name)
                if record is None or record.status == "gone":
                    return
                try:
                    await self.lifecycle.warm(record)
                except ProvisionError as exc:
                    log.warning("start-up build of %r failed: %s", name, exc.message)
                except Exception:  # a bug: say so, and keep warming the others
                    log.exception("start-up build of %r failed", name)

        await asyncio.gather(*(one(name) for name in names))
        log.info("start-up warms done: %d projects", len(names))

    def ready_prefix(self, name: str) -> str | None:
        return self.lifecycle.ready_prefix(name)

    def referenced_files(self, name: str) -> set[str]:
        return self.lifecycle.referenced_files(name)

    def refresh_activation(self, name: str) -> None:
        self.lifecycle.refresh_activation(name)

    def mark_gone(self, name: str) -> None:
        """A project whose directory disappeared: keep its env, stop building it."""
        self.store.update_name(name, status="gone", error="the project directory no longer exists")

    async def gc(self, *, dry_run: bool, older_than_days: float | None = None,
                 cache_budget_bytes: int | None = None) -> dict[str, Any]:
        return await self.lifecycle.gc(dry_run=dry_run, older_than_days=older_than_days,
                                       cache_budget_bytes=cache_budget_bytes)

    # -- trust (gate.py) -------------------------------------------------------------------------

    async def allow(self, path: str) -> dict[str, Any]:
        """`provisionctl allow`: trust the current content of a project dir (or env file), then build it."""
        target = self.gate.target(path)
        if target.is_dir():
            spec = await read_spec(spec_file_of(target))
            fp = await asyncio.to_thread(self.gate.fingerprint, spec, str(target), "project")
        elif kind_of(target) == "spec":
            fp = await asyncio.to_thread(self.gate.fingerprint, await read_spec(target), str(target), "file")
        else:
            # A pixi.lock's default environment may not exist: then its first one (the fingerprint covers all).
            environment = next((self.lifecycle.lock_environment(r) for r in self.store.list_names("lock")
                                if r.source == str(target)), None)
            lock = await asyncio.to_thread(load_lockfile, target, self.engine.platform, environment)
            fp = await asyncio.to_thread(lock_fingerprint, target, self.engine.platform, lock)
        self.gate.consent(fp)
        if target.is_dir():
            names = [(await self.add_project(str(target))).name]
        else:
            names = [r.name for r in self.store.list_names() if r.kind in ("file", "lock") and r.source == str(target)]
        for name in names:
            self.warm_in_background(name)
        return {"path": str(target), "digest": fp.digest, "names": names}

    def find(self, name_or_path: str) -> NameRecord:
        """The name record of a name, or of a project by its path; EnvNotFoundError otherwise."""
        return self._lookup(name_or_path)

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
        projects = tuple(self.store.projects_of(record.env_key)) if record.env_key else ()
        return _view(record, str(prefix) if prefix else None, projects)

    def list(self, kind: str | None = None) -> list[EnvView]:
        """Every name (of ``kind``) as ``view`` shows it, in one pass: two queries and a stat per env."""
        records = self.store.list_names()
        prefixes = self.store.env_prefixes()
        projects: dict[str, list[str]] = {}
        for r in records:  # ordered by name, as view()'s query orders them
            if r.kind == "project" and r.env_key and r.source:
                projects.setdefault(r.env_key, []).append(r.source)
        present: dict[str, str | None] = {}
        views = []
        for r in records:
            if kind is not None and r.kind != kind:
                continue
            prefix = None
            if r.env_key:
                if r.env_key not in present:
                    found = prefixes.get(r.env_key)
                    present[r.env_key] = found if found is not None and Path(found).is_dir() else None
                prefix = present[r.env_key]
            views.append(_view(r, prefix, tuple(projects.get(r.env_key, ())) if r.env_key else ()))
        return views

    def lock_of(self, name: str) -> Lock:
        record = self.store.get_name(name)
        if not record.env_key:
            raise EnvNotFoundError(f"env {name!r} has not been built yet", hint=f"run: provisionctl warm {name}")
        return self.store.read_lock(EnvKey(record.env_key))
