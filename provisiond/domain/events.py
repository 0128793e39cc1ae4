"""Build progress: phase events per build, kept in memory and streamed to any number of readers.

Phases, in order: ``solved`` (packages), ``download`` (bytes, total, done/packages),
``link`` (done, total, package), ``pip``, ``activation``, ``publish``, then ``done`` (prefix),
``failed`` (error) or ``cancelled`` (error: the daemon stopped). Engines call
``BuildProgress.emit`` from any thread (rattler reports from its own threads); events reach the
loop through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

Event = dict[str, Any]
OnEvent = Callable[[Event], None]
TERMINAL = ("done", "failed", "cancelled")
KEEP_BUILDS = 64


class _Stream:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()


class BuildEvents:
    """The event streams of recent builds (the last KEEP_BUILDS), owned by the daemon's loop."""

    def __init__(self) -> None:
        self._streams: OrderedDict[int, _Stream] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, build_id: int) -> BuildProgress:
        self._loop = asyncio.get_running_loop()
        self._streams[build_id] = _Stream()
        while len(self._streams) > KEEP_BUILDS:
            self._streams.popitem(last=False)
        return BuildProgress(self, build_id)

    def publish(self, build_id: int, event: Event) -> None:
        """Append an event (loop thread only)."""
        stream = self._streams.get(build_id)
        if stream is None:
            return
        stream.events.append(event)
        stream.changed.set()
        stream.changed = asyncio.Event()

    def publish_threadsafe(self, build_id: int, event: Event) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self.publish, build_id, event)
        except RuntimeError:
            pass  # the loop is closing: nobody is listening any more

    def known(self, build_id: int) -> bool:
        return build_id in self._streams

    async def follow(self, build_id: int) -> AsyncIterator[Event]:
        """Every event of a build, past ones first, until its terminal event."""
        stream = self._streams[build_id]
        seen = 0
        while True:
            changed = stream.changed
            for event in stream.events[seen:]:
                yield event
                if event["phase"] in TERMINAL:
                    return
            seen = len(stream.events)
            await changed.wait()


class BuildProgress:
    """What an engine reports to: ``emit(phase, **fields)``, from any thread."""

    def __init__(self, hub: BuildEvents, build_id: int) -> None:
        self._hub = hub
        self.build_id = build_id
        self._owner = threading.get_ident()
        self._last_download = 0.0

    def emit(self, phase: str, **fields: Any) -> None:
        event = {"phase": phase, "build_id": self.build_id, "time": time.time(), **fields}
        if threading.get_ident() == self._owner:
            self._hub.publish(self.build_id, event)
        else:
            self._hub.publish_threadsafe(self.build_id, event)

    def download(self, done_bytes: int, total_bytes: int, done: int, packages: int) -> None:
        """Download progress, at most ten events a second (rattler reports every chunk)."""
        now = time.monotonic()
        if done < packages and now - self._last_download < 0.1:
            return
        self._last_download = now
        self.emit("download", bytes=done_bytes, total=total_bytes, done=done, packages=packages)
