"""sd._cancel: a cancellation that a coroutine loses (as Python 3.11's asyncio.wait_for
does when the operation completes at the same moment, CPython gh-86296) is asked again."""

from __future__ import annotations

import asyncio

from kitsd.sd._cancel import cancel_until_done


async def _stubborn(swallowed: list[int]) -> None:
    """Loses the first cancellation, as wait_for does when its operation just completed."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        swallowed.append(1)
    await asyncio.sleep(30)  # a second operation: with one cancel() it runs to its end


async def test_a_lost_cancellation_is_asked_again() -> None:
    swallowed: list[int] = []
    task = asyncio.create_task(_stubborn(swallowed))
    await asyncio.sleep(0)
    cancel_until_done(task)
    async with asyncio.timeout(5):
        await asyncio.wait({task})
    assert task.cancelled()
    assert swallowed == [1]


async def test_one_cancel_is_not_enough_for_such_a_task() -> None:
    """The defect itself (so the test above can fail): a single cancel() is lost."""
    swallowed: list[int] = []
    task = asyncio.create_task(_stubborn(swallowed))
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.2)
    assert not done
    assert swallowed == [1]
    cancel_until_done(task)
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()


async def test_a_task_that_is_done_is_left_alone() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    cancel_until_done(task)
    assert not task.cancelled()
