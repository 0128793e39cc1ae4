"""Locking: solve-only locks for any platform, incremental re-locks, and a project's conda-lock.yml.

- ``relock``: the answer for an edited file given the previous lock (``domain/relock.py``): the
  previous packages when they still satisfy it (no solver), else a solve that prefers them.
- ``lock_file``: ``provisionctl lock``: every requested platform, each solved with that
  platform's virtual packages (this machine's detected ones for its own platform).
- ``for_project``: a project with a ``conda-lock.yml`` is installed from it while its input hash
  matches the environment file; otherwise it is re-locked (previous packages preferred) and the
  new lock is written back, atomically, once the env is built (docs/lockfiles.md); a warm's
  round of it is a ``ProjectLockUse``.

Other platforms and preferred packages need rattler's solver: with the micromamba engine, a
rattler engine is made for them on first use (``solver``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from provisiond.config.settings import Settings
from provisiond.domain.errors import SpecError
from provisiond.domain.lock import Lock
from provisiond.domain.projectlock import LOCK_FILE, ProjectLock, input_hash, parse, render
from provisiond.domain.relock import relock
from provisiond.domain.spec import EnvSpec, parse_spec
from provisiond.domain.urls import mask
from provisiond.engines import virtual
from provisiond.engines.base import Engine
from provisiond.engines.pip import find_uv, resolve_pip
from provisiond.engines.rattler import RattlerEngine
from provisiond.store.files import write_atomic

log = logging.getLogger(__name__)


def lock_path_of(spec_file: Path) -> Path:
    """The project lock beside an environment file."""
    return spec_file.with_name(LOCK_FILE)


# Project locks parsed or written, by path: (stat signature, lock). YAML parsing of a big lock costs
# 100+ ms in pure Python; a lock the daemon wrote itself is never parsed again while it is unchanged.
_PARSED: dict[str, tuple[tuple[int, int, int], ProjectLock]] = {}
_PARSED_MAX = 256
MAX_LOCK_BYTES = 64 << 20


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _remember(path: Path, parsed: ProjectLock) -> None:
    signature = _stat(path)
    if signature is None:
        return
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[str(path)] = (signature, parsed)


def read_project_lock(path: Path) -> ProjectLock | None:
    """The conda-lock.yml at ``path``, or None when there is none."""
    known = _PARSED.get(str(path))
    if known is not None and known[0] == _stat(path):
        return known[1]
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_LOCK_BYTES:
        raise SpecError(f"{path}: not a regular file of at most {MAX_LOCK_BYTES >> 20} MiB",
                        hint="a conda-lock.yml is a text file; is this the right one?")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None
    parsed = parse(text, str(path))
    _remember(path, parsed)
    return parsed


def spec_for(spec: EnvSpec, platform: str, current: str) -> EnvSpec:
    """``spec`` as read for ``platform``: its ``sel(...)`` lines evaluated for that platform."""
    if platform == current or not spec.source or not Path(spec.source).is_file():
        return spec
    text = Path(spec.source).read_text(encoding="utf-8")
    if "sel(" not in text:
        return spec
    return parse_spec(text, source=spec.source, project_dir=spec.project_dir, platform=platform)


class Locker:
    """Solves that know about previous locks and other platforms."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._solver: RattlerEngine | None = engine if isinstance(engine, RattlerEngine) else None
        self.written: dict[str, str] = {}  # project lock path -> the text the daemon last wrote there

    def wrote(self, path: Path) -> bool:
        """True when ``path`` holds what we last wrote to it (the watcher ignores our own writes)."""
        text = self.written.get(str(path))
        try:
            return text is not None and path.read_text(encoding="utf-8") == text
        except (OSError, UnicodeDecodeError):
            return False

    @property
    def solver(self) -> RattlerEngine:
        """The engine that solves for any platform with preferred packages (rattler)."""
        if self._solver is None:
            self._solver = RattlerEngine(self.settings)
        return self._solver

    def virtual_for(self, platform: str) -> list[str]:
        return virtual.for_platform(platform, self.engine.platform, self.engine.virtual_packages())

    def _channel_url(self, channel: str) -> str:
        return channel if "://" in channel else self.solver.channel(channel).base_url

    async def relock(self, spec: EnvSpec, previous: Lock | None, *, platform: str | None = None,
                     update: bool = False, update_names: Sequence[str] = ()) -> Lock:
        """The lock of ``spec`` for ``platform``: ``previous`` kept when it satisfies the file,
        else a solve preferring its packages (all of them, or all but ``update_names``);
        ``update`` without names: a fresh solve against fresh repodata, nothing preferred."""
        started = time.perf_counter()
        platform = platform or self.engine.platform
        spec = replace(spec, dependencies=tuple(sorted(set(spec.dependencies))))  # the canonical order
        virtual_packages = self.virtual_for(platform)
        locked: tuple[Any, ...] = ()
        extend: tuple[str, ...] = ()
        how = "solved"
        if previous is not None and previous.platform == platform and not update and not update_names:
            previous = replace(previous, channels=tuple(self._channel_url(c) for c in previous.channels))
            answer = relock(previous, spec.dependencies, platform=platform, channels=self.engine.channel_urls(spec),
                            channel_priority=spec.channel_priority, virtual_packages=virtual_packages)
            if answer.kind == "keep" and answer.lock is not None and not spec.pip:
                log.info("re-locked %s for %s without a solve: %s (%.2f ms)", spec.source or "spec", platform,
                         answer.reason, (time.perf_counter() - started) * 1000)
                return answer.lock
            how = f"solved ({answer.reason})"
            # micromamba solves its own platform itself, with nothing preferred (it cannot be told)
            if answer.prefer and (isinstance(self.engine, RattlerEngine) or platform != self.engine.platform):
                locked, how = previous.packages, f"solved preferring the previous lock ({answer.reason})"
                extend = answer.new
        elif previous is not None and update_names:
            names = {n.lower() for n in update_names}
            locked = tuple(p for p in previous.packages if p.name not in names)
            how = f"solved for {', '.join(sorted(names))}, the rest preferred as locked"
        solver = self.solver if platform != self.engine.platform or locked else self.engine
        refresh = update or bool(update_names)
        if isinstance(solver, RattlerEngine):
            lock = await solver.solve(spec, refresh=refresh, max_age=self.settings.solve_ttl, platform=platform,
                                      virtual_packages=virtual_packages, locked=locked, extend=extend)
        else:  # micromamba, for this platform and nothing preferred
            lock = await solver.solve(spec, refresh=refresh, max_age=self.settings.solve_ttl)
        lock = replace(lock, meta={**lock.meta, "channel_priority": spec.channel_priority})
        if spec.pip:
            if platform != self.engine.platform:
                raise SpecError(f"{spec.source or 'spec'}: a pip: section is locked for this machine's platform "
                                f"({self.engine.platform}) only, not {platform}")
            lock = await resolve_pip(spec, lock, uv=find_uv(), cache_dir=self.settings.paths.uv_cache,
                                     virtual_packages=virtual_packages, refresh=update,
                                     on_line=lambda line: log.debug("pip: %s", mask(line)))
        log.info("%s: %s for %s, %d packages in %.1f ms", spec.source or "spec", how, platform, len(lock.packages),
                 (time.perf_counter() - started) * 1000)
        return lock

    async def lock_all(self, spec: EnvSpec, platforms: Sequence[str], previous: ProjectLock | None, *,
                       update: bool = False, update_names: Sequence[str] = (), lock_dir: str | None = None
                       ) -> tuple[ProjectLock, str]:
        """Every platform locked (the previous lock's packages kept or preferred), and the file's text.

        ``lock_dir``: where the lock goes (default: beside the file); its ``sources`` are relative to it.
        """
        current = self.engine.platform
        specs = {p: await asyncio.to_thread(spec_for, spec, p, current) for p in platforms}
        locks = {}
        for platform in platforms:
            before = previous.locks.get(platform) if previous is not None else None
            locks[platform] = await self.relock(specs[platform], before, platform=platform, update=update,
                                                update_names=update_names)
        hashes = {p: input_hash(specs[p], p) for p in platforms}
        source = spec.source or "environment.yml"
        sources = [os.path.relpath(source, lock_dir) if lock_dir and os.path.isabs(source) else
                   os.path.basename(source)]
        channels = self.engine.channel_urls(spec)
        text = render(locks, hashes, sources=sources, channels=channels, channel_priority=spec.channel_priority)
        return ProjectLock(locks=locks, hashes=hashes, channels=tuple(channels), sources=tuple(sources),
                           channel_priority=spec.channel_priority, generator="provisiond"), text

    def uses_project_lock(self, lock_file: Path) -> bool:
        """A project is warmed through its conda-lock.yml when it has one, or when we write them."""
        return lock_file.exists() or self.settings.write_project_locks

    def platforms_for(self, spec: EnvSpec, previous: ProjectLock | None, asked: Sequence[str] = ()) -> list[str]:
        """What to lock for: ``asked``, else the file's ``platforms:``, else the existing lock's, else ours."""
        chosen = list(asked) or list(spec.platforms) or (list(previous.platforms) if previous else [])
        return chosen or [self.engine.platform]

    async def for_project(self, spec: EnvSpec, lock_file: Path, previous: ProjectLock | None, *,
                          update: bool = False, update_names: Sequence[str] = ()
                          ) -> tuple[Lock, tuple[ProjectLock, str] | None]:
        """This machine's lock of a project, and the conda-lock.yml to write (None: keep the file)."""
        platform = self.engine.platform
        if previous is not None:
            if not update and not update_names and previous.current(platform, spec):
                log.info("%s: installing from %s as locked (its input hash matches): no solve", spec.source,
                         lock_file.name)
                return previous.lock_for(platform, str(lock_file)), None
            previous.lock_for(platform, str(lock_file))  # a lock for other platforms only: a clear error
        platforms = self.platforms_for(spec, previous)
        if platform not in platforms:
            platforms.append(platform)
        written = await self.lock_all(spec, platforms, previous, update=update, update_names=update_names)
        return written[0].locks[platform], written


def write_lock_file(path: Path, written: tuple[ProjectLock, str]) -> bool:
    """Write the lock's text atomically (temp file, fsync, rename); False when the file already says it."""
    parsed, text = written
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text, 0o644, sync=True)
    _remember(path, parsed)
    return True


@dataclass
class ProjectLockUse:
    """One warm's use of a project's conda-lock.yml: this machine's lock from the file as it is,
    or re-locked (``Locker.for_project``) and written back once the env is built."""

    locker: Locker
    spec: EnvSpec
    path: Path
    update: bool = False
    update_names: Sequence[str] = ()
    new: tuple[ProjectLock, str] | None = None  # the re-locked file, to write once built

    async def lock(self) -> Lock:
        previous = await asyncio.to_thread(read_project_lock, self.path)
        lock, self.new = await self.locker.for_project(self.spec, self.path, previous, update=self.update,
                                                       update_names=self.update_names)
        return lock

    async def write(self) -> bool:
        """Write the re-locked file; False when nothing was re-locked or the file already says it."""
        if self.new is None or not await asyncio.to_thread(write_lock_file, self.path, self.new):
            return False
        log.info("wrote %s", self.path)
        self.locker.written[str(self.path)] = self.new[1]  # the watcher ignores our own write
        return True
