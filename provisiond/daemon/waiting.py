"""Waiting on several asyncio events at once (the watchers of project files and of the audit db)."""

from __future__ import annotations

import asyncio


async def first_of(*events: asyncio.Event, then: asyncio.Event) -> None:
    """Set ``then`` as soon as any of ``events`` is set."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        then.set()
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
