"""Watch registered projects with watchfiles (events, no polling) and rebuild in the background.

Each project directory is watched non-recursively: editors save by writing a temp file and
renaming it, by truncating and writing, or by deleting and recreating, and all of these show up as
events on the directory, not on the old file's inode.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path

from watchfiles import Change, awatch

from provisiond.config.locations import SPEC_FILES
from provisiond.config.settings import Settings
from provisiond.daemon.provisioner import Provisioner
from provisiond.daemon.waiting import first_of

log = logging.getLogger(__name__)

SECRETS_FILE = ".env"


async def prepare() -> None:
    """watchfiles waits through anyio, whose first use imports its asyncio backend (about 90 ms of
    the loop): done before the socket opens, so the first requests are not held behind it."""
    import anyio.to_thread

    await anyio.to_thread.run_sync(lambda: None)


class ProjectWatcher:
    """Feeds file changes of registered projects to the provisioner."""

    def __init__(self, provisioner: Provisioner, *, debounce_ms: int = 1600, step_ms: int = 100) -> None:
        self.provisioner = provisioner
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self._reconfigured = asyncio.Event()

    def apply(self, settings: Settings) -> None:
        """Watch with reloaded debounce/step settings (SIGHUP): the watch restarts if they changed."""
        if (settings.watch_debounce_ms, settings.watch_step_ms) != (self.debounce_ms, self.step_ms):
            self.debounce_ms, self.step_ms = settings.watch_debounce_ms, settings.watch_step_ms
            self._reconfigured.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set; restart the watch whenever the set of projects changes."""
        changed = self.provisioner.projects_changed
        watched: set[str] | None = None  # None: the first start (serve() warms every project then)
        while not stop.is_set():
            changed.clear()
            self._reconfigured.clear()
            dirs = self._live_dirs()
            if watched is not None:
                # A file edited between a project's registration and this watch would go unseen:
                # warm the new ones once the watch is in place (a cheap no-op when nothing changed).
                # awatch sets its watch up before its first await, so call_soon runs after that.
                for name in self._names_of(set(dirs) - watched):
                    asyncio.get_running_loop().call_soon(self.provisioner.warm_in_background, name)
            watched = set(dirs)
            # A gone project may come back (a checkout switched, a dir recreated): watch the nearest
            # existing parent of each, and start over when one reappears.
            parents = sorted({p for p in map(_existing_parent, self._gone_dirs()) if p} - set(dirs))
            restart = asyncio.Event()
            waiter = asyncio.create_task(first_of(stop, changed, self._reconfigured, then=restart))
            try:
                if not dirs and not parents:
                    await restart.wait()
                    continue
                log.debug("watching %d project dirs (and %d parents of gone ones)", len(dirs), len(parents))
                async for changes in awatch(*dirs, *parents, watch_filter=None, stop_event=restart,
                                            recursive=False, debounce=self.debounce_ms, step=self.step_ms,
                                            ignore_permission_denied=True):
                    self.handle(changes)
                    if any(not Path(d).is_dir() for d in dirs) or any(Path(d).is_dir() for d in self._gone_dirs()):
                        restart.set()  # a project dir vanished or came back: watch the new set
            finally:
                waiter.cancel()
                await asyncio.gather(waiter, return_exceptions=True)

    def _live_dirs(self) -> list[str]:
        live = []
        for record in self.provisioner.store.list_names("project"):
            if record.source and Path(record.source).is_dir():
                live.append(record.source)
                if record.status == "gone":
                    self.provisioner.store.update_name(record.name, status="new" if not record.env_key else "ready")
                    self.provisioner.warm_in_background(record.name)
            elif record.status != "gone":
                log.warning("project %s (%s) is gone from disk", record.name, record.source)
                self.provisioner.mark_gone(record.name)
        return live

    def _names_of(self, dirs: set[str]) -> list[str]:
        """The projects in ``dirs`` that were warmed (a `watch --no-warm` one waits for its first warm)."""
        return [r.name for r in self.provisioner.store.list_names("project") if r.source in dirs and r.status != "new"]

    def _gone_dirs(self) -> list[str]:
        return [r.source for r in self.provisioner.store.list_names("project") if r.status == "gone" and r.source]

    def handle(self, changes: Iterable[tuple[Change, str]]) -> None:
        """Map changed paths to projects: the spec (or a file it names) rebuilds; `.env` re-renders."""
        projects = {r.source: r for r in self.provisioner.store.list_names("project") if r.source}
        rebuild: set[str] = set()
        secrets: set[str] = set()
        for _change, raw in changes:
            path = Path(raw)
            record = projects.get(str(path.parent))
            if record is None:
                continue
            if path.name in SPEC_FILES or (path.name in self.provisioner.referenced_files(record.name)
                                           and not self.provisioner.lifecycle.locker.wrote(path)):
                rebuild.add(record.name)
            elif path.name == SECRETS_FILE:
                secrets.add(record.name)
        for name in sorted(rebuild):
            log.info("%s changed: rebuilding in the background", name)
            self.provisioner.warm_in_background(name)
        for name in sorted(secrets - rebuild):
            self.provisioner.refresh_activation(name)


def _existing_parent(directory: str) -> str | None:
    parent = Path(directory).parent
    while not parent.is_dir():
        if parent == parent.parent:
            return None
        parent = parent.parent
    return str(parent)
