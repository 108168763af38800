"""Tests for sd.backoff: capped exponential backoff with jitter in the ceiling's upper half."""

from __future__ import annotations

import random

import pytest

from kitsd.sd.backoff import Backoff, backoff_delay

INITIAL, MAXIMUM = 0.01, 60.0


def ceiling(failures: int, initial: float = INITIAL, maximum: float = MAXIMUM) -> float:
    """The expected cap after ``failures``, by plain doubling (an independent oracle)."""
    top = initial
    for _ in range(failures - 1):
        if top >= maximum:
            break
        top *= 2
    return min(top, maximum)


@pytest.mark.parametrize("failures", [1, 2, 3, 10, 13, 14, 30, 100, 10_000])
@pytest.mark.parametrize("rand", [0.0, 0.25, 0.5, 0.999, 1.0])
def test_delay_stays_between_half_the_ceiling_and_the_ceiling(failures: int, rand: float) -> None:
    delay = backoff_delay(failures, initial=INITIAL, maximum=MAXIMUM, rand=rand)
    top = ceiling(failures)
    assert top / 2 <= delay <= top
    assert delay <= MAXIMUM


def test_rand_zero_and_one_hit_the_bounds() -> None:
    for failures in range(1, 20):
        assert backoff_delay(failures, rand=0.0) == pytest.approx(ceiling(failures) / 2)
        assert backoff_delay(failures, rand=1.0) == pytest.approx(ceiling(failures))


def test_delay_doubles_until_the_cap() -> None:
    previous = backoff_delay(1, initial=INITIAL, maximum=MAXIMUM, rand=1.0)
    assert previous == pytest.approx(INITIAL)
    for failures in range(2, 40):
        current = backoff_delay(failures, initial=INITIAL, maximum=MAXIMUM, rand=1.0)
        if previous * 2 <= MAXIMUM:
            assert current == pytest.approx(previous * 2)
        else:
            assert current == pytest.approx(MAXIMUM)
        previous = current
    assert previous == MAXIMUM


def test_cap_at_maximum_for_huge_failure_counts() -> None:
    assert backoff_delay(10**9, initial=1.0, maximum=5.0, rand=1.0) == 5.0
    assert backoff_delay(10**9, initial=1.0, maximum=5.0, rand=0.0) == 2.5


@pytest.mark.parametrize("failures", [0, -1])
def test_no_failures_means_no_delay(failures: int) -> None:
    assert backoff_delay(failures, rand=1.0) == 0.0


def test_backoff_grows_within_bounds_and_resets() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, rng=random.Random(1234))
    for failures in range(1, 12):
        delay = backoff.next_delay()
        top = ceiling(failures, 0.5, 4.0)
        assert top / 2 <= delay <= top
        assert backoff.failures == failures
    backoff.reset()
    assert backoff.failures == 0
    first_again = backoff.next_delay()
    assert 0.25 <= first_again <= 0.5
    assert backoff.failures == 1


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = Backoff(rng=random.Random(7))
    second = Backoff(rng=random.Random(7))
    assert [first.next_delay() for _ in range(10)] == [second.next_delay() for _ in range(10)]


def test_backoff_defaults_are_10ms_doubling_to_a_minute() -> None:
    backoff = Backoff(rng=random.Random(0))
    assert (backoff.initial, backoff.maximum) == (INITIAL, MAXIMUM)
    delays = [backoff.next_delay() for _ in range(40)]
    assert INITIAL / 2 <= delays[0] <= INITIAL
    assert all(MAXIMUM / 2 <= delay <= MAXIMUM for delay in delays[-10:])


def test_jitter_spreads_delays() -> None:
    backoff = Backoff(initial=1.0, maximum=1.0, rng=random.Random(42))
    delays = {backoff.next_delay() for _ in range(50)}
    assert len(delays) > 1
    assert all(0.5 <= delay <= 1.0 for delay in delays)
