"""Instance metadata through etcd: the JSON value form in the prefix view (no server),
and the round trip EtcdRegistrar(info=...) -> etcd -> EtcdInstancer against a real etcd."""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import pytest

from kitsd import sd
from kitsd.sd.etcd.revision import KeyValue, PrefixView, WatchEvent
from kitsd.sd.instance_info import DEFAULT_INFO, InstanceInfo
from tests.helpers import wait_for

HEAVY = InstanceInfo(weight=3, tags=("blue", "v2"), meta={"zone": "eu-1"})


def put(key: str, value: str, revision: int) -> WatchEvent:
    return WatchEvent("put", key.encode(), revision, value.encode())


def delete(key: str, revision: int) -> WatchEvent:
    return WatchEvent("delete", key.encode(), revision)


def json_value(address: str, **fields: Any) -> str:
    return json.dumps({"address": address, **fields})


# -- the view, no server ------------------------------------------------------------


def test_a_read_gives_metadata_from_json_values_and_defaults_for_plain_ones() -> None:
    view = PrefixView()
    assert view.apply_read([
        KeyValue(b"/s/a", json_value("10.0.0.1:80", weight=3, tags=["blue", "v2"],
                                     meta={"zone": "eu-1"}).encode(), 5),
        KeyValue(b"/s/b", b"10.0.0.2:80", 6),
        KeyValue(b"/s/c", json_value("LOCALHOST:81").encode(), 7),
    ], 7)
    assert view.instances() == ("10.0.0.1:80", "10.0.0.2:80", "localhost:81")
    assert dict(view.info()) == {"10.0.0.1:80": HEAVY}


def test_a_weight_change_at_a_key_is_a_change() -> None:
    view = PrefixView()
    view.apply_read([KeyValue(b"/s/a", json_value("10.0.0.1:80", weight=2).encode(), 2)], 2)
    info = view.info()
    assert view.info() is info  # cached until it changes
    assert view.apply_events([put("/s/a", json_value("10.0.0.1:80", weight=5), 3)])
    assert dict(view.info()) == {"10.0.0.1:80": InstanceInfo(weight=5)}
    assert not view.apply_events([put("/s/a", json_value("10.0.0.1:80", weight=5), 4)])
    assert view.apply_events([put("/s/a", "10.0.0.1:80", 5)])  # plain again: defaults
    assert view.info() == {}
    assert view.instances() == ("10.0.0.1:80",)


def test_an_instance_held_by_two_keys_shows_the_latest_written_metadata() -> None:
    view = PrefixView()
    view.apply_read([KeyValue(b"/s/a", json_value("h:1", weight=2).encode(), 2),
                     KeyValue(b"/s/b", json_value("h:1", weight=7).encode(), 4)], 4)
    assert view.info()["h:1"].weight == 7
    assert view.apply_events([put("/s/a", json_value("h:1", weight=9), 5)])
    assert view.info()["h:1"].weight == 9
    assert view.apply_events([delete("/s/a", 6)])  # back to the other key's
    assert view.info()["h:1"].weight == 7
    assert view.apply_events([delete("/s/b", 7)])
    assert view.instances() == ()
    assert view.info() == {}


@pytest.mark.parametrize(
    "value",
    [
        "{not json",
        "[1, 2]",
        '{"weight": 3}',
        '{"address": 12}',
        '{"address": "nohost"}',
        '{"address": "h:1", "weight": -1}',
        '{"address": "h:1", "weight": 2.5}',
        '{"address": "h:1", "weight": true}',
        '{"address": "h:1", "tags": "blue"}',
        '{"address": "h:1", "tags": [1]}',
        '{"address": "h:1", "meta": {"k": 1}}',
        '{"address": "h:1", "meta": ["k"]}',
    ],
)
def test_bad_json_values_are_skipped_with_a_warning(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    view = PrefixView()
    view.apply_read([KeyValue(b"/s/ok", b"10.0.0.9:80", 1)], 1)
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.etcd.revision"):
        view.apply_events([put("/s/bad", value, 2)])
    assert view.instances() == ("10.0.0.9:80",)
    assert any("/s/bad" in record.getMessage() for record in caplog.records)


def test_a_huge_bad_json_value_gives_a_short_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kitsd.sd.etcd.revision")
    huge = '{"address": "h:1", "weight": "' + "x" * 1_000_000 + '"}'
    view = PrefixView()
    view.apply_read([KeyValue(b"/s/a", huge.encode(), 1)], 1)
    view.apply_read([KeyValue(b"/s/a", ("{" * 100_000).encode(), 1)], 1)  # deep / broken
    assert view.instances() == ()
    assert len(caplog.records) == 2
    for record in caplog.records:
        assert len(record.getMessage()) < 600, record.getMessage()[:200]


def test_unknown_json_fields_are_ignored() -> None:
    view = PrefixView()
    view.apply_read([KeyValue(b"/s/a", json_value("h:1", weight=2, future="x").encode(), 1)], 1)
    assert dict(view.info()) == {"h:1": InstanceInfo(weight=2)}


@pytest.mark.parametrize("seed", range(8))
def test_random_histories_match_a_from_scratch_read(seed: int) -> None:
    rng = random.Random(seed)
    values = ["h:1", "h:2", json_value("h:1", weight=2), json_value("h:2", tags=["x"]),
              json_value("h:3", weight=4), "bad"]
    keys = [f"/s/{n}" for n in range(4)]
    view = PrefixView()
    view.apply_read([], 1)
    state: dict[str, tuple[str, int]] = {}
    for revision in range(2, 60):
        key = rng.choice(keys)
        if rng.random() < 0.3:
            view.apply_events([delete(key, revision)])
            state.pop(key, None)
        else:
            value = rng.choice(values)
            before = state.get(key)
            view.apply_events([put(key, value, revision)])
            if before is None or before[0] != value:
                state[key] = (value, revision)
        fresh = PrefixView()
        fresh.apply_read([KeyValue(k.encode(), v.encode(), r) for k, (v, r) in state.items()],
                         revision)
        assert view.instances() == fresh.instances()
        assert dict(view.info()) == dict(fresh.info())


# -- the registrar's value ---------------------------------------------------------


def test_the_registrar_writes_json_only_with_info() -> None:
    from kitsd.compose.process import free_ports

    pyetcd = pytest.importorskip("pyetcd")
    client = pyetcd.client("127.0.0.1", free_ports(1)[0])  # never called by the constructor
    try:
        plain = sd.etcd.EtcdRegistrar(client, "/svc/a", "LOCALHOST:80")
        assert plain.value == "localhost:80"
        assert plain.info is None
        rich = sd.etcd.EtcdRegistrar(client, "/svc/a", "LOCALHOST:80", info=HEAVY)
        assert json.loads(rich.value) == {"address": "localhost:80", "weight": 3,
                                          "tags": ["blue", "v2"], "meta": {"zone": "eu-1"}}
        assert rich.instance == "localhost:80"
        assert json.loads(sd.etcd.EtcdRegistrar(client, "/k", "h:1", info=DEFAULT_INFO).value) \
            == {"address": "h:1"}
        with pytest.raises(TypeError, match="info"):
            sd.etcd.EtcdRegistrar(client, "/svc/a", "h:1", info={"weight": 3})  # type: ignore[arg-type]
    finally:
        client.close()


# -- against a real etcd ----------------------------------------------------------


@pytest.mark.integration
def test_metadata_round_trips_registrar_etcd_instancer(
    no_thread_leaks: None, client: Any, prefix: str
) -> None:
    events: list[sd.Event] = []
    with sd.etcd.EtcdInstancer(client, prefix) as instancer:
        instancer.subscribe(events.append)
        with sd.etcd.EtcdRegistrar(client, f"{prefix}a", "10.0.0.1:8080", ttl=3, info=HEAVY), \
                sd.etcd.EtcdRegistrar(client, f"{prefix}b", "10.0.0.2:8080", ttl=3):
            wait_for(lambda: len(instancer.state.instances) == 2, 5, "both registrations")
            state = instancer.state
            assert dict(state.info) == {"10.0.0.1:8080": HEAVY}
            # A weight change written by another registrar at the same key reaches us.
            lighter = InstanceInfo(weight=1, tags=("blue",))
            with sd.etcd.EtcdRegistrar(client, f"{prefix}a", "10.0.0.1:8080", ttl=3,
                                       info=lighter):
                wait_for(lambda: instancer.state.info.get("10.0.0.1:8080") == lighter, 5,
                         "the metadata change")
                assert instancer.state.instances == state.instances
        wait_for(lambda: instancer.state.instances == (), 5, "deregistration")
        assert instancer.state.info == {}
    weights = [event.info.get("10.0.0.1:8080", DEFAULT_INFO).weight for event in events]
    assert 3 in weights


@pytest.mark.integration
def test_an_endpointer_over_etcd_sees_metadata_changes_without_rebuilding(
    client: Any, prefix: str
) -> None:
    built: list[str] = []

    def build(instance: str, info: InstanceInfo) -> Any:
        built.append(f"{instance} w{info.weight}")
        return lambda request: request

    key = f"{prefix}a"
    vendor = getattr(client, "vendor", client)
    with sd.etcd.EtcdInstancer(client, prefix) as instancer, \
            sd.Endpointer(instancer, sd.factory_with_info(build)) as endpointer:
        vendor.put(key, json_value("10.0.0.1:80", weight=2))
        wait_for(lambda: len(endpointer.snapshot()) == 1, 5, "the instance")
        first = endpointer.snapshot()
        assert first.info_of("10.0.0.1:80").weight == 2
        vendor.put(key, json_value("10.0.0.1:80", weight=6))
        wait_for(lambda: endpointer.snapshot().info_of("10.0.0.1:80").weight == 6, 5,
                 "the new weight")
        assert endpointer.snapshot().endpoints is first.endpoints
        assert built == ["10.0.0.1:80 w2"]
        vendor.delete(key)
