"""An open-loop load generator for the issue-21 benchmarks: calls started at a fixed
rate whatever the answers (a closed loop would slow down with the service and hide
the latency it measures), each a task, with its start time, latency and outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Outcome", "Run", "drive"]


@dataclass(slots=True)
class Outcome:
    started: float  # seconds since the run began
    latency: float
    error: BaseException | None
    value: Any = None  # what the call returned


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[Outcome]:
        return [each for each in self.outcomes if start <= each.started < end]


async def drive(call: Callable[[Any], Awaitable[Any]], rate: Callable[[float], float],
                seconds: float, events: dict[float, Callable[[], Any]] | None = None) -> Run:
    """Start ``rate(t)`` calls per second for ``seconds`` (``t``: seconds since the
    start); ``events`` maps a time to a callable run then (a scale-up, a zone dying).
    Returns every call's outcome, once all have ended."""
    run = Run()
    tasks: set[asyncio.Task[None]] = set()
    begin = time.monotonic()
    pending = sorted((events or {}).items())

    async def one(number: int, started: float) -> None:
        error: BaseException | None = None
        value: Any = None
        try:
            value = await call(number)
        except Exception as failure:  # noqa: BLE001 - recorded: the benchmark counts them
            error = failure
        run.outcomes.append(Outcome(started - begin, time.monotonic() - started, error, value))

    number = 0
    next_start = begin
    while True:
        now = time.monotonic()
        elapsed = now - begin
        if elapsed >= seconds:
            break
        while pending and pending[0][0] <= elapsed:
            pending.pop(0)[1]()
        if now < next_start:
            await asyncio.sleep(min(next_start - now, 0.01))
            continue
        task = asyncio.ensure_future(one(number, now))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        number += 1
        next_start += 1.0 / max(rate(elapsed), 1e-3)
    if tasks:
        await asyncio.gather(*tasks)
    return run
