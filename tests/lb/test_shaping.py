"""The issue-21 options on every built-in balancer: slow start, zones with priority
failover and panic, and deterministic subsets (lb.shaping).  Active health checks on
balancers are in tests/lb/test_health_balancing.py.

Time is a fake clock where ramps or ejections matter (the balancers' ``time``
module is replaced), so shares are checked at exact ages, not by sleeping.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from kitsd import lb, sd
from kitsd.lb import consistent_hash as consistent_hash_module
from kitsd.lb import pool as pool_module
from kitsd.lb.aperture import Aperture
from kitsd.lb.shaping import check_options
from kitsd.lb.slow_start import SlowStart
from kitsd.lb.zones import Zones


def linear(**settings: Any) -> SlowStart:
    """Envoy's curve: linear, from a 10 % floor unless given (not the defaults)."""
    return SlowStart(**{"aggression": 1.0, "min_weight_percent": 10.0, **settings})


REFUSED = ConnectionRefusedError("refused")


def refused(instance: str) -> lb.Pick:
    """A pick of ``instance`` to report a refused connection for."""
    return lb.Pick(instance, lambda request: request)
LONG = lb.OutlierDetection(base_ejection_time=600.0, max_ejection_time=600.0,
                           max_ejected_percent=100.0)


class FakeTime:
    """Stands in for the ``time`` module of the balancers: ``monotonic()`` is ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(pool_module, "time", fake)
    monkeypatch.setattr(consistent_hash_module, "time", fake)
    return fake


Make = Callable[..., Any]
BALANCERS: dict[str, Make] = {
    "RoundRobin": lambda source, **options: lb.RoundRobin(source, **options),
    "Random": lambda source, **options: lb.Random(source, seed=3, **options),
    "LeastLoaded": lambda source, **options: lb.LeastLoaded(source, seed=3, **options),
    "PeakEWMA": lambda source, **options: lb.PeakEWMA(source, seed=3, **options),
    "Weighted": lambda source, **options: lb.Weighted(source, **options),
    "ConsistentHash": lambda source, **options: lb.ConsistentHash(
        source, key=lambda request: request, **options),
}


def picker(balancer: Any) -> Callable[..., lb.Pick]:
    """``pick(exclude)``, with a fresh key per call for a consistent-hash balancer."""
    if isinstance(balancer, lb.ConsistentHash):
        keys = itertools.count()
        return lambda exclude=(): balancer.pick_for(f"key-{next(keys)}", exclude)
    return balancer.pick  # type: ignore[no-any-return]


def shares(balancer: Any, picks: int = 4000, exclude: tuple[str, ...] = ()) -> Counter[str]:
    pick = picker(balancer)
    return Counter(pick(exclude).instance for _ in range(picks))


def endpointer(instances: list[str],
               info: dict[str, sd.InstanceInfo] | None = None) -> tuple[sd.MemoryRegistry, Any]:
    """An Endpointer over a MemoryRegistry (so instances can come and go)."""
    registry = sd.MemoryRegistry()
    for instance in instances:
        registry.registrar("svc", instance, info=(info or {}).get(instance)).register()
    source = sd.Endpointer(registry.instancer("svc"), lambda instance: lambda request: instance)
    return registry, source


def host(index: int) -> str:
    """Instance ``index``: three-digit hosts, so names sort in number order."""
    return f"10.0.0.{100 + index}:80"


def names(count: int, start: int = 0) -> list[str]:
    return [host(index) for index in range(start, start + count)]


# --- options checking -------------------------------------------------------------------


@pytest.mark.parametrize(("options", "name"), [
    ({"slow_start": 30}, "slow_start"),
    ({"zones": "eu-1"}, "zones"),
    ({"subset": 10}, "subset"),
    ({"health_checkers": object()}, "health_checkers"),
    ({"health_check": "/health"}, "health_check"),
    ({"slowstart": SlowStart()}, r"lb\.\w+\(\) got an unexpected keyword argument 'slowstart'$"),
])
@pytest.mark.parametrize("make", BALANCERS.values(), ids=BALANCERS.keys())
def test_bad_options_fail_at_construction(options: dict[str, object], name: str,
                                          make: Make) -> None:
    _, source = endpointer(names(3))
    with pytest.raises(TypeError) as caught:
        make(source, **options)
    assert re.match(name, str(caught.value)), str(caught.value)


def test_a_health_check_needs_its_owner() -> None:
    with pytest.raises(TypeError, match=r"^health_checkers must be given"):
        check_options({"health_check": lb.HttpCheck()}, "lb.RoundRobin")
    with lb.HealthCheckers() as checkers, pytest.raises(TypeError,
                                                       match="without a health_check"):
        check_options({"health_checkers": checkers}, "lb.RoundRobin")


def test_options_need_a_snapshot_source() -> None:
    class Listed:
        def endpoints(self) -> list[Any]:
            return [lambda request: request]

    with pytest.raises(TypeError, match=r"slow_start need an sd\.Endpointer"):
        lb.RoundRobin(Listed(), slow_start=SlowStart())
    assert lb.RoundRobin(Listed()).pick()  # without options, any source still works


# --- slow start --------------------------------------------------------------------------


@pytest.mark.parametrize("make", BALANCERS.values(), ids=BALANCERS.keys())
def test_a_newcomer_ramps_for_every_balancer(make: Make, clock: FakeTime) -> None:
    registry, source = endpointer(names(4))
    balancer = make(source, slow_start=linear(window=10.0, min_weight_percent=5.0),
                    outlier_detection=None)
    assert len(shares(balancer, 400)) == 4  # the first set is warm: every one serves
    registry.registrar("svc", host(9)).register()
    shares(balancer, 1)
    fair = 4000 / 5
    seen = []
    for age in (0.0, 2.5, 5.0, 7.5, 10.0, 20.0):
        clock.now = 1000.0 + age
        seen.append(shares(balancer)[host(9)])
    assert seen[0] < 0.25 * fair, seen  # 5 % weight at first (two-choice: less still)
    assert seen[-2] > 0.75 * fair, seen  # warm at the end
    assert seen[-1] > 0.75 * fair, seen
    assert seen[2] > seen[0], seen
    for earlier, later in itertools.pairwise(seen[:5]):
        assert later >= earlier - 0.06 * fair, seen  # grows (give or take sampling)


@pytest.mark.parametrize("name", ["RoundRobin", "Random", "Weighted"])
def test_the_newcomers_share_follows_the_curve(name: str, clock: FakeTime) -> None:
    registry, source = endpointer(names(4))
    balancer = BALANCERS[name](source, slow_start=linear(window=10.0,
                                                            min_weight_percent=10.0))
    shares(balancer, 10)
    registry.registrar("svc", host(9)).register()
    shares(balancer, 1)
    for age, factor in ((0.0, 0.1), (3.0, 0.3), (6.0, 0.6), (12.0, 1.0)):
        clock.now = 1000.0 + age
        got = shares(balancer, 8000)[host(9)] / 8000
        assert got == pytest.approx(factor / (4 + factor), abs=0.02), (age, got)


def test_no_surge_at_the_end_of_the_window(clock: FakeTime) -> None:
    # envoy#26290: the old instances' share steps down smoothly to 1/5 and the
    # newcomer's up to 1/5, with no jump when the ramp ends.
    registry, source = endpointer(names(4))
    balancer = lb.Random(source, seed=5, slow_start=linear(window=10.0))
    shares(balancer, 10)
    registry.registrar("svc", host(9)).register()
    shares(balancer, 1)  # the balancer sees it now: its ramp starts
    before_end, after_end = [], []
    for age in (9.6, 9.8, 9.99):
        clock.now = 1000.0 + age
        before_end.append(shares(balancer, 10000)[host(0)] / 10000)
    for age in (10.01, 10.2, 10.4):
        clock.now = 1000.0 + age
        after_end.append(shares(balancer, 10000)[host(0)] / 10000)
    assert max(before_end + after_end) - min(before_end + after_end) < 0.03
    assert all(0.19 < share < 0.225 for share in before_end + after_end)


def test_another_join_does_not_restart_a_ramp(clock: FakeTime) -> None:
    registry, source = endpointer(names(4))
    balancer = lb.RoundRobin(source, slow_start=linear(window=10.0, min_weight_percent=0.0))
    shares(balancer, 10)
    registry.registrar("svc", host(8)).register()
    shares(balancer, 1)  # a ramp starts when the balancer sees the newcomer
    clock.now += 5.0
    registry.registrar("svc", host(9)).register()
    got = shares(balancer, 10000)
    # 10.0.0.8 is half way (factor 0.5), the later one just started (factor 0)
    assert got[host(8)] / 10000 == pytest.approx(0.5 / 4.5, abs=0.02)
    assert got[host(9)] == 0


def test_when_every_instance_is_new_the_warmth_says_so(clock: FakeTime) -> None:
    # envoy#24689: relative weights cannot ramp a fleet that is new as a whole; the
    # balancer's warmth (what an adaptive limit scales by) can.
    _, source = endpointer(names(4))
    balancer = lb.RoundRobin(source, slow_start=linear(window=10.0, warm_start=False,
                                                          min_weight_percent=10.0))
    got = shares(balancer, 4000)
    assert all(count == 1000 for count in got.values())  # equal: no one to shift to
    assert balancer.warmth() == pytest.approx(0.1)
    clock.now += 5.0
    assert balancer.warmth() == pytest.approx(0.5)
    clock.now += 5.0
    assert balancer.warmth() == 1.0
    assert lb.RoundRobin(source).warmth() == 1.0


@pytest.mark.parametrize("make", BALANCERS.values(), ids=BALANCERS.keys())
def test_slow_start_alone_is_the_plain_pick_while_nothing_ramps(
        make: Make, clock: FakeTime, monkeypatch: pytest.MonkeyPatch) -> None:
    # What lets the transport turn it on by default: no shape is built or read while
    # no instance ramps, and the picks are the plain balancer's, one for one.
    from kitsd.lb import shaping as shaping_module

    shaped = []
    current = shaping_module.Shaping.current

    def spy(self: Any, *args: Any) -> Any:
        shaped.append(clock.now)
        return current(self, *args)

    monkeypatch.setattr(shaping_module.Shaping, "current", spy)
    registry, source = endpointer(names(4))
    plain, slow = make(source), make(source, slow_start=SlowStart(window=10.0))
    assert [pick.instance for pick in map(picker(slow), [()] * 200)] == [
        pick.instance for pick in map(picker(plain), [()] * 200)]
    assert shaped == []
    registry.registrar("svc", host(9)).register()
    shares(slow, 50)  # a newcomer: shaped picks
    assert shaped
    clock.now += 10.0  # its ramp has ended
    shaped.clear()
    assert shares(slow, 50)
    assert shaped == []


def test_a_scale_up_leaves_the_warmth_whole(clock: FakeTime) -> None:
    # 4 warm, 4 new: the limit an adaptive concurrency limit applies is not halved.
    registry, source = endpointer(names(4))
    balancer = lb.RoundRobin(source, slow_start=SlowStart(window=10.0))
    shares(balancer, 10)
    for index in range(4, 8):
        registry.registrar("svc", host(index)).register()
    assert balancer.warmth() == 1.0
    assert shares(balancer, 4000)[host(4)] < 40  # the newcomers are held back all the same


def test_a_returning_instance_ramps_again(clock: FakeTime) -> None:
    registry, source = endpointer(names(4))
    balancer = lb.RoundRobin(source, slow_start=linear(window=10.0, min_weight_percent=0.0))
    shares(balancer, 10)
    registrar = registry.registrar("svc", host(9))
    registrar.register()
    shares(balancer, 1)
    clock.now += 20.0
    assert shares(balancer, 5000)[host(9)] == 1000
    registrar.deregister()
    shares(balancer, 10)
    registrar.register()
    shares(balancer, 1)
    clock.now += 5.0
    assert shares(balancer, 9000)[host(9)] / 9000 == pytest.approx(0.5 / 4.5, abs=0.02)


# --- zones --------------------------------------------------------------------------------


def zoned(per_zone: int = 3, zones: str = "abc", priority: int | None = None,
          start: int = 0, weights: dict[int, int] | None = None
          ) -> dict[str, sd.InstanceInfo]:
    info = {}
    index = start
    for zone in zones:
        for _ in range(per_zone):
            meta = {"zone": zone}
            if priority is not None:
                meta["priority"] = str(priority)
            info[host(index)] = sd.InstanceInfo(
                weight=(weights or {}).get(index, 1), meta=meta)
            index += 1
    return info


def in_zone(info: dict[str, sd.InstanceInfo], zone: str) -> set[str]:
    return {key for key, value in info.items() if value.meta.get("zone") == zone}


@pytest.mark.parametrize("make", BALANCERS.values(), ids=BALANCERS.keys())
def test_a_healthy_local_zone_keeps_every_call(make: Make) -> None:
    info = zoned()
    _, source = endpointer(sorted(info), info)
    balancer = make(source, zones=Zones("b"))
    got = shares(balancer, 3000)
    assert set(got) == in_zone(info, "b")
    if not isinstance(balancer, lb.ConsistentHash):
        assert min(got.values()) > 800  # spread within the zone


@pytest.mark.parametrize("make", BALANCERS.values(), ids=BALANCERS.keys())
def test_a_weakened_zone_spills_in_proportion(make: Make, clock: FakeTime) -> None:
    info = zoned()
    _, source = endpointer(sorted(info), info)
    balancer = make(source, zones=Zones("a"), outlier_detection=LONG)
    shares(balancer, 10)
    local = sorted(in_zone(info, "a"))
    for key in local[:2]:  # two of the three local instances are out
        balancer.report(refused(key), REFUSED)
    assert sorted(balancer.ejected()) == local[:2]
    got = shares(balancer, 9000)
    local_share = got[local[2]] / 9000
    expected = (1 / 7) / (3 / 9)  # u/c: its capacity in rotation over its callers' share
    assert local_share == pytest.approx(expected, abs=0.04)
    assert not (set(got) & set(local[:2]))  # nothing goes to the ejected ones
    others = [got[key] for key in in_zone(info, "b") | in_zone(info, "c")]
    assert min(others) > 0


@pytest.mark.parametrize("make", BALANCERS.values(), ids=BALANCERS.keys())
def test_a_dead_zone_fails_no_call(make: Make) -> None:
    info = zoned()
    dead = in_zone(info, "a")
    registry = sd.MemoryRegistry()
    for key, value in info.items():
        registry.registrar("svc", key, info=value).register()

    def factory(instance: str) -> Callable[[Any], str]:
        def call(request: Any) -> str:
            if instance in dead:
                raise ConnectionRefusedError(instance)
            return instance
        return call

    source = sd.Endpointer(registry.instancer("svc"), factory)
    balancer = make(source, zones=Zones("a"),
                    outlier_detection=lb.OutlierDetection(max_ejected_percent=100.0))
    call = lb.retry(4, 5.0, balancer)
    answers = Counter(call(f"request-{number}") for number in range(600))
    assert sum(answers.values()) == 600  # every call answered: 0 failed
    assert not set(answers) & dead


@pytest.mark.parametrize("make", BALANCERS.values(), ids=BALANCERS.keys())
def test_a_retry_goes_to_another_zone(make: Make) -> None:
    # The local zone's instances fail with an error that ejects nothing (a reset
    # connection, say): the retry still leaves the zone, as Envoy's
    # previous_priorities predicate does for tiers.
    info = zoned()
    broken = in_zone(info, "a")
    registry = sd.MemoryRegistry()
    for key, value in info.items():
        registry.registrar("svc", key, info=value).register()

    def factory(instance: str) -> Callable[[Any], str]:
        def call(request: Any) -> str:
            if instance in broken:
                raise RuntimeError(f"reset by {instance}")
            return instance
        return call

    balancer = make(sd.Endpointer(registry.instancer("svc"), factory), zones=Zones("a"))
    call = lb.retry(2, 5.0, balancer)
    answers = Counter(call(f"request-{number}") for number in range(200))
    assert sum(answers.values()) == 200
    assert not set(answers) & broken


def test_weights_and_zones_together() -> None:
    # envoy#41992: zone awareness with weighted round robin.
    info = zoned(per_zone=2, weights={0: 5, 1: 1})
    _, source = endpointer(sorted(info), info)
    balancer = lb.Weighted(source, zones=Zones("a"))
    got = shares(balancer, 6000)
    assert set(got) == in_zone(info, "a")
    assert got[host(0)] == 5000
    assert got[host(1)] == 1000


def test_zone_capacity_counts_weights(clock: FakeTime) -> None:
    # Zone 'a' has weight 6 of 12 but its heavy instance is out: 1 of its 6 remains.
    info = zoned(per_zone=2, zones="ab", weights={0: 5, 1: 1, 2: 3, 3: 3})
    _, source = endpointer(sorted(info), info)
    balancer = lb.Weighted(source, zones=Zones("a"), outlier_detection=LONG)
    shares(balancer, 10)
    balancer.report(refused(host(0)), REFUSED)
    got = shares(balancer, 7000)
    assert got[host(1)] / 7000 == pytest.approx((1 / 7) / (6 / 12), abs=0.03)


def test_priority_tiers_fail_over_and_back(clock: FakeTime) -> None:
    info = zoned(per_zone=2, zones="ab", priority=0) | zoned(per_zone=2, zones="ab",
                                                             priority=1, start=4)
    _, source = endpointer(sorted(info), info)
    balancer = lb.PeakEWMA(source, seed=1, zones=Zones("a"), outlier_detection=LONG)
    assert set(shares(balancer, 2000)) == {host(0), host(1)}
    for index in range(4):  # the whole first tier goes dark
        balancer.report(refused(host(index)), REFUSED)
    assert set(shares(balancer, 2000)) == {host(4), host(5)}  # tier 1, zone a
    clock.now += 601.0  # the ejections end: back to the first tier
    assert set(shares(balancer, 2000)) == {host(0), host(1)}


def test_panic_spreads_over_everyone(clock: FakeTime) -> None:
    info = zoned(per_zone=2)
    _, source = endpointer(sorted(info), info)
    balancer = lb.Random(source, seed=2, zones=Zones("a"), outlier_detection=LONG)
    shares(balancer, 10)
    for key in sorted(info)[:5]:  # 5 of 6 out: 1/6 * 1.4 < 50 %
        balancer.report(refused(key), REFUSED)
    got = shares(balancer, 3000)
    assert set(got) == in_zone(info, "a")  # health ignored: the local zone's two again


def test_an_unusable_priority_is_tier_0_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    info = {host(0): sd.InstanceInfo(meta={"zone": "a", "priority": "high"}),
            host(1): sd.InstanceInfo(meta={"zone": "a", "priority": "1"})}
    _, source = endpointer(sorted(info), info)
    balancer = lb.RoundRobin(source, zones=Zones("a"))
    with caplog.at_level("WARNING", logger="kitsd.lb.shaping"):
        assert set(shares(balancer, 100)) == {host(0)}
    assert sum("unusable 'priority'" in record.message for record in caplog.records) == 1


# --- subsets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", BALANCERS.values(), ids=BALANCERS.keys())
def test_a_subset_is_all_a_client_uses(make: Make) -> None:
    instances = names(10)
    _, source = endpointer(instances)
    balancer = make(source, subset=Aperture(size=3, client=1, clients=4))
    got = shares(balancer, 4000)
    # width: 3/10 of the ring rounded to whole client slices of 1/4: one, 2.5
    # instances from 10 * 1/4 = 2.5 on: half of #2, then #3 and #4
    assert set(got) == set(instances[2:5])
    if not isinstance(balancer, (lb.ConsistentHash, lb.LeastLoaded, lb.PeakEWMA)):
        for key in instances[3:5]:
            assert got[key] / 4000 == pytest.approx(0.4, abs=0.03)
        assert got[instances[2]] / 4000 == pytest.approx(0.2, abs=0.03)


def test_a_subset_follows_a_rank(clock: FakeTime) -> None:
    instances = names(12)
    _, source = endpointer(instances)
    position = [(0, 3)]
    balancer = lb.RoundRobin(source, subset=Aperture(size=4, rank=lambda: position[0]))
    assert set(shares(balancer, 1200)) == set(instances[:4])
    position[0] = (1, 3)
    clock.now += 2.0  # a rank is read again every second
    assert set(shares(balancer, 1200)) == set(instances[4:8])


def test_a_dead_subset_falls_back_to_the_rest(clock: FakeTime) -> None:
    instances = names(6)
    _, source = endpointer(instances)
    balancer = lb.RoundRobin(source, subset=Aperture(size=2, client=0, clients=3),
                             outlier_detection=lb.OutlierDetection(max_ejected_percent=100.0,
                                                                   panic_threshold=0.0))
    shares(balancer, 10)
    for key in instances[:2]:
        balancer.report(refused(key), REFUSED)
    got = shares(balancer, 600)
    assert set(got) <= set(instances[2:])
    assert got


# --- the plain path stays plain ------------------------------------------------------------


@pytest.mark.parametrize("make", BALANCERS.values(), ids=BALANCERS.keys())
def test_without_options_nothing_is_built(make: Make) -> None:
    _, source = endpointer(names(3))
    balancer = make(source)
    shares(balancer, 10)
    assert balancer._shaping is None
    assert balancer.unhealthy() == []
    balancer.close()
