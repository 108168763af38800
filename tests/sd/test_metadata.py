"""Instance metadata through the core: Event.info, the Broadcaster, MemoryRegistry,
FixedInstancer, EndpointCache/Endpointer and factory_with_info."""

from __future__ import annotations

import itertools
import random
from types import MappingProxyType
from typing import Any

import pytest

from kitsd import sd
from kitsd.core.errors import InvalidInstanceError, MisuseError
from kitsd.sd.endpoint_cache import EndpointCache
from kitsd.sd.endpointer import Endpointer
from kitsd.sd.event import Delta, Event, same_info
from kitsd.sd.instance_info import DEFAULT_INFO, NO_INFO, InstanceInfo, factory_with_info
from kitsd.sd.instancer import Broadcaster, FixedInstancer
from kitsd.sd.memory import MemoryRegistry

HEAVY = InstanceInfo(weight=5, tags=("blue",), meta={"zone": "a"})
LIGHT = InstanceInfo(weight=2)


def endpoint(request: Any) -> Any:
    return request


def make(instance: str) -> Any:
    return endpoint


# -- Event -----------------------------------------------------------------------


def test_info_is_keyword_only_defaults_empty_and_takes_part_in_equality() -> None:
    plain = Event(("a:1",))
    assert plain.info == {}
    weighted = Event(("a:1",), info={"a:1": HEAVY})
    assert weighted != plain
    assert not weighted.same_state(plain)
    assert Event(("a:1",), info={"a:1": HEAVY}) == weighted
    assert hash(weighted) == hash(plain)  # info is not hashed (mappings are not hashable)
    assert "weight=5" in repr(weighted)
    assert "info" not in repr(plain)


def test_a_default_entry_means_the_same_as_no_entry() -> None:
    assert same_info({"a:1": DEFAULT_INFO}, {})
    assert Event(("a:1",), info={"a:1": InstanceInfo()}).same_state(Event(("a:1",)))
    assert not same_info({"a:1": LIGHT}, {})


def test_instance_info_equality_and_repr() -> None:
    assert InstanceInfo(3, ("x",), {"k": "v"}) == InstanceInfo(3, ["x"], {"k": "v"})  # type: ignore[arg-type]
    assert InstanceInfo(3, meta={"k": "v"}) != InstanceInfo(3, meta={"k": "w"})
    assert repr(InstanceInfo()) == "InstanceInfo()"
    assert repr(InstanceInfo(2, meta={"k": "v"})) == "InstanceInfo(weight=2, meta={'k': 'v'})"
    assert DEFAULT_INFO.is_default
    assert not LIGHT.is_default


# -- Broadcaster -------------------------------------------------------------------


def collect(broadcaster: Broadcaster) -> list[Event]:
    events: list[Event] = []
    broadcaster.subscribe(events.append)
    return events


def test_a_weight_change_alone_is_delivered_with_a_delta_naming_it() -> None:
    broadcaster = Broadcaster()
    events = collect(broadcaster)
    assert broadcaster.publish(Event(("b:1", "a:1"), info={"a:1": LIGHT}))
    instances = broadcaster.state.instances
    assert broadcaster.publish(Event(("a:1", "b:1"), info={"a:1": HEAVY}))
    last = events[-1]
    assert last.instances is instances  # the same tuple: instances did not change
    assert dict(last.info) == {"a:1": HEAVY}
    assert last.delta is not None
    assert (last.delta.added, last.delta.removed) == ((), ())
    assert dict(last.delta.info) == {"a:1": HEAVY}


def test_unchanged_metadata_is_not_re_sent_and_keeps_its_mapping() -> None:
    broadcaster = Broadcaster()
    events = collect(broadcaster)
    broadcaster.publish(Event(("a:1", "b:1"), info={"a:1": LIGHT}))
    mapping = broadcaster.state.info
    assert not broadcaster.publish(Event(("b:1", "a:1"), info={"a:1": InstanceInfo(weight=2)}))
    assert not broadcaster.publish(Event(("a:1", "b:1"), info={"a:1": LIGHT, "b:1": DEFAULT_INFO}))
    assert len(events) == 2
    assert broadcaster.publish(Event(("a:1", "b:1", "c:1"), info={"a:1": LIGHT}))
    assert broadcaster.state.info is mapping  # an instance-only change reuses the metadata


def test_defaults_and_strangers_are_dropped_from_published_info() -> None:
    broadcaster = Broadcaster()
    broadcaster.publish(Event(("a:1",), info={"a:1": DEFAULT_INFO, "z:9": HEAVY}))
    assert dict(broadcaster.state.info) == {}


def test_clearing_metadata_is_a_change_whose_delta_says_default() -> None:
    broadcaster = Broadcaster()
    events = collect(broadcaster)
    broadcaster.publish(Event(("a:1",), info={"a:1": LIGHT}))
    assert broadcaster.publish(Event(("a:1",)))
    assert events[-1].info == {}
    assert events[-1].delta is not None
    assert dict(events[-1].delta.info) == {"a:1": DEFAULT_INFO}


def test_a_departing_instance_takes_its_metadata_along() -> None:
    broadcaster = Broadcaster()
    broadcaster.publish(Event(("a:1", "b:1"), info={"a:1": LIGHT, "b:1": HEAVY}))
    info = broadcaster.state.info
    assert broadcaster.publish(Event(("b:1",), info=info))  # the old mapping, a:1 gone
    assert dict(broadcaster.state.info) == {"b:1": HEAVY}
    delta = broadcaster.state.delta
    assert delta is not None
    assert delta.removed == ("a:1",)
    assert not delta.info


def test_the_same_mapping_again_with_a_newly_added_instance_gives_its_metadata() -> None:
    broadcaster = Broadcaster()
    shared = {"a:1": LIGHT, "b:1": HEAVY}
    broadcaster.publish(Event(("a:1",), info=shared))
    assert dict(broadcaster.state.info) == {"a:1": LIGHT}
    assert broadcaster.publish(Event(("a:1", "b:1"), info=shared))
    assert dict(broadcaster.state.info) == {"a:1": LIGHT, "b:1": HEAVY}
    assert not broadcaster.publish(Event(("a:1", "b:1"), info=shared))


def test_errors_keep_the_metadata_and_new_subscribers_get_it_replayed() -> None:
    broadcaster = Broadcaster()
    broadcaster.publish(Event(("a:1",), info={"a:1": HEAVY}))
    broadcaster.publish_error(RuntimeError("down"))
    late = collect(broadcaster)
    assert late[0].error is not None
    assert dict(late[0].info) == {"a:1": HEAVY}


def test_a_delta_whose_info_does_not_fit_is_not_trusted() -> None:
    broadcaster = Broadcaster()
    broadcaster.publish(Event(("a:1", "b:1"), info={"a:1": LIGHT}))
    base = broadcaster.state.instances
    # An old-style publisher: the delta is about instances only and the event has no
    # info -- the metadata of a:1 must be dropped as the snapshot says, not kept.
    assert broadcaster.publish(Event(("a:1", "b:1", "c:1"), delta=Delta(base, ("c:1",))))
    assert broadcaster.state.info == {}
    # A delta that claims a change the event's info does not show is not trusted either.
    base = broadcaster.state.instances
    assert broadcaster.publish(Event(base, info={"b:1": HEAVY},
                                     delta=Delta(base, info={"b:1": LIGHT})))
    assert dict(broadcaster.state.info) == {"b:1": HEAVY}


def test_apply_carries_metadata() -> None:
    broadcaster = Broadcaster(Event(("a:1",)))
    events = collect(broadcaster)
    assert broadcaster.apply(added=["b:1"], info={"b:1": HEAVY})
    assert dict(events[-1].info) == {"b:1": HEAVY}
    assert broadcaster.apply(info={"a:1": LIGHT})  # metadata only
    assert dict(events[-1].info) == {"a:1": LIGHT, "b:1": HEAVY}
    assert not broadcaster.apply(info={"a:1": LIGHT})
    assert broadcaster.apply(removed=["a:1"])
    assert dict(events[-1].info) == {"b:1": HEAVY}


@pytest.mark.parametrize("seed", range(10))
def test_random_metadata_changes_match_a_from_scratch_view(seed: int) -> None:
    rng = random.Random(seed)
    pool = [f"10.0.0.{n}:80" for n in range(12)]
    infos = [DEFAULT_INFO, LIGHT, HEAVY, InstanceInfo(tags=("x",))]
    broadcaster = Broadcaster()
    events = collect(broadcaster)
    for _ in range(60):
        if rng.random() < 0.5:
            chosen = rng.sample(pool, rng.randint(0, len(pool)))
            info = {instance: rng.choice(infos) for instance in chosen if rng.random() < 0.6}
            broadcaster.publish(Event(tuple(chosen), info=info))
            want = {k: v for k, v in info.items() if not v.is_default}
            assert broadcaster.state.instances == tuple(sorted(chosen))
        else:
            state = broadcaster.state
            added = [i for i in rng.sample(pool, 2) if i not in state.instances]
            removed = [i for i in rng.sample(pool, 2) if i in state.instances]
            change = {i: rng.choice(infos) for i in (*added, *rng.sample(pool, 2))}
            broadcaster.apply(added=added, removed=removed, info=change)
            members = (set(state.instances) - set(removed)) | set(added)
            want = {k: v for k, v in state.info.items() if k in members}
            for k, v in change.items():
                if k in members and k not in removed:
                    want[k] = v
            want = {k: v for k, v in want.items() if not v.is_default}
        assert dict(broadcaster.state.info) == want
    # A subscriber applying every delta.info ends with the same metadata.
    mirror: dict[str, InstanceInfo] = {}
    for previous, event in itertools.pairwise(events):
        assert event.delta is not None
        assert event.delta.base is previous.instances
        for instance in event.delta.removed:
            mirror.pop(instance, None)
        for instance, value in event.delta.info.items():
            if value.is_default:
                mirror.pop(instance, None)
            else:
                mirror[instance] = value
        assert mirror == dict(event.info)


# -- MemoryRegistry -------------------------------------------------------------------


def test_memory_registrar_publishes_metadata() -> None:
    registry = MemoryRegistry()
    events: list[Event] = []
    registry.instancer("users").subscribe(events.append)
    with registry.registrar("users", "a:1", info=HEAVY), registry.registrar("users", "b:1"):
        assert events[-1].instances == ("a:1", "b:1")
        assert dict(events[-1].info) == {"a:1": HEAVY}
        assert dict(registry.info("users")) == {"a:1": HEAVY}
    assert events[-1].info == {}
    assert not events[-1].instances


def test_the_latest_registration_of_an_instance_gives_its_metadata() -> None:
    registry = MemoryRegistry()
    events: list[Event] = []
    registry.instancer("users").subscribe(events.append)
    first = registry.registrar("users", "a:1", info=LIGHT)
    second = registry.registrar("users", "a:1", info=HEAVY)
    first.register()
    second.register()  # same instance, new weight: a metadata-only change
    assert len(events) == 3
    assert events[-1].instances is events[-2].instances
    assert dict(events[-1].info) == {"a:1": HEAVY}
    second.deregister()  # back to the first registration's metadata
    assert dict(events[-1].info) == {"a:1": LIGHT}
    same = registry.registrar("users", "a:1", info=LIGHT)
    same.register()  # same metadata: no news
    assert len(events) == 4
    same.deregister()
    first.deregister()
    assert events[-1].instances == ()


def test_memory_registrar_refuses_bad_info() -> None:
    with pytest.raises(TypeError, match="info"):
        MemoryRegistry().registrar("users", "a:1", info={"weight": 2})  # type: ignore[arg-type]


# -- FixedInstancer --------------------------------------------------------------------


def test_fixed_instancer_publishes_metadata_with_normalised_keys() -> None:
    instancer = FixedInstancer(["LOCALHOST:80", "b:1"], info={"localhost:80": HEAVY})
    events: list[Event] = []
    instancer.subscribe(events.append)
    assert dict(events[0].info) == {"localhost:80": HEAVY}
    assert "weight=5" in repr(instancer)


def test_fixed_instancer_refuses_bad_info() -> None:
    with pytest.raises(TypeError, match="info"):
        FixedInstancer(["a:1"], info=[("a:1", HEAVY)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"info\['a:1'\]"):
        FixedInstancer(["a:1"], info={"a:1": 3})  # type: ignore[dict-item]
    with pytest.raises(MisuseError, match="c:1"):
        FixedInstancer(["a:1"], info={"c:1": HEAVY})
    with pytest.raises(InvalidInstanceError):
        FixedInstancer(["a:1"], info={"nope": HEAVY})


# -- EndpointCache / Endpointer --------------------------------------------------------


def test_a_metadata_only_change_gives_a_new_set_over_the_same_endpoints() -> None:
    built: list[str] = []

    def factory(instance: str) -> Any:
        built.append(instance)
        return lambda request: (instance, request)

    broadcaster = Broadcaster()
    with Endpointer(sd.instancer.InstancerHandle(broadcaster), factory) as endpointer:
        broadcaster.publish(Event(("a:1", "b:1"), info={"a:1": LIGHT}))
        first = endpointer.snapshot()
        assert first.info_of("a:1") == LIGHT
        assert first.info_of("b:1") == DEFAULT_INFO
        broadcaster.publish(Event(("a:1", "b:1"), info={"a:1": HEAVY}))
        second = endpointer.snapshot()
        assert second is not first
        assert second.endpoints is first.endpoints  # nothing rebuilt
        assert second.instances is first.instances
        assert second.info_of("a:1") == HEAVY
        assert built == ["a:1", "b:1"]
        broadcaster.publish_error(RuntimeError("down"))
        assert endpointer.snapshot() is second


def test_the_cache_compares_metadata_of_events_not_from_a_broadcaster() -> None:
    cache: EndpointCache[Any] = EndpointCache(make)
    cache.update(Event(("a:1",), info=MappingProxyType({"a:1": LIGHT})), 0.0)
    first = cache.view.set
    cache.update(Event(("a:1",), info={"a:1": InstanceInfo(weight=2)}), 0.0)
    assert cache.view.set is first  # equal metadata in a new mapping: same set
    cache.update(Event(("a:1",), info={"a:1": DEFAULT_INFO}), 0.0)
    assert cache.view.set is not first
    assert cache.view.set.info_of("a:1") == DEFAULT_INFO


def test_factory_with_info_receives_the_published_metadata() -> None:
    seen: dict[str, InstanceInfo] = {}

    def build(instance: str, info: InstanceInfo) -> Any:
        seen[instance] = info
        return endpoint

    registry = MemoryRegistry()
    factory = factory_with_info(build)
    assert factory("x:1") is endpoint
    assert seen["x:1"] == DEFAULT_INFO
    with registry.registrar("users", "a:1", info=HEAVY), registry.registrar("users", "b:1"), \
            Endpointer(registry.instancer("users"), factory) as endpointer:
        assert len(endpointer.endpoints()) == 2
    assert seen["a:1"] == HEAVY
    assert seen["b:1"] == DEFAULT_INFO


def test_factory_with_info_results_are_still_checked() -> None:
    not_an_endpoint: Any = factory_with_info(lambda instance, info: 42)
    endpointer = Endpointer(FixedInstancer(["a:1"]), not_an_endpoint)
    with endpointer:
        assert endpointer.endpoints() == []
    with pytest.raises(TypeError, match="factory_with_info"):
        factory_with_info(3)  # type: ignore[arg-type]


def test_info_is_public() -> None:
    assert sd.InstanceInfo is InstanceInfo
    assert sd.factory_with_info is factory_with_info
    assert NO_INFO == {}


def test_the_value_form_module_is_pure() -> None:
    from pathlib import Path

    from tests.test_purity import violations

    root = Path(__file__).resolve().parents[2]
    assert (root / "sd" / "instance_value.py").exists()
    assert violations(root / "sd" / "instance_value.py") == []


def test_lb_weighted_follows_registered_weights_and_their_changes() -> None:
    from collections import Counter

    from kitsd import lb
    registry = MemoryRegistry()

    def build(instance: str) -> Any:
        return lambda request: instance

    with registry.registrar("users", "a:1", info=InstanceInfo(weight=3)), \
            registry.registrar("users", "b:1"), \
            Endpointer(registry.instancer("users"), build) as endpointer:
        balancer = lb.Weighted(endpointer, outlier_detection=None)
        picks = Counter(balancer.endpoint()(None) for _ in range(40))
        assert picks == {"a:1": 30, "b:1": 10}
        # A metadata-only change: same endpoints, new weights in the next set.
        with registry.registrar("users", "b:1", info=InstanceInfo(weight=3)):
            picks = Counter(balancer.endpoint()(None) for _ in range(60))
            assert picks == {"a:1": 30, "b:1": 30}
