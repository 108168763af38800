"""Hedged calls on the event seam (issue 16, defaults): a hedged call is reported as
any other (one CallStarted/CallFinished pair in the caller's context), and each of
its attempts in the context it runs in (its thread, its task), where its
AttemptStarted/AttemptFinished pair is balanced and nested even though two
attempts run at once.  The OpenTelemetry adapter then makes both attempts
children of the call's span."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import kitsd.otel
from kitsd import lb, sd
from kitsd.core import observe
from kitsd.core.observe import (
    AttemptFinished,
    AttemptStarted,
    CallFinished,
    CallStarted,
    Observation,
)
from tests.helpers import wait_for

SLOW, FAST = "10.0.0.1:80", "10.0.0.2:80"
HEDGE = lb.Hedge(delay=0.02)


class Recorder:
    """Every observation, with the thread and task it was made in."""

    def __init__(self) -> None:
        self.seen: list[tuple[Observation, int, int | None, str]] = []
        self.lock = threading.Lock()

    def __call__(self, observation: Observation) -> None:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        with self.lock:
            self.seen.append((observation, threading.get_ident(),
                              None if task is None else id(task), observe.current_service()))

    def of(self, kind: type[Any]) -> list[Any]:
        with self.lock:
            return [o for o, _, _, _ in self.seen if isinstance(o, kind)]

    def where(self, kind: type[Any], instance: str) -> tuple[int, int | None, str]:
        with self.lock:
            [place] = [(thread, task, service) for o, thread, task, service in self.seen
                       if isinstance(o, kind) and o.instance == instance]
        return place


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    with observe.observing(recorder):
        yield recorder


def test_sync_hedged_call_and_both_attempts_are_reported(recorder: Recorder) -> None:
    release = threading.Event()

    def factory(instance: str) -> Any:
        def endpoint(request: Any) -> str:
            if instance == SLOW:
                release.wait(5)
            return instance
        return endpoint

    with sd.Endpointer(sd.FixedInstancer([SLOW, FAST]), factory) as endpointer, \
            lb.retry(2, 5.0, lb.RoundRobin(endpointer), hedge=HEDGE, name="users") as call:
        assert call("x") == FAST
        [finished] = recorder.of(CallFinished)
        assert (finished.service, finished.outcome, finished.attempts, finished.instance) == (
            "users", "success", 2, FAST)
        started = recorder.of(AttemptStarted)
        assert [(a.instance, a.resend_count) for a in started] == [(SLOW, 0), (FAST, 1)]
        release.set()  # the loser lands after the call: its attempt is reported then
        wait_for(lambda: len(recorder.of(AttemptFinished)) == 2, what="the loser's end")
    ended = {a.instance: a for a in recorder.of(AttemptFinished)}
    assert ended[FAST].outcome == ended[SLOW].outcome == "success"
    assert [a.resend_count for a in (ended[SLOW], ended[FAST])] == [0, 1]
    assert len(recorder.of(CallStarted)) == 1
    caller = threading.get_ident()
    for instance in (SLOW, FAST):  # each pair in its attempt's own thread, labelled
        begin, end = recorder.where(AttemptStarted, instance), recorder.where(
            AttemptFinished, instance)
        assert begin == end
        assert begin[0] != caller
        assert begin[2] == "users"
    assert recorder.where(AttemptStarted, SLOW)[0] != recorder.where(AttemptStarted, FAST)[0]


def test_async_hedged_call_reports_the_cancelled_loser(recorder: Recorder) -> None:
    def factory(instance: str) -> Any:
        async def endpoint(request: Any) -> str:
            if instance == SLOW:
                await asyncio.sleep(10)
            return instance
        return endpoint

    async def main() -> None:
        async with sd.Endpointer(sd.FixedInstancer([SLOW, FAST]), factory) as endpointer:
            call = lb.retry_async(2, 5.0, lb.RoundRobin(endpointer), hedge=HEDGE, name="users")
            assert await call("x") == FAST
            await call.aclose()

    asyncio.run(main())
    kinds = [type(o).__name__ for o, _, _, _ in recorder.seen
             if isinstance(o, CallStarted | CallFinished | AttemptStarted | AttemptFinished)]
    assert kinds[0] == "CallStarted"
    assert kinds[-1] == "CallFinished"  # the loser was cancelled and waited for first
    ended = {a.instance: a.outcome for a in recorder.of(AttemptFinished)}
    assert ended == {FAST: "success", SLOW: "cancelled"}
    [finished] = recorder.of(CallFinished)
    assert (finished.attempts, finished.instance, finished.outcome) == (2, FAST, "success")
    tasks = set()
    for instance in (SLOW, FAST):  # each pair in its own task
        begin = recorder.where(AttemptStarted, instance)
        assert begin == recorder.where(AttemptFinished, instance)
        assert begin[2] == "users"
        tasks.add(begin[1])
    assert len(tasks) == 2


def test_a_failed_round_is_reported_like_retries(recorder: Recorder) -> None:
    def down(request: Any) -> Any:
        raise ConnectionRefusedError("down")

    with lb.retry(2, 5.0, lb.RoundRobin(_Static([down, down]), outlier_detection=None),
                  hedge=lb.Hedge(delay=0.0), name="users") as call, \
            pytest.raises(lb.RetryError):
        call("x")
    [finished] = recorder.of(CallFinished)
    assert finished.outcome == "error"
    assert len(recorder.of(AttemptStarted)) == len(recorder.of(AttemptFinished))
    assert finished.attempts == len(recorder.of(AttemptStarted))
    assert {a.outcome for a in recorder.of(AttemptFinished)} == {"error"}


class _Static:
    def __init__(self, endpoints: list[Any]) -> None:
        self._endpoints = endpoints

    def endpoints(self) -> list[Any]:
        return list(self._endpoints)


def test_otel_attempt_spans_are_children_of_the_call_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    release = threading.Event()

    def factory(instance: str) -> Any:
        def endpoint(request: Any) -> str:
            if instance == SLOW:
                release.wait(5)
            return instance
        return endpoint

    with kitsd.otel.install(tracer_provider=provider, attempt_spans=True), \
            sd.Endpointer(sd.FixedInstancer([SLOW, FAST]), factory) as endpointer, \
            lb.retry(2, 5.0, lb.RoundRobin(endpointer), hedge=HEDGE, name="users") as call:
        assert call("x") == FAST
        release.set()
        wait_for(lambda: len(exporter.get_finished_spans()) == 3, what="three spans")
    spans = exporter.get_finished_spans()
    [parent] = [s for s in spans if s.kind is SpanKind.INTERNAL]
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert len(attempts) == 2
    assert parent.context is not None
    assert all(s.parent is not None and s.parent.span_id == parent.context.span_id
               for s in attempts)
    provider.shutdown()
