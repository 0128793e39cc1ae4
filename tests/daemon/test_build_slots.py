"""The build limit: a SIGHUP reload may raise or lower max_builds while builds wait or run."""

from __future__ import annotations

import asyncio

from provisiond.daemon.builder import _Slots


async def test_raising_the_limit_lets_a_waiting_build_in() -> None:
    slots = _Slots(1)
    await slots.__aenter__()
    entered = asyncio.Event()

    async def second() -> None:
        async with slots:
            entered.set()

    task = asyncio.create_task(second())
    await asyncio.sleep(0)
    assert not entered.is_set()
    slots.resize(2)
    await asyncio.wait_for(entered.wait(), 30)
    await task
    await slots.__aexit__()


async def test_lowering_the_limit_waits_for_running_builds() -> None:
    slots = _Slots(2)
    await slots.__aenter__()
    await slots.__aenter__()
    slots.resize(1)
    third = asyncio.create_task(slots.__aenter__())
    await slots.__aexit__()  # one running left: still at the new limit
    await asyncio.sleep(0)
    assert not third.done()
    await slots.__aexit__()
    await asyncio.wait_for(third, 30)
    await slots.__aexit__()


async def test_a_cancelled_waiter_takes_no_slot() -> None:
    slots = _Slots(1)
    await slots.__aenter__()
    waiter = asyncio.create_task(slots.__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await slots.__aexit__()
    await asyncio.wait_for(slots.__aenter__(), 30)  # free again
    await slots.__aexit__()
