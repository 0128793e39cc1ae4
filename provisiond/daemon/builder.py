"""The build queue: exactly one build per env_key, a global limit, a log and progress per build.

A build installs with the engine, installs pip pins, publishes atomically (store.py) and writes
the env-level activation. Every caller of ``ensure`` for the same env_key awaits the same task
(through ``asyncio.shield``, so one caller going away does not cancel it for the others).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

from provisiond.config.settings import Settings
from provisiond.domain.errors import OfflineError, ProvisionError, ShuttingDownError
from provisiond.domain.events import BuildEvents
from provisiond.domain.lock import Lock
from provisiond.domain.urls import mask
from provisiond.engines.base import Engine
from provisiond.engines.pip import find_uv, install_pip
from provisiond.shell import activation
from provisiond.store import retention, shared_cache
from provisiond.store.durable import finish_in_thread
from provisiond.store.store import Store

log = logging.getLogger(__name__)

# Set by a request that shows progress (provisionctl on a TTY); the build task created for it
# inherits the flag through its context and reports download/link events too.
detailed_progress: contextvars.ContextVar[bool] = contextvars.ContextVar("detailed_progress", default=False)

T = TypeVar("T")
CANCELLED = "provisiond stopped during the build (SIGTERM)"


async def shared(task: asyncio.Task[T]) -> T:
    """Await work that many callers share (a build, a solve), shielded from any one caller going away.

    Only ``close()`` at shutdown cancels shared work: a caller that was not cancelled itself gets
    ``ShuttingDownError`` (a 503 it can retry), not a bare cancellation.
    """
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.cancelled() and (current is None or not current.cancelling()):
            raise ShuttingDownError("provisiond is shutting down: the build was stopped, nothing changed",
                                    hint="run the command again once provisiond is back") from None
        raise


class _Slots:
    """At most ``limit`` builds at once; unlike a Semaphore the limit may change (SIGHUP)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held = 0
        self._waiters: list[asyncio.Future[None]] = []

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._held < self.limit:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                self._held += 1
                waiter.set_result(None)

    async def __aenter__(self) -> None:
        if self._held < self.limit and not self._waiters:
            self._held += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot, then cancelled: pass it on
                self._held -= 1
                self._wake()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._held -= 1
        self._wake()


class Builder:
    """Builds and publishes locks; at most ``settings.max_builds`` at once."""

    def __init__(self, store: Store, engine: Engine, settings: Settings) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.events = BuildEvents()
        self._builds: dict[str, asyncio.Task[Path]] = {}
        self._locks: dict[str, Lock] = {}  # env_key -> lock of each running build (its cache pins)
        self._slots = _Slots(settings.max_builds)
        self._closing = False

    def apply(self, settings: Settings) -> None:
        """Run with reloaded settings (SIGHUP); a lower ``max_builds`` lets running builds finish."""
        self.settings = settings
        self._slots.resize(settings.max_builds)

    async def _seed_cache(self, lock: Lock, on_line: Callable[[str], None]) -> None:
        """Link packages from conda's, mamba's or pixi's caches (``pkgs_dirs``) into ours; offline,
        refuse a build that would have to download (store/shared_cache.py)."""
        settings = self.settings
        if not settings.pkgs_dirs and not settings.offline:
            return
        seeded = await asyncio.to_thread(shared_cache.seed, settings.paths.pkgs, settings.pkgs_dirs, lock.packages,
                                         offline=settings.offline)
        for dist, cache in sorted(seeded.linked.items()):
            on_line(f"linked {dist} from {cache}")
        if settings.offline and seeded.missing:
            shown = ", ".join(seeded.missing[:5]) + (f" and {len(seeded.missing) - 5} more" if len(seeded.missing) > 5
                                                     else "")
            verb = "is" if len(seeded.missing) == 1 else "are"
            raise OfflineError(f"offline: {shown} {verb} in no package cache",
                               hint="connect and set offline = false (or start provisiond without --offline); "
                                    f"caches searched: ours and {', '.join(settings.pkgs_dirs) or 'no other'}")

    @property
    def busy(self) -> set[str]:
        """env_keys being built right now (gc and remove must leave them alone)."""
        return set(self._builds)

    def pinned_packages(self) -> set[str]:
        """Package-cache entries (``pkgs/<name>-<version>-<build>``) that running builds link from."""
        return {p.dist for lock in self._locks.values() for p in lock.packages}

    async def close(self) -> None:
        """Cancel builds in flight and wait (they leave only `.building/` garbage for the sweep)."""
        self._closing = True
        tasks = list(self._builds.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def ensure(self, lock: Lock, name: str | None = None) -> Path:
        """The published prefix of ``lock``: found in the store, or built once however many ask."""
        env_key = lock.env_key
        prefix = self.store.find_env(env_key)
        if prefix is not None:
            self.store.touch_env(env_key)
            return prefix
        task = self._builds.get(env_key)
        if task is None:
            if self._closing:
                raise ShuttingDownError("provisiond is shutting down: no new builds",
                                        hint="run the command again once provisiond is back")
            task = asyncio.create_task(self._build(lock, name))
            self._builds[env_key], self._locks[env_key] = task, lock  # pinned before any await
            task.add_done_callback(lambda _t: self._finished(env_key))
        return await shared(task)

    def _finished(self, env_key: str) -> None:
        self._builds.pop(env_key, None)
        self._locks.pop(env_key, None)
        if not self._closing:  # a row or two over the limits: cheap (retention.py); start-up prunes too
            retention.prune(self.store, self.settings)

    async def _build(self, lock: Lock, name: str | None) -> Path:
        """Build and publish ``lock``. Once its row exists, the build always ends: the row gets its
        status and reason, its event stream closes, and nothing half-built stays in sight."""
        env_key = lock.env_key
        async with self._slots:
            try:
                build = self.store.start_build(env_key, name)
            except sqlite3.Error as exc:
                raise self.store.disk_full(exc) or exc from None
            progress = self.events.open(build.id)
            log_file: TextIO | None = None
            build_dir: Path | None = None
            target = self.settings.paths.prefix(env_key)
            # micromamba: install at `target`, no rename. pip: uv writes the interpreter's path
            # into entry points, so the env must be at its final path when uv runs.
            in_place = self.engine.builds_in_place or bool(lock.pip)

            def on_line(line: str) -> None:
                line = mask(line)
                if log_file is not None:
                    log_file.write(line.rstrip("\n") + "\n")
                log.debug("build %d: %s", build.id, line.rstrip("\n"))

            started = time.perf_counter()
            try:
                progress.emit("solved", packages=len(lock.packages), pip=len(lock.pip))
                if name:
                    self.store.update_name(name, build_id=build.id)
                log_file = open(build.log, "a", buffering=1)  # noqa: SIM115 - closed in finally
                build_dir = self.store.new_build_dir(env_key)
                on_line(f"build {build.id}: env {env_key} ({len(lock.packages)} packages, engine {self.engine.name})")
                if in_place:  # a leftover without the marker is garbage; `create -y` must not meet it
                    await asyncio.to_thread(self.store.discard_in_place, target)
                await self._seed_cache(lock, on_line)
                # rattler installs into its first argument; micromamba uses it for scratch files only.
                install_dir = target if in_place and not self.engine.builds_in_place else build_dir
                # Per-package events cost rattler a Python call each (~10% of a warm-cache
                # install): only when the requester shows progress (see `detailed_progress`).
                await self.engine.install(lock, install_dir, target, on_line,
                                          progress if detailed_progress.get() else None)
                if lock.pip:
                    progress.emit("pip", packages=len(lock.pip))
                    await install_pip(lock, target, uv=find_uv(), cache_dir=self.settings.paths.uv_cache,
                                      on_line=on_line)
                progress.emit("publish")
                # Files to the disk, lock, marker, rename: in a thread (durable.py); then the row.
                if in_place:
                    prefix = await finish_in_thread(self.store.place_in_place, lock, target, on_line)
                    shutil.rmtree(build_dir, ignore_errors=True)  # held only the small explicit file
                else:
                    prefix = await finish_in_thread(self.store.place, lock, build_dir, on_line)
                self.store.add_env(lock, prefix)
                on_line(f"published {prefix} in {time.perf_counter() - started:.2f}s")
            except BaseException as exc:
                error = exc if isinstance(exc, asyncio.CancelledError) else (self.store.disk_full(exc) or exc)
                await self._end(build.id, error, on_line, build_dir, target if in_place else None)
                progress.emit("cancelled" if isinstance(error, asyncio.CancelledError) else "failed",
                              error=_message(error))  # always: followers of the stream must not wait
                if isinstance(error, ProvisionError) and not error.hint:
                    error.hint = f"see the build log: {build.log}"
                if error is exc:
                    raise
                raise error from None
            finally:
                if log_file is not None:
                    log_file.close()
            # Published: what follows is bookkeeping, and its failure does not unmake the env.
            progress.emit("activation")
            self._write_env_activation(env_key, prefix)
            try:
                self.store.touch_cache([p.dist for p in lock.packages])
                self.store.finish_build(build.id, "succeeded")
            except sqlite3.Error as exc:  # the start-up sweep ends the row
                log.error("build %d succeeded, but its row could not be updated: %s", build.id, exc)
            progress.emit("done", prefix=str(prefix))
            log.info("env %s ready at %s (build %d, %.2fs)", env_key[:16], prefix, build.id,
                     time.perf_counter() - started)
            return prefix

    async def _end(self, build_id: int, error: BaseException, on_line: Callable[[str], None],
                   build_dir: Path | None, in_place: Path | None) -> None:
        """A failed or cancelled build: say why, clean its directories, end its row. Nothing here may
        fail in turn (the disk may be full): what cannot be recorded is logged."""
        status = "cancelled" if isinstance(error, asyncio.CancelledError) else "failed"
        message = _message(error)
        try:
            on_line(f"build {status}: {message}")
        except OSError:
            pass
        if build_dir is not None:
            await asyncio.to_thread(shutil.rmtree, build_dir, True)
        if in_place is not None:
            await asyncio.to_thread(self.store.discard_in_place, in_place)
        try:
            self.store.finish_build(build_id, status, message)
        except sqlite3.Error as exc:  # "database or disk is full": the start-up sweep ends the row
            log.error("build %d %s (%s), and its row could not be updated: %s", build_id, status, message, exc)

    def _write_env_activation(self, env_key: str, prefix: Path) -> None:
        try:
            activation.write_env_activation(self.settings.paths, env_key, prefix)
        except OSError as exc:  # the env is published; the next warm writes it again
            log.error("cannot write the activation of env %s: %s", env_key[:16], exc)


def _message(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):  # only close() cancels: not a failure
        return CANCELLED
    return error.message if isinstance(error, ProvisionError) else f"{type(error).__name__}: {error}"
