"""lb.pool: what every built-in balancer shares — snapshots, steering around excluded and
ejected instances, and ejection state owned by the balancer (issue 6.4, 6.7, 7.4)."""

from __future__ import annotations

import gc
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from kitsd import lb, sd
from kitsd.core.endpoint import Endpoint
from kitsd.lb.pool import Pool
from tests.helpers import wait_for
from tests.lb.sources import Static, noop

Make = Callable[..., Pool]
BALANCERS: dict[str, Make] = {
    "round_robin": lambda source, **kw: lb.RoundRobin(source, **kw),
    "random": lambda source, **kw: lb.Random(source, seed=7, **kw),
    "least_loaded": lambda source, **kw: lb.LeastLoaded(source, seed=7, **kw),
}
REFUSED = ConnectionRefusedError("refused")
LONG = lb.OutlierDetection(base_ejection_time=60.0, max_ejection_time=120.0)


@pytest.fixture(params=sorted(BALANCERS))
def make(request: pytest.FixtureRequest) -> Make:
    return BALANCERS[request.param]


class Echo:
    """An endpoint object (weak-referenceable) answering its instance; can refuse."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.refusing = False
        self.closed = False

    def __call__(self, request: Any) -> str:
        if self.refusing:
            raise ConnectionRefusedError(f"{self.instance} refused")
        return self.instance

    def close(self) -> None:
        self.closed = True


def instances(n: int) -> list[str]:
    return [f"10.0.{i // 250}.{i % 250 + 1}:80" for i in range(n)]


@pytest.fixture
def registry() -> sd.MemoryRegistry:
    return sd.MemoryRegistry()


def answer(pick: lb.Pick) -> str:
    return str(pick.endpoint(None))


def test_built_in_balancers_are_pickers(make: Make) -> None:
    balancer = make(Static([noop("a")]))
    assert isinstance(balancer, lb.Balancer)
    assert isinstance(balancer, lb.Picker)
    pick = balancer.pick()
    assert isinstance(pick, lb.Pick)
    assert pick.instance.startswith("<endpoint at 0x")  # a source that names no instances
    assert balancer.outlier_detection == lb.OutlierDetection()


# --- bad arguments (issue 7.9) ------------------------------------------------------------


@pytest.mark.parametrize("source", [None, 5, "10.0.0.1:80", [noop("a")]])
def test_balancers_reject_a_non_source_at_construction(make: Make, source: object) -> None:
    with pytest.raises(TypeError, match="endpointer"):
        make(source)


def test_balancers_reject_a_bad_outlier_detection(make: Make) -> None:
    with pytest.raises(TypeError, match="outlier_detection"):
        make(Static([]), outlier_detection={"base_ejection_time": 1.0})


# --- snapshots: picks read the Endpointer's immutable set (issue 6.7) ---------------------


class SnapshotOnly:
    """A source whose ``endpoints()`` must not be used: it copies, which is O(n)."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        names = sorted(instances(len(endpoints)))
        self.set = sd.EndpointSet(tuple(names), tuple(endpoints))
        self.reads = 0

    def snapshot(self) -> sd.EndpointSet:
        self.reads += 1
        return self.set

    def pick(self, index: int) -> lb.Pick:
        """What a balancer hands out for the ``index``-th instance."""
        return lb.Pick(self.set.instances[index], self.set.endpoints[index])

    def endpoints(self) -> list[Endpoint]:
        raise AssertionError("endpoints() copies the list: picks must use snapshot()")


def test_picks_read_the_snapshot_not_a_copy(make: Make) -> None:
    source = SnapshotOnly([noop(name) for name in "abc"])
    balancer = make(source)
    picks = [balancer.pick() for _ in range(30)]
    assert source.reads == 30
    assert {pick.instance for pick in picks} == set(source.set.instances)
    for pick in picks:  # each pick names the instance of the endpoint it hands out
        index = source.set.instances.index(pick.instance)
        assert answer(pick) == source.set.endpoints[index](None)


def test_round_robin_over_an_endpointer_is_exact(registry: sd.MemoryRegistry) -> None:
    names = instances(5)
    for name in names:
        registry.registrar("svc", name).register()
    with sd.Endpointer(registry.instancer("svc"), Echo) as endpointer:
        balancer = lb.RoundRobin(endpointer)
        assert [answer(balancer.pick()) for _ in range(10)] == names * 2


# --- steering: exclusion and ejection, O(1) expected, never empty -------------------------


def test_exclusion_is_honoured_while_others_remain(make: Make) -> None:
    endpoints = [noop(name) for name in "abcd"]
    source = SnapshotOnly(endpoints)
    balancer = make(source)
    names = source.set.instances
    for excluded in ({names[0]}, {names[1], names[3]}, set(names[:3])):
        picked = {balancer.pick(excluded).instance for _ in range(50)}
        assert picked == set(names) - excluded
    assert {balancer.pick(set(names)).instance for _ in range(50)} <= set(names)  # never empty


def test_ejected_instances_are_skipped_at_scale(make: Make) -> None:
    # 1,000 instances, 40 % ejected: steered picks probe, yet never return an ejected one.
    n = 1000
    source = SnapshotOnly([noop(str(i)) for i in range(n)])
    balancer = make(source, outlier_detection=LONG)
    balancer.pick()  # the balancer has now seen the set
    for index in range(800):  # a contiguous block: the hard case for probing in order
        balancer.report(source.pick(index), REFUSED)
    out = set(balancer.ejected())
    assert len(out) == n // 2  # capped at half of the pool
    picks = Counter(balancer.pick().instance for _ in range(5000))
    assert not set(picks) & out
    assert len(picks) > n // 2 - 100  # spread over the healthy ones


def test_round_robin_passes_over_an_ejected_slot_evenly() -> None:
    source = SnapshotOnly([noop(name) for name in "abc"])
    balancer = lb.RoundRobin(source, outlier_detection=LONG)
    balancer.pick()
    balancer.report(source.pick(2), REFUSED)
    counts = Counter(balancer.pick().instance for _ in range(600))
    assert counts == {source.set.instances[0]: 300, source.set.instances[1]: 300}


def test_when_all_others_are_excluded_an_ejected_one_is_used(make: Make) -> None:
    source = SnapshotOnly([noop(name) for name in "abcd"])
    balancer = make(source, outlier_detection=LONG)
    a, b, c, d = source.set.instances
    balancer.pick()
    for index in (2, 3):
        balancer.report(source.pick(index), REFUSED)
    assert set(balancer.ejected()) == {c, d}
    assert {balancer.pick({a}).instance for _ in range(30)} == {b}
    assert {balancer.pick({a, b}).instance for _ in range(30)} <= {c, d}


def test_success_puts_an_instance_back(make: Make) -> None:
    source = SnapshotOnly([noop(name) for name in "ab"])
    balancer = make(source, outlier_detection=LONG)
    b = source.set.instances[1]
    balancer.pick()
    balancer.report(source.pick(1), REFUSED)
    assert balancer.ejected() == [b]
    balancer.report(source.pick(1), None)
    assert balancer.ejected() == []


# --- ejection state belongs to the balancer (issue 6.4) -----------------------------------


def test_two_stacks_in_one_process_do_not_affect_each_other(
    registry: sd.MemoryRegistry,
) -> None:
    # Two unrelated clients of the same service: one learns that b refuses; the
    # other has not called b and must keep it in rotation.  (A process-wide table
    # keyed by endpoint made the second skip b too.)
    names = instances(3)
    for name in names:
        registry.registrar("svc", name).register()
    refusing = {names[1]}

    def factory(instance: str) -> Endpoint:
        def endpoint(request: Any) -> str:
            if instance in refusing:
                raise ConnectionRefusedError(f"{instance} refused")
            return instance

        return endpoint

    with sd.Endpointer(registry.instancer("svc"), factory) as endpointer:
        first, second = lb.RoundRobin(endpointer), lb.RoundRobin(endpointer)
        call = lb.retry(3, 5.0, first)
        for _ in range(6):
            call(None)
        assert first.ejected() == [names[1]]
        assert second.ejected() == []
        refusing.clear()
        assert [second.endpoint()(None) for _ in range(3)] == names


def test_least_loaded_and_round_robin_over_one_endpointer(registry: sd.MemoryRegistry) -> None:
    # Each ejects by instance with its own state: LeastLoaded's wrappers do not hide
    # the instance, and what one learns does not steer the other.
    names = instances(4)
    for name in names:
        registry.registrar("svc", name).register()
    with sd.Endpointer(registry.instancer("svc"), Echo) as endpointer:
        refusing = endpointer.endpoints()[2]
        assert isinstance(refusing, Echo)
        refusing.refusing = True
        least, robin = lb.LeastLoaded(endpointer, seed=1), lb.RoundRobin(endpointer)
        least_call = lb.retry(3, 5.0, least)
        for _ in range(500):
            assert least_call(None) != names[2]
            if least.ejected():
                break
        assert least.ejected() == [names[2]]
        assert {least.endpoint()(None) for _ in range(100)} == set(names) - {names[2]}
        assert robin.ejected() == []
        robin_call = lb.retry(3, 5.0, robin)
        for _ in range(8):
            assert robin_call(None) != names[2]
        assert robin.ejected() == [names[2]]


def test_ejected_then_removed_instance_leaves_no_reference(
    make: Make, registry: sd.MemoryRegistry,
) -> None:
    # Issue 7.4: closed endpoints of instances that were ejected and then left were
    # kept alive (with their clients' buffers) by the ejection table.
    names = instances(4)
    registrars = [registry.registrar("svc", name) for name in names]
    for registrar in registrars:
        registrar.register()
    with sd.Endpointer(registry.instancer("svc"), Echo) as endpointer:
        balancer = make(endpointer, outlier_detection=LONG)
        gone = endpointer.endpoints()[1]
        assert isinstance(gone, Echo)
        gone.refusing = True
        ref = weakref.ref(gone)
        call = lb.retry(4, 5.0, balancer)
        while not balancer.ejected():
            call(None)
        assert balancer.ejected() == [names[1]]
        del gone
        registrars[1].deregister()
        # closed, and possibly already collected once closed (the retry's error cycle freed)
        wait_for(lambda: ref() is None or getattr(ref(), "closed", False),
                 what="the departed endpoint closed")
        gc.collect()
        assert ref() is None, gc.get_referrers(ref())
        balancer.pick()
        assert balancer.ejected() == []  # the record went with the instance


def test_foreign_source_records_pin_no_endpoint(make: Make) -> None:
    endpoints: list[Endpoint] = [Echo(name) for name in "abc"]
    source = Static(endpoints)
    balancer = make(source, outlier_detection=LONG)
    pick = balancer.pick()
    ref = weakref.ref(pick.endpoint if isinstance(pick.endpoint, Echo)
                      else pick.endpoint.__wrapped__)  # type: ignore[attr-defined]
    balancer.report(pick, REFUSED)
    assert len(balancer.ejected()) == 1
    source._endpoints = [e for e in endpoints if e is not ref()]
    del pick, endpoints
    gc.collect()
    assert ref() is None
    balancer.pick()
    assert balancer.ejected() == []  # dropped once the endpoint left the list


def test_an_instance_that_leaves_and_returns_starts_clean(
    make: Make, registry: sd.MemoryRegistry,
) -> None:
    names = instances(3)
    registrars = [registry.registrar("svc", name) for name in names]
    for registrar in registrars:
        registrar.register()
    with sd.Endpointer(registry.instancer("svc"), Echo) as endpointer:
        balancer = make(endpointer, outlier_detection=LONG)
        balancer.pick()
        balancer.report(lb.Pick(names[1], endpointer.endpoints()[1]), REFUSED)
        balancer.pick()
        assert balancer.ejected() == [names[1]]  # a pick over the same set keeps it
        # leaves and returns between two picks: a new endpoint for the same instance
        registrars[1].deregister()
        registrars[1].register()
        picked = {balancer.pick().instance for _ in range(100)}
        assert picked == set(names)  # back in rotation at once
        assert balancer.ejected() == []


def test_a_report_about_an_instance_that_left_keeps_nothing(
    make: Make, registry: sd.MemoryRegistry,
) -> None:
    names = instances(3)
    registrars = [registry.registrar("svc", name) for name in names]
    for registrar in registrars:
        registrar.register()
    with sd.Endpointer(registry.instancer("svc"), Echo) as endpointer:
        balancer = make(endpointer, outlier_detection=LONG)
        late = balancer.pick()
        registrars[names.index(late.instance)].deregister()
        balancer.pick()
        balancer.report(late, REFUSED)  # an attempt that was in flight when it left
        assert balancer.ejected() == []


def test_threads_pick_report_and_change_the_set_together(
    make: Make, registry: sd.MemoryRegistry, no_thread_leaks: None,
) -> None:
    # Picks, failure reports (ejections) and set changes race; nothing may break and
    # no pick may name an instance that never existed.
    names = instances(12)
    registrars = [registry.registrar("svc", name) for name in names]
    for registrar in registrars:
        registrar.register()
    problems: list[BaseException] = []
    stop = threading.Event()
    with sd.Endpointer(registry.instancer("svc"), Echo) as endpointer:
        balancer = make(endpointer, outlier_detection=lb.OutlierDetection(
            base_ejection_time=0.001, max_ejection_time=0.01))

        def picker(number: int) -> None:
            try:
                for i in range(3000):
                    pick = balancer.pick({names[number]} if i % 3 else ())
                    assert pick.instance in names
                    balancer.report(pick, REFUSED if i % 4 == 0 else None)
            except BaseException as error:  # reported below
                problems.append(error)

        def changer() -> None:
            while not stop.is_set():
                for registrar in registrars[:4]:
                    registrar.deregister()
                    registrar.register()

        threads = [threading.Thread(target=picker, args=(n,)) for n in range(6)]
        churn = threading.Thread(target=changer)
        churn.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        churn.join()
    assert problems == []
