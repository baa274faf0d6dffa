from __future__ import annotations

import asyncio

from catena import tasks


async def _loop_that_misses_one_cancellation(ticks: list[int]) -> None:
    # What Python 3.11's wait_for does when a cancellation meets a completed call:
    # the cancellation is swallowed and the service loop goes round again.
    missed = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if missed:
                raise
            missed = True
        ticks.append(1)


async def test_a_loop_that_swallows_a_cancellation_is_still_stopped() -> None:
    ticks: list[int] = []
    task = asyncio.create_task(_loop_that_misses_one_cancellation(ticks))
    await asyncio.sleep(0.05)

    await asyncio.wait_for(tasks.cancel_all([task], grace=2.0), 3.0)

    assert task.cancelled()
    stopped_at = len(ticks)
    await asyncio.sleep(0.05)
    assert len(ticks) == stopped_at


async def test_a_task_that_failed_earlier_does_not_hold_up_the_stop() -> None:
    async def fails() -> None:
        raise RuntimeError("already logged by its owner")

    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    running = asyncio.create_task(asyncio.sleep(60))

    await asyncio.wait_for(tasks.cancel_all([failed, running]), 3.0)

    assert running.cancelled() and isinstance(failed.exception(), RuntimeError)
