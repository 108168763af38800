"""lb.ConcurrencyLimiter: the thread-safe driver of one stack's adaptive limit, and
how a call's ending counts for it (lb.concurrency_limit_policy.outcome_of)."""

from __future__ import annotations

import pickle
import threading

import pytest

from kitsd.core.errors import ConnectionFailure, KitsdError, Leaving, Rejected
from kitsd.lb.concurrency_limit import ConcurrencyLimiter, check_limit
from kitsd.lb.concurrency_limit_policy import AIMDLimit, GradientLimit, outcome_of
from kitsd.lb.errors import LimitExceeded, RetryError, RetryTimeout


class Status(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code


class Refused(ConnectionRefusedError):
    pass


class Draining(Exception, Leaving):
    status_code = 503


class Open(Exception, Rejected):
    pass


@pytest.mark.parametrize(("error", "outcome"), [
    (None, "success"),
    (TimeoutError("slow"), "dropped"),
    (RetryTimeout(1.0, []), "dropped"),
    (Status(503), "dropped"),
    (Status(429), "dropped"),
    (Status(500), "ignored"),
    (Status(404), "ignored"),
    (Refused(), "ignored"),
    (Draining(), "ignored"),  # a 503 from an instance on its way out says nothing of load
    (Open(), "ignored"),
    (ValueError("bad"), "ignored"),
    (RetryError([Status(503), Refused()], Refused()), "dropped"),
    (RetryError([Refused(), Status(404)], Status(404)), "ignored"),
])
def test_outcomes(error: BaseException | None, outcome: str) -> None:
    assert outcome_of(error) == outcome


def test_limit_exceeded_is_a_rejection() -> None:
    error = LimitExceeded(7)
    assert isinstance(error, KitsdError)
    assert isinstance(error, Rejected)
    assert not isinstance(error, ConnectionFailure)
    assert error.limit == 7
    assert str(error) == "concurrency limit reached (7 calls in flight)"
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert again.limit == 7


def test_check_limit() -> None:
    assert check_limit(None) is None
    policy = GradientLimit()
    assert check_limit(policy) is policy
    with pytest.raises(TypeError, match=r"^limit must be"):
        check_limit(20)
    with pytest.raises(TypeError, match=r"^concurrency must be"):
        check_limit("gradient", "concurrency")
    with pytest.raises(TypeError, match=r"^policy"):
        ConcurrencyLimiter(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^scale"):
        ConcurrencyLimiter(AIMDLimit(), scale=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^clock"):
        ConcurrencyLimiter(AIMDLimit(), clock=1.0)  # type: ignore[arg-type]


def test_refuses_past_the_limit_and_recovers() -> None:
    now = [0.0]
    limiter = ConcurrencyLimiter(AIMDLimit(initial=2, backoff=0.5), clock=lambda: now[0])
    first = limiter.acquire()
    limiter.acquire()
    with pytest.raises(LimitExceeded) as caught:
        limiter.acquire()
    assert caught.value.limit == 2
    assert limiter.rejected == 1
    assert limiter.in_flight == 2
    now[0] = 0.1
    limiter.release(first, None)  # 2 in flight of 2: used -> +1
    assert limiter.limit == 3
    limiter.release(first, TimeoutError())
    assert limiter.limit == 1
    assert limiter.in_flight == 0
    assert "limit=1" in repr(limiter)


def test_scale_lowers_the_limit() -> None:
    warmth = [0.25]
    limiter = ConcurrencyLimiter(AIMDLimit(initial=8), scale=lambda: warmth[0])
    for _ in range(2):
        limiter.acquire()
    with pytest.raises(LimitExceeded):
        limiter.acquire()
    warmth[0] = 1.0
    limiter.acquire()


def test_never_more_in_flight_than_the_limit_under_threads() -> None:
    limiter = ConcurrencyLimiter(AIMDLimit(initial=5, maximum=5, minimum=5))
    peak = [0]
    inside = [0]
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        for _ in range(300):
            try:
                started = limiter.acquire()
            except LimitExceeded:
                continue
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            with lock:
                inside[0] -= 1
            limiter.release(started, None)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] <= 5
    assert limiter.in_flight == 0
