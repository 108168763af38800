"""Instance metadata through Consul: the health answer's Tags, Meta and Weights as
InstanceInfo (pure), ConsulRegistrar's meta/weight arguments, and the round trip
ConsulRegistrar -> Consul -> ConsulInstancer against a real agent (``integration``)."""

from __future__ import annotations

from typing import Any

import pytest

from kitsd import sd
from kitsd.core.errors import MisuseError
from kitsd.sd.consul import ConsulInstancer, ConsulRegistrar, HttpxConsul
from kitsd.sd.consul.health import InfoMemo, entry_info, service_instances
from kitsd.sd.instance_info import DEFAULT_INFO, InstanceInfo
from tests.helpers import wait_for


def entry(port: int, *, tags: Any = None, meta: Any = None, weights: Any = None,
          statuses: tuple[str, ...] = ("passing",), address: str = "10.0.0.1") -> dict[str, Any]:
    service: dict[str, Any] = {"ID": f"web-{port}", "Service": "web", "Address": address,
                               "Port": port, "Tags": tags, "Meta": meta}
    if weights is not None:
        service["Weights"] = weights
    return {"Node": {"Node": "n1", "Address": "10.9.9.9"}, "Service": service,
            "Checks": [{"CheckID": f"c{n}", "Status": status}
                       for n, status in enumerate(statuses)]}


# -- translation (pure) ------------------------------------------------------------


def test_tags_meta_and_passing_weight_become_the_info() -> None:
    info = entry_info(entry(80, tags=["blue", "v2"], meta={"zone": "eu-1"},
                            weights={"Passing": 5, "Warning": 1}))
    assert info == InstanceInfo(5, ("blue", "v2"), {"zone": "eu-1"})


def test_the_warning_weight_applies_while_a_check_is_not_passing() -> None:
    weights = {"Passing": 5, "Warning": 2}
    assert entry_info(entry(80, weights=weights, statuses=("passing", "warning"))).weight == 2
    assert entry_info(entry(80, weights=weights, statuses=("passing", "passing"))).weight == 5


def test_consul_defaults_give_the_default_info_object() -> None:
    assert entry_info(entry(80, tags=[], meta={}, weights={"Passing": 1, "Warning": 1})) \
        is DEFAULT_INFO
    assert entry_info(entry(80)) is DEFAULT_INFO
    assert entry_info("junk") is DEFAULT_INFO


def test_odd_metadata_is_left_out_not_the_instance() -> None:
    info = entry_info(entry(80, tags=["ok", 3], meta={"k": "v", "n": 1},
                            weights={"Passing": -1, "Warning": "x"}))
    assert info == InstanceInfo(1, ("ok",), {"k": "v"})


def test_service_instances_fills_infos_and_shares_equal_ones() -> None:
    memo: InfoMemo = {}
    infos: dict[str, InstanceInfo] = {}
    answer = [entry(80, tags=["blue"]), entry(81, tags=["blue"]), entry(82)]
    instances = service_instances(answer, infos=infos, info_memo=memo)
    assert instances == ("10.0.0.1:80", "10.0.0.1:81", "10.0.0.1:82")
    assert infos == {"10.0.0.1:80": InstanceInfo(tags=("blue",)),
                     "10.0.0.1:81": InstanceInfo(tags=("blue",))}
    assert infos["10.0.0.1:80"] is infos["10.0.0.1:81"]


def test_the_later_entry_of_a_shared_instance_gives_its_metadata() -> None:
    infos: dict[str, InstanceInfo] = {}
    service_instances([entry(80, tags=["a"]), entry(80)], infos=infos)
    assert infos == {}
    service_instances([entry(80), entry(80, tags=["a"])], infos=infos)
    assert infos == {"10.0.0.1:80": InstanceInfo(tags=("a",))}


# -- registrar arguments ------------------------------------------------------------


class _NoClient:
    """Never called: argument checks happen before any request."""


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"meta": ["zone"]}, TypeError, "meta"),
        ({"meta": {"zone": 1}}, TypeError, "meta"),
        ({"meta": {"bad key": "v"}}, MisuseError, "'bad key'"),
        ({"meta": {"consul-x": "v"}}, MisuseError, "consul-"),
        ({"meta": {"k": "v" * 513}}, MisuseError, "512"),
        ({"meta": {f"k{n}": "v" for n in range(65)}}, MisuseError, "64"),
        ({"weight": 0}, MisuseError, "weight"),
        ({"weight": 2.5}, TypeError, "weight"),
        ({"weight": True}, TypeError, "weight"),
        ({"warning_weight": -1}, MisuseError, "warning_weight"),
    ],
)
def test_bad_metadata_fails_at_construction_naming_it(
    kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        ConsulRegistrar(_NoClient(), "web", "10.0.0.1", 80, **kwargs)  # type: ignore[arg-type]


def test_the_registration_carries_meta_and_weights() -> None:
    registrar = ConsulRegistrar(_NoClient(), "web", "10.0.0.1", 80,  # type: ignore[arg-type]
                                tags=["blue"], meta={"zone": "eu-1"}, weight=4)
    registration = registrar.registration()
    assert registration["meta"] == {"zone": "eu-1"}
    assert registration["weights"] == {"Passing": 4, "Warning": 1}
    plain = ConsulRegistrar(_NoClient(), "web", "10.0.0.1", 80).registration()  # type: ignore[arg-type]
    assert "meta" not in plain
    assert "weights" not in plain


# -- against a real agent --------------------------------------------------------------

integration = pytest.mark.integration


@integration
@pytest.mark.usefixtures("no_thread_leaks")
def test_metadata_round_trips_registrar_consul_instancer(
    client: HttpxConsul, service_name: str
) -> None:
    events: list[sd.Event] = []
    with ConsulInstancer(client, service_name) as instancer:
        instancer.subscribe(events.append)
        with ConsulRegistrar(client, service_name, "127.0.0.1", 18101, tags=["blue", "v2"],
                             meta={"zone": "eu-1", "version": "2.1"}, weight=5, ttl=5), \
                ConsulRegistrar(client, service_name, "127.0.0.1", 18102, ttl=5):
            wait_for(lambda: len(instancer.state.instances) == 2, 10, "both instances")
            assert dict(instancer.state.info) == {"127.0.0.1:18101": InstanceInfo(
                5, ("blue", "v2"), {"zone": "eu-1", "version": "2.1"})}
            # Re-registered with another weight: a metadata-only change reaches us.
            with ConsulRegistrar(client, service_name, "127.0.0.1", 18101, weight=9, ttl=5):
                wait_for(lambda: instancer.state.info.get("127.0.0.1:18101") == InstanceInfo(9),
                         10, "the new weight")
                assert instancer.state.instances == ("127.0.0.1:18101", "127.0.0.1:18102")
        wait_for(lambda: instancer.state.instances == (), 10, "deregistration")
    assert instancer.state.info == {}
    assert any(event.info for event in events)


@integration
@pytest.mark.usefixtures("no_thread_leaks")
def test_a_warning_instance_gets_its_warning_weight_when_not_passing_only(
    client: HttpxConsul, service_name: str
) -> None:
    with ConsulInstancer(client, service_name, passing_only=False) as instancer, \
            ConsulRegistrar(client, service_name, "127.0.0.1", 18103, weight=6,
                            warning_weight=2, ttl=None) as registrar:
        wait_for(lambda: instancer.state.info.get("127.0.0.1:18103") == InstanceInfo(6), 10,
                 "the passing weight")
        client.agent.check.register("warned", check={"TTL": "60s", "Status": "warning"},
                                    service_id=registrar.service_id)
        try:
            wait_for(lambda: instancer.state.info.get("127.0.0.1:18103") == InstanceInfo(2), 10,
                     "the warning weight")
        finally:
            client.agent.check.deregister("warned")
