"""lb.zones: zone-aware routing with priority failover and panic (pure)."""

from __future__ import annotations

import math
import random

import pytest

from kitsd.core.errors import MisuseError, WrongTypeError
from kitsd.lb.zones import DEFAULT_PRIORITY, Group, Plan, Zones, plan


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"local": ""}, "local"),
    ({"local": 3}, "local"),
    ({"local": "a", "key": ""}, "key"),
    ({"local": "a", "priority_key": 7}, "priority_key"),
    ({"local": "a", "overprovisioning": 0.9}, "overprovisioning"),
    ({"local": "a", "overprovisioning": math.nan}, "overprovisioning"),
    ({"local": "a", "panic_threshold": 101}, "panic_threshold"),
    ({"local": "a", "panic_threshold": -1}, "panic_threshold"),
    ({"local": "a", "callers": [("a", 1)]}, "callers"),
    ({"local": "a", "callers": {"a": -1}}, "callers['a']"),
    ({"local": "a", "callers": {"a": "1"}}, "callers['a']"),
    ({"local": "a", "callers": {"b": 1}}, "callers"),
    ({"local": None, "callers": {"b": 1}}, "callers"),
])
def test_bad_settings_name_the_argument(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises((MisuseError, WrongTypeError)) as caught:
        Zones(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(name)


def test_repr_shows_what_differs() -> None:
    assert repr(Zones("eu-1")) == "Zones('eu-1')"
    assert repr(Zones(None, panic_threshold=0.0)) == "Zones(None, panic_threshold=0.0)"
    assert repr(Zones("a", callers={"a": 1, "b": 3})) == "Zones('a', callers={'a': 1.0, 'b': 3.0})"


def test_metadata_keys() -> None:
    zones = Zones("a")
    assert zones.zone_of({"zone": "eu-1b"}) == "eu-1b"
    assert zones.zone_of({}) == ""
    assert Zones("a", key="topology.kubernetes.io/zone").zone_of(
        {"topology.kubernetes.io/zone": "z"}) == "z"
    assert zones.priority_of({}) == DEFAULT_PRIORITY == 0
    assert zones.priority_of({"priority": "2"}) == 2
    assert zones.priority_of({"priority": " 1 "}) == 1
    for bad in ("", "-1", "x", "1.5", "٣", "9999999"):
        assert zones.priority_of({"priority": bad}) is None, bad
    assert Zones("a", priority_key="dc-order").priority_of({"dc-order": "3"}) == 3


def three(healthy: tuple[float, float, float], total: float = 5.0) -> list[Group]:
    return [Group(0, zone, total, part) for zone, part in zip("abc", healthy, strict=True)]


def test_a_healthy_local_zone_keeps_every_call() -> None:
    result = plan(three((5, 5, 5)), Zones("a"))
    assert result == Plan((1.0, 0.0, 0.0), (False, False, False))


def test_a_zone_short_of_capacity_spills_in_proportion() -> None:
    # Local zone 'a' has 1 of 5 healthy: it keeps u/c of its calls, the rest spill.
    shares = plan(three((1, 5, 5)), Zones("a")).shares
    u_local, c_local = 1 / 11, 1 / 3
    assert shares[0] == pytest.approx(u_local / c_local)  # 27 %: not all on its last one
    assert shares[1] == pytest.approx(shares[2])
    assert sum(shares) == pytest.approx(1.0)


def test_a_dead_zone_spills_everything() -> None:
    shares = plan(three((0, 5, 5)), Zones("a")).shares
    assert shares == pytest.approx((0.0, 0.5, 0.5))
    # spare capacity differs: 'c' (2 of 5) is short itself, so only 'b' takes the spill
    assert plan(three((0, 5, 2)), Zones("a")).shares == pytest.approx((0.0, 1.0, 0.0))
    some = plan(three((0, 5, 4)), Zones("a")).shares
    assert some[1] > some[2] > 0.0
    assert sum(some) == pytest.approx(1.0)


def test_every_healthy_instance_gets_the_same_load() -> None:
    # Zone-aware routing's promise (Envoy's): with callers spread like the service,
    # every zone's calls kept or spilled add up to load in proportion to healthy
    # capacity, whatever is down. Random configurations, each caller zone in turn.
    rng = random.Random(7)
    for _ in range(300):
        zones = "abcd"[: rng.randint(2, 4)]
        totals = [float(rng.randint(1, 9)) for _ in zones]
        healthy = [float(rng.randint(0, int(total))) for total in totals]
        if sum(healthy) * 1.4 < 0.5 * sum(totals) or not sum(healthy):
            continue  # panic: health is ignored by design
        groups = [Group(0, zone, total, part)
                  for zone, total, part in zip(zones, totals, healthy, strict=True)]
        load = [0.0] * len(zones)
        for caller, total in zip(zones, totals, strict=True):
            for index, share in enumerate(plan(groups, Zones(caller)).shares):
                load[index] += total / sum(totals) * share
        for index, part in enumerate(healthy):
            assert load[index] == pytest.approx(part / sum(healthy), abs=1e-9), (
                groups, load)


def test_callers_deployed_unlike_the_service() -> None:
    # One instance in 'a' but half the callers there: all-local would overload it.
    groups = [Group(0, "a", 1, 1), Group(0, "b", 5, 5), Group(0, "c", 5, 5)]
    assume_like_service = plan(groups, Zones("a")).shares
    assert assume_like_service[0] == 1.0
    told = plan(groups, Zones("a", callers={"a": 6, "b": 3, "c": 3})).shares
    assert told[0] == pytest.approx((1 / 11) / 0.5)
    assert told[1] == pytest.approx(told[2])
    assert sum(told) == pytest.approx(1.0)


def test_overprovisioning_keeps_calls_in_a_tier() -> None:
    groups = [Group(0, "a", 10, 8), Group(1, "a", 10, 10)]
    assert plan(groups, Zones("a")).shares == pytest.approx((1.0, 0.0))  # 0.8 * 1.4 >= 1
    groups = [Group(0, "a", 10, 5), Group(1, "a", 10, 10)]
    assert plan(groups, Zones("a")).shares == pytest.approx((0.7, 0.3))  # 0.5 * 1.4
    exact = [Group(0, "a", 10, 5), Group(1, "a", 10, 10)]
    assert plan(exact, Zones("a", overprovisioning=1.0)).shares == pytest.approx((0.5, 0.5))


def test_a_dead_datacenter_fails_over_and_back() -> None:
    zones = Zones("a")
    dead = [Group(0, "a", 3, 0), Group(0, "b", 3, 0), Group(1, "a", 3, 3), Group(1, "b", 3, 3)]
    result = plan(dead, zones)
    assert result.shares == pytest.approx((0.0, 0.0, 1.0, 0.0))  # tier 1, still in-zone
    assert not any(result.panic)
    back = [Group(0, "a", 3, 3), Group(0, "b", 3, 3), Group(1, "a", 3, 3), Group(1, "b", 3, 3)]
    assert plan(back, zones).shares == pytest.approx((1.0, 0.0, 0.0, 0.0))


def test_priority_without_zones() -> None:
    groups = [Group(0, "", 4, 1), Group(3, "", 4, 4)]  # priorities need not be contiguous
    shares = plan(groups, Zones(None)).shares
    assert shares == pytest.approx((0.35, 0.65))


def test_loads_normalise_when_health_runs_short() -> None:
    # Two tiers at 30 % health each: 0.42 + 0.42 < 1, so each takes half.
    groups = [Group(0, "a", 10, 3), Group(1, "a", 10, 3)]
    result = plan(groups, Zones("a", panic_threshold=10.0))
    assert result.shares == pytest.approx((0.5, 0.5))
    assert not any(result.panic)


def test_panic_ignores_health() -> None:
    groups = three((1, 0, 0))  # 1 of 15 healthy: 9 % health
    result = plan(groups, Zones("a"))
    assert all(result.panic)
    assert result.shares == pytest.approx((1.0, 0.0, 0.0))  # spread over all of 'a'
    no_local = plan(three((0, 1, 0)), Zones(None))
    assert all(no_local.panic)
    assert no_local.shares == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    # threshold 0: never panic; what is healthy takes everything
    calm = plan(three((0, 1, 0)), Zones("a", panic_threshold=0.0))
    assert not any(calm.panic)
    assert calm.shares == pytest.approx((0.0, 1.0, 0.0))


def test_nothing_healthy_anywhere_without_panic_spreads_the_first_tier() -> None:
    groups = [Group(0, "a", 2, 0), Group(0, "b", 2, 0), Group(1, "a", 2, 0)]
    result = plan(groups, Zones("a", panic_threshold=0.0))
    assert result.shares == pytest.approx((1.0, 0.0, 0.0))


def test_no_local_zone_splits_by_effective_capacity() -> None:
    groups = three((5, 2, 5))
    shares = plan(groups, Zones(None)).shares
    capacity = (5.0, 2.8, 5.0)
    assert shares == pytest.approx(tuple(part / sum(capacity) for part in capacity))
    # a caller in a zone the service does not run in: the same
    assert plan(groups, Zones("elsewhere")).shares == pytest.approx(shares)


def test_weights_not_counts() -> None:
    # Group totals are weights (envoy#41992: zone-aware must work with weights).
    groups = [Group(0, "a", 30.0, 10.0), Group(0, "b", 10.0, 10.0)]
    shares = plan(groups, Zones("a")).shares
    assert shares[0] == pytest.approx((10 / 20) / (30 / 40))
    assert sum(shares) == pytest.approx(1.0)


def test_no_groups() -> None:
    assert plan([], Zones("a")) == Plan((), ())
