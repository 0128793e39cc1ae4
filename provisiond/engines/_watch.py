"""Watching a rattler install: its download activity (for the stall limit) and, once it is
cancelled, the end of the link threads it leaves running.

rattler reports through an ``InstallerReporter``; it fetches each package in a task of its own
and links each file in a blocking thread, neither of which a cancelled ``rattler.install`` stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from provisiond.domain.events import BuildProgress
from provisiond.domain.lock import Package

log = logging.getLogger(__name__)

_SETTLE_STEP = 0.1
_SETTLE_LIMIT = 30.0


async def settle(directory: Path) -> None:
    """Return once nothing has been created in ``directory`` for a moment (bounded)."""
    def snapshot() -> tuple[int, int]:
        count = newest = 0
        for root, dirs, files in os.walk(directory):
            for name in (*dirs, *files):
                count += 1
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime_ns)
                except OSError:
                    pass
        return count, newest

    deadline = time.monotonic() + _SETTLE_LIMIT
    before = await asyncio.to_thread(snapshot)
    while time.monotonic() < deadline:
        await asyncio.sleep(_SETTLE_STEP)  # rattler gives no event when its link threads end
        after = await asyncio.to_thread(snapshot)
        if after == before:
            return
        before = after
    log.warning("%s still changed %gs after its install was cancelled", directory, _SETTLE_LIMIT)


def cached(pkgs: Path, package: Package) -> bool:
    """True when rattler's package cache holds ``package`` extracted (no download needed)."""
    return (pkgs / f"{package.name}-{package.version}-{package.build}" / "info" / "index.json").is_file()


class Reporter:
    """rattler's InstallerReporter protocol → our phase events and the download watch (called from
    rattler's threads).

    Fetching a package into the cache (download or copy from a file:// channel, then extract)
    is the ``download`` phase; its bytes are the archive sizes from the lock, plus the bytes of
    downloads in flight when rattler reports them (http channels). ``last_activity`` and
    ``downloading`` tell ``RattlerEngine._watch`` whether a fetch is stuck.
    """

    def __init__(self, progress: BuildProgress | None, packages: list[Package], fetch: set[str]) -> None:
        self.progress = progress
        self.sizes = {p.name: p.size or 0 for p in packages}
        self.channels = {p.name: p.channel or p.url.rsplit("/", 2)[0] + "/" for p in packages}
        self.fetch = fetch  # names of the packages that are not in the cache
        self.total_bytes = sum(self.sizes.values())
        self.names: dict[int, str] = {}
        self.fetched = 0
        self.fetched_bytes = 0
        self.in_flight: dict[int, int] = {}
        self.linked = 0
        self.next_download = 0
        self.last_activity = time.monotonic()
        self.waiting: dict[int, str] = {}  # cache entry -> name: fetch started, no download yet
        self.downloads: dict[int, str] = {}  # download -> name: started, not completed

    @property
    def downloading(self) -> set[str]:
        """Channels of the fetches in flight (not extraction after a download ended)."""
        names = (*tuple(self.waiting.values()), *tuple(self.downloads.values()))
        return {self.channels.get(n, n) for n in names}

    def on_populate_cache_start(self, operation: int, package_name: str) -> int:
        self.names[operation] = package_name
        if package_name in self.fetch:
            self.waiting[operation] = package_name
        self.last_activity = time.monotonic()
        return operation

    def on_populate_cache_complete(self, cache_entry: int) -> None:
        self.waiting.pop(cache_entry, None)
        self.last_activity = time.monotonic()
        self.fetched += 1
        self.fetched_bytes += self.sizes.get(self.names.get(cache_entry, ""), 0)
        self._report()

    def on_download_start(self, cache_entry: int) -> int:
        self.next_download += 1
        name = self.waiting.pop(cache_entry, None) or self.names.get(cache_entry, "")
        self.downloads[self.next_download] = name
        self.last_activity = time.monotonic()
        return self.next_download

    def on_download_progress(self, download_idx: int, progress: int, total: int | None) -> None:
        self.last_activity = time.monotonic()
        self.in_flight[download_idx] = progress
        self._report()

    def on_download_completed(self, download_idx: int) -> None:
        self.downloads.pop(download_idx, None)
        self.last_activity = time.monotonic()
        self.in_flight.pop(download_idx, None)

    def _report(self) -> None:
        if self.progress is not None:
            done_bytes = min(self.fetched_bytes + sum(self.in_flight.values()), self.total_bytes)
            self.progress.download(done_bytes, self.total_bytes, self.fetched, len(self.sizes))

    def on_link_start(self, operation: int, package_name: str) -> int:
        return operation

    def on_link_complete(self, index: int) -> None:
        self.linked += 1
        if self.progress is not None:
            self.progress.emit("link", done=self.linked, total=len(self.sizes))
