"""lb.slow_start: Envoy's ramp curve and the table of instances still ramping (pure)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from kitsd.core.errors import MisuseError, WrongTypeError
from kitsd.lb.slow_start import SlowStart, Warming


def linear(**settings: Any) -> SlowStart:
    """Envoy's curve: linear, from a 10 % floor unless given (not the defaults)."""
    return SlowStart(**{"aggression": 1.0, "min_weight_percent": 10.0, **settings})


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"window": 0}, "window"),
    ({"window": -1.0}, "window"),
    ({"window": math.nan}, "window"),
    ({"window": math.inf}, "window"),
    ({"window": "30"}, "window"),
    ({"aggression": 0}, "aggression"),
    ({"aggression": -2.0}, "aggression"),
    ({"aggression": True}, "aggression"),
    ({"min_weight_percent": -1}, "min_weight_percent"),
    ({"min_weight_percent": 100.5}, "min_weight_percent"),
    ({"warm_start": 1}, "warm_start"),
])
def test_bad_settings_name_the_argument(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises((MisuseError, WrongTypeError)) as caught:
        SlowStart(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(name)


def test_the_curve_is_envoys() -> None:
    straight = linear(window=10.0, min_weight_percent=0.0)
    assert straight.factor(0.0) == 0.0
    assert straight.factor(2.5) == pytest.approx(0.25)
    assert straight.factor(5.0) == pytest.approx(0.5)
    assert straight.factor(10.0) == 1.0
    assert straight.factor(1e9) == 1.0
    faster = SlowStart(window=10.0, aggression=2.0, min_weight_percent=0.0)
    assert faster.factor(2.5) == pytest.approx(0.5)  # (1/4) ** (1/2)
    slower = SlowStart(window=10.0, aggression=0.5, min_weight_percent=0.0)
    assert slower.factor(5.0) == pytest.approx(0.25)  # (1/2) ** 2


def test_the_minimum_weight_is_a_floor() -> None:
    ramp = linear(window=10.0)
    assert ramp.factor(0.0) == 0.1
    assert ramp.factor(-5.0) == 0.1  # a clock read before the start
    assert ramp.factor(0.5) == 0.1  # 0.05 < the floor
    assert ramp.factor(3.0) == pytest.approx(0.3)


@pytest.mark.parametrize("aggression", [0.3, 1.0, 1.7, 4.0])
def test_no_step_at_the_end_of_the_window(aggression: float) -> None:
    # envoy#26290: no surge when a ramp ends. The curve is continuous and monotone.
    ramp = SlowStart(window=30.0, aggression=aggression, min_weight_percent=5.0)
    ages = [30.0 * step / 3000 for step in range(3200)]
    factors = [ramp.factor(age) for age in ages]
    assert all(b >= a for a, b in itertools.pairwise(factors))
    assert abs(ramp.factor(30.0 - 1e-6) - ramp.factor(30.0)) < 1e-5
    late = factors[1500:]  # the second half of the ramp, and past its end
    assert max(b - a for a, b in itertools.pairwise(late)) < 0.002


def test_the_first_set_is_warm_by_default() -> None:
    warming = Warming(linear(window=10.0))
    assert warming.update((), ("a:1", "b:1"), now=100.0) == []
    assert warming.factor("a:1", 100.0) == 1.0
    assert not warming.warming(100.0)
    assert warming.update(("a:1", "b:1"), ("a:1", "b:1", "c:1"), now=101.0) == ["c:1"]
    assert warming.factor("c:1", 101.0) == 0.1
    assert warming.factor("c:1", 106.0) == pytest.approx(0.5)
    assert warming.factor("a:1", 106.0) == 1.0


def test_an_empty_first_answer_does_not_make_the_next_set_new() -> None:
    # A registry that first answered "none" (a transport's service asked for before its
    # instances registered) says nothing of the age of those that show up next.
    warming = Warming(linear(window=10.0))
    assert warming.update((), (), now=0.0) == []
    assert warming.update((), ("a:1", "b:1"), now=1.0) == []
    assert warming.capacity(2, 1.0) == 1.0
    assert warming.update(("a:1", "b:1"), ("a:1", "b:1", "c:1"), now=2.0) == ["c:1"]


def test_warm_start_off_ramps_the_first_set_too() -> None:
    warming = Warming(linear(window=10.0, warm_start=False))
    assert warming.update((), ("a:1", "b:1"), now=0.0) == ["a:1", "b:1"]
    assert warming.factor("a:1", 5.0) == pytest.approx(0.5)
    assert warming.capacity(2, 5.0) == pytest.approx(0.5)


def test_another_instance_joining_does_not_restart_a_ramp() -> None:
    # envoy#26290: a set change mid-window keeps every ramp where it was.
    warming = Warming(linear(window=10.0, min_weight_percent=0.0))
    warming.update((), ("a:1",), now=0.0)
    warming.update(("a:1",), ("a:1", "b:1"), now=1.0)
    before = warming.factor("b:1", 4.0)
    warming.update(("a:1", "b:1"), ("a:1", "b:1", "c:1"), now=4.0)
    warming.update(("a:1", "b:1", "c:1"), ("a:1", "b:1"), now=4.0)  # and c leaves again
    assert warming.factor("b:1", 4.0) == before == pytest.approx(0.3)
    assert warming.started("b:1") == 1.0


def test_warm_shares_move_smoothly_when_a_newcomer_ramps() -> None:
    # The share of a warm instance among 3 warm + 1 ramping falls smoothly from 1/3
    # to 1/4, with no step at the end of the ramp (where Envoy's rebuilt weights jumped).
    warming = Warming(linear(window=10.0))
    warming.update((), ("a:1", "b:1", "c:1"), now=0.0)
    warming.update(("a:1", "b:1", "c:1"), ("a:1", "b:1", "c:1", "d:1"), now=0.0)
    shares = []
    for step in range(1201):
        now = step / 100.0
        weights = [warming.factor(key, now) for key in ("a:1", "b:1", "c:1", "d:1")]
        shares.append(weights[0] / sum(weights))
    assert shares[0] == pytest.approx(1 / 3.1)
    assert shares[-1] == pytest.approx(0.25)
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(shares))
    assert max(a - b for a, b in itertools.pairwise(shares)) < 0.002


def test_leaving_forgets_and_coming_back_ramps_again() -> None:
    warming = Warming(linear(window=10.0, min_weight_percent=0.0))
    warming.update((), ("a:1",), now=0.0)
    warming.update(("a:1",), ("a:1", "b:1"), now=0.0)
    warming.update(("a:1", "b:1"), ("a:1",), now=5.0)
    assert warming.started("b:1") is None
    assert len(warming) == 0
    warming.update(("a:1",), ("a:1", "b:1"), now=8.0)
    assert warming.factor("b:1", 9.0) == pytest.approx(0.1)


def test_restart_starts_a_ramp_over() -> None:
    warming = Warming(linear(window=10.0, min_weight_percent=0.0))
    warming.update((), ("a:1",), now=0.0)
    warming.restart("a:1", 50.0)  # e.g. its health check passes again after failing
    assert warming.warming(55.0)
    assert warming.factor("a:1", 55.0) == pytest.approx(0.5)
    warming.forget("a:1")
    assert warming.factor("a:1", 55.0) == 1.0


def test_ramps_end_and_the_table_empties() -> None:
    warming = Warming(linear(window=10.0))
    warming.update((), ("a:1",), now=0.0)
    warming.update(("a:1",), ("a:1", "b:1"), now=1.0)
    warming.update(("a:1", "b:1"), ("a:1", "b:1", "c:1"), now=3.0)
    assert warming.warming(12.9)
    assert len(warming) == 2
    assert not warming.warming(13.0)  # the last ramp (c, from 3 s) ended
    assert len(warming) == 0
    assert warming.factor("c:1", 13.0) == 1.0


def test_capacity_is_the_mean_factor_when_every_instance_ramps() -> None:
    # envoy#24689: when every instance is new, relative weights cannot ramp anything;
    # the capacity (for a concurrency limit to scale by) still does.
    warming = Warming(linear(window=10.0, warm_start=False))
    warming.update((), ("a:1", "b:1", "c:1", "d:1"), now=0.0)
    assert warming.capacity(4, 0.0) == pytest.approx(0.1)
    assert warming.capacity(4, 5.0) == pytest.approx(0.5)
    assert warming.capacity(4, 10.0) == 1.0
    assert warming.capacity(0, 0.0) == 1.0


def test_a_scale_up_does_not_shrink_the_capacity() -> None:
    # 3 warm + 3 new: the mean factor is a half, but the warm three are all there and
    # relative shares keep calls off the newcomers: a limit must not halve.
    mixed = Warming(linear(window=10.0, min_weight_percent=0.0))
    mixed.update((), ("a:1", "b:1", "c:1"), now=0.0)
    mixed.update(("a:1", "b:1", "c:1"), ("a:1", "b:1", "c:1", "d:1", "e:1", "f:1"), now=0.0)
    assert mixed.capacity(6, 0.0) == 1.0
    # the warm ones leave (a whole fleet replaced): the newcomers' mean factor
    mixed.update(("a:1", "b:1", "c:1", "d:1", "e:1", "f:1"), ("d:1", "e:1", "f:1"), now=2.0)
    assert mixed.capacity(3, 2.0) == pytest.approx(0.2)
    # one ramps from 2 s, the others from 0 s: one whose ramp ended counts as warm
    mixed.update(("d:1", "e:1", "f:1"), ("d:1", "e:1", "f:1", "g:1"), now=2.0)
    assert mixed.capacity(4, 11.0) == 1.0


def test_the_defaults_hold_a_newcomer_back_while_it_is_coldest() -> None:
    # Not Envoy's (linear from 10 %): a p99 hides 1 % of the calls, so a newcomer stays
    # at its 0.5 % floor for the first ~6 s of the 30 s window, then ramps as t ** 3.3.
    ramp = SlowStart()
    assert (ramp.window, ramp.aggression, ramp.min_weight_percent) == (30.0, 0.3, 0.5)
    assert ramp.factor(0.0) == ramp.factor(6.0) == 0.005
    assert ramp.factor(15.0) == pytest.approx(0.5 ** (1 / 0.3))  # ~0.1
    assert 0.45 < ramp.factor(24.0) < 0.5  # half a share a few seconds before the end
    assert ramp.factor(30.0) == 1.0
