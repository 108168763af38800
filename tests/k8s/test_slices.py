"""The pure EndpointSlice rules: conditions, ports, address types, merging slices."""

from __future__ import annotations

from typing import Any

import pytest

from kitsd import sd
from kitsd.compose.kubernetes import endpoint
from kitsd.sd.k8s.slices import (
    META_FOR_ZONES,
    META_NODE,
    META_POD,
    META_ZONE,
    Change,
    PortChoice,
    SliceView,
    State,
    endpoint_state,
)


def make_slice(name: str, endpoints: list[Any], *, port: int | None = 8080,
               port_name: str = "http", ports: list[Any] | None = None,
               address_type: str = "IPv4") -> dict[str, Any]:
    """An EndpointSlice as the API server sends it (the endpoints may be junk)."""
    if ports is None:
        ports = [] if port is None else [{"name": port_name, "port": port, "protocol": "TCP"}]
    return {"metadata": {"name": name, "resourceVersion": "1"}, "addressType": address_type,
            "ports": ports, "endpoints": endpoints}


def view(port: str | int | None = "http", **kwargs: Any) -> SliceView:
    return SliceView(PortChoice.of(port), **kwargs)


# -- the conditions table (README) -------------------------------------------------------

@pytest.mark.parametrize(("conditions", "state"), [
    ({}, State.READY),  # nothing said: ready (as kube-proxy reads it)
    ({"ready": True}, State.READY),
    ({"ready": True, "serving": True, "terminating": False}, State.READY),
    ({"ready": False}, State.NOT_SERVING),
    ({"ready": False, "serving": True}, State.NOT_SERVING),  # not ready, not terminating
    ({"ready": False, "serving": True, "terminating": True}, State.DRAINING),
    ({"serving": True, "terminating": True}, State.DRAINING),  # ready unset while terminating
    ({"terminating": True}, State.DRAINING),  # serving unset: serving
    ({"ready": False, "serving": False, "terminating": True}, State.NOT_SERVING),
    # publishNotReadyAddresses keeps ready true while terminating: drained all the same
    ({"ready": True, "serving": True, "terminating": True}, State.DRAINING),
])
def test_conditions_are_read_as_kube_proxy_reads_them(
        conditions: dict[str, bool], state: State) -> None:
    assert endpoint_state(conditions) is state


def test_conditions_that_are_not_a_mapping_count_as_unset() -> None:
    assert endpoint_state(None) is State.READY
    assert endpoint_state(["ready"]) is State.READY


def test_ready_endpoints_are_served_and_others_are_not() -> None:
    v = view()
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1"), endpoint("10.0.0.2", ready=False),
                                  endpoint("10.0.0.3", terminating=True, ready=False)]))
    change = v.changes()
    assert change.added == ("10.0.0.1:8080",)
    assert change.removed == ()
    assert v.instances() == ("10.0.0.1:8080",)


def test_ready_to_not_ready_removes_and_back_adds() -> None:
    v = view()
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1"), endpoint("10.0.0.2")]))
    v.changes()
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1"), endpoint("10.0.0.2", ready=False)]))
    assert v.changes() == Change(removed=("10.0.0.2:8080",))
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1"), endpoint("10.0.0.2")]))
    assert v.changes() == Change(added=("10.0.0.2:8080",))


def test_a_terminating_endpoint_leaves_at_once_even_if_still_ready() -> None:
    v = view()
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1"), endpoint("10.0.0.2")]))
    v.changes()
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1"),
                                  endpoint("10.0.0.2", ready=True, serving=True,
                                           terminating=True)]))
    assert v.changes().removed == ("10.0.0.2:8080",)
    assert v.state_of("10.0.0.2:8080") is State.DRAINING


def test_serving_terminating_endpoints_are_used_when_none_is_ready() -> None:
    v = view()
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1"),
                                  endpoint("10.0.0.2", ready=False, terminating=True),
                                  endpoint("10.0.0.3", ready=False, serving=False,
                                           terminating=True)]))
    assert v.changes().added == ("10.0.0.1:8080",)
    # the last ready one starts terminating: the serving terminating ones take over
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1", ready=False, terminating=True),
                                  endpoint("10.0.0.2", ready=False, terminating=True),
                                  endpoint("10.0.0.3", ready=False, serving=False,
                                           terminating=True)]))
    change = v.changes()
    assert change.added == ("10.0.0.2:8080",)
    assert change.removed == ()
    assert v.instances() == ("10.0.0.1:8080", "10.0.0.2:8080")
    # a new ready one arrives: the terminating ones leave at once
    v.upsert(make_slice("web-2", [endpoint("10.0.0.4")]))
    change = v.changes()
    assert change.added == ("10.0.0.4:8080",)
    assert change.removed == ("10.0.0.1:8080", "10.0.0.2:8080")


def test_no_serving_endpoint_at_all_is_an_empty_set() -> None:
    v = view()
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1", ready=False)]))
    assert not v.changes()
    assert v.instances() == ()
    assert v.problem is None


# -- ports ---------------------------------------------------------------------------------

def test_port_by_name_by_number_and_the_only_one() -> None:
    ports = [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}]
    for choice, expected in (("http", "10.0.0.1:8080"), ("grpc", "10.0.0.1:9090"),
                             (9090, "10.0.0.1:9090")):
        v = view(choice)
        v.upsert(make_slice("web-1", [endpoint("10.0.0.1")], ports=ports))
        assert v.changes().added == (expected,), choice
    v = view(None)
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1")], port=80, port_name=""))
    assert v.changes().added == ("10.0.0.1:80",)


def test_an_ambiguous_port_is_a_problem_not_a_guess() -> None:
    v = view(None)
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1")],
                        ports=[{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}]))
    assert not v.changes()
    assert v.problem is not None
    assert "2 ports (http, grpc): name one" in v.problem
    v.delete(make_slice("web-1", []))
    assert v.problem is None


def test_a_port_no_slice_has_is_a_problem_naming_it() -> None:
    v = view("htpp")
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1")]))
    assert not v.changes()
    assert v.problem is not None
    assert "port 'htpp'" in v.problem
    # a slice with the port clears it (the others are for other ports of the Service)
    v.upsert(make_slice("web-2", [endpoint("10.0.0.2")], port_name="htpp"))
    assert v.changes().added == ("10.0.0.2:8080",)
    assert v.problem is None


def test_endpoints_without_the_port_or_a_slice_without_ports_contribute_nothing() -> None:
    v = view("http")
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1")], port=None))
    v.upsert(make_slice("web-2", [endpoint("10.0.0.2")]))
    assert v.changes().added == ("10.0.0.2:8080",)
    v2 = view(None)
    v2.upsert(make_slice("web-1", [endpoint("10.0.0.1")], port=None))
    assert not v2.changes()
    assert v2.problem is not None
    assert "lists no port" in v2.problem


def test_bad_ports_are_ignored() -> None:
    v = view(None)
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1")],
                        ports=[{"name": "x", "port": 0}, {"name": "y", "port": "80"},
                               "junk", {"name": "http", "port": 8080}]))
    assert v.changes().added == ("10.0.0.1:8080",)


# -- address types and odd endpoints --------------------------------------------------

def test_ipv6_is_bracketed_and_fqdn_slices_are_skipped_unless_asked() -> None:
    v = view()
    v.upsert(make_slice("web-v6", [endpoint("fd00::5")], address_type="IPv6"))
    v.upsert(make_slice("web-fqdn", [endpoint("pod.example")], address_type="FQDN"))
    v.upsert(make_slice("web-odd", [endpoint("10.0.0.1")], address_type="AppleTalk"))
    assert v.changes().added == ("[fd00::5]:8080",)
    v = view(address_types=("FQDN",))
    v.upsert(make_slice("web-fqdn", [endpoint("pod.example")], address_type="FQDN"))
    v.upsert(make_slice("web-v4", [endpoint("10.0.0.1")]))
    assert v.changes().added == ("pod.example:8080",)


def test_odd_endpoints_are_skipped_not_crashed_on(caplog: pytest.LogCaptureFixture) -> None:
    v = view()
    v.upsert(make_slice("web-1", [
        {"addresses": []}, {"conditions": {"ready": True}}, {"addresses": [42]},
        {"addresses": ["not a host!"]}, "junk", None,
        {"addresses": ["10.0.0.1", "10.0.0.99"], "conditions": "nonsense"},
    ]))
    assert v.changes().added == ("10.0.0.1:8080",)  # the first address only, as kube-proxy
    assert "without addresses" in caplog.text
    # junk slices: no name, no endpoints list, not a mapping
    v.upsert({"metadata": {}})
    v.upsert({"metadata": {"name": "web-2"}, "addressType": "IPv4", "endpoints": "x",
              "ports": [{"port": 1}]})
    v.upsert("junk")
    assert not v.changes()
    assert v.slices == 2


def test_a_warning_is_logged_once_per_slice_and_cause(caplog: pytest.LogCaptureFixture) -> None:
    v = view()
    for _ in range(5):
        v.upsert(make_slice("web-1", [{"addresses": []}]))
    assert caplog.text.count("without addresses") == 1


# -- duplicates, split and merge ----------------------------------------------------------

def test_duplicates_across_slices_are_one_instance_with_the_best_state() -> None:
    v = view()
    v.upsert(make_slice("web-a", [endpoint("10.0.0.1", ready=False, terminating=True,
                                           zone="old")]))
    v.upsert(make_slice("web-b", [endpoint("10.0.0.1", zone="new")]))
    v.upsert(make_slice("web-c", [endpoint("10.0.0.2")]))
    change = v.changes()
    assert change.added == ("10.0.0.1:8080", "10.0.0.2:8080")
    assert change.info["10.0.0.1:8080"].meta[META_ZONE] == "new"  # the ready copy's
    v.delete(make_slice("web-b", []))
    assert v.changes().removed == ("10.0.0.1:8080",)  # the terminating copy is left
    v.delete(make_slice("web-c", []))  # no ready one left: the draining copy serves
    change = v.changes()
    assert change.added == ("10.0.0.1:8080",)
    assert change.info["10.0.0.1:8080"].meta[META_ZONE] == "old"


def test_moving_100_endpoints_between_slices_never_flaps() -> None:
    """A split then a merge, in either order of the two slice updates: the controller
    creates and updates before it deletes, so each endpoint is in a slice at every
    moment; no snapshot may lose one."""
    addresses = [f"10.1.0.{i}" for i in range(100)]
    instances = tuple(sorted(f"{a}:8080" for a in addresses))
    v = view()
    v.upsert(make_slice("web-a", [endpoint(a) for a in addresses]))
    assert v.changes().added == instances
    # split: web-b takes the second half (created first), then web-a shrinks
    v.upsert(make_slice("web-b", [endpoint(a) for a in addresses[50:]]))
    assert not v.changes()
    v.upsert(make_slice("web-a", [endpoint(a) for a in addresses[:50]]))
    assert not v.changes()
    # merge: web-a takes everything back, then web-b is deleted
    v.upsert(make_slice("web-a", [endpoint(a) for a in addresses]))
    assert not v.changes()
    v.delete(make_slice("web-b", []))
    assert not v.changes()
    assert v.instances() == instances


def test_one_change_in_a_big_service_costs_its_slice_not_the_service() -> None:
    """1,000 endpoints in 10 slices: one endpoint changing touches one slice's worth of
    instances, and the change reports only it."""
    v = view()
    for s in range(10):
        v.upsert(make_slice(f"web-{s}", [endpoint(f"10.2.{s}.{i}") for i in range(100)]))
    assert len(v.changes().added) == 1000
    eps = [endpoint(f"10.2.3.{i}") for i in range(100)]
    eps[7] = endpoint("10.2.3.7", ready=False)
    v.upsert(make_slice("web-3", eps))
    assert len(v._touched) == 1  # only the instance that changed is looked at
    assert v.changes() == Change(removed=("10.2.3.7:8080",))


# -- metadata -------------------------------------------------------------------------------

def test_zone_node_pod_and_hints_reach_the_instance_info() -> None:
    v = view()
    v.upsert(make_slice("web-1", [
        endpoint("10.0.0.1", zone="eu-1a", node="node-1", pod="web-abc",
                 for_zones=["eu-1a", "eu-1b"]),
        endpoint("10.0.0.2", for_zones=["eu-1c"]),  # no zone: the hint says where
        endpoint("10.0.0.3"),
    ]))
    info = v.changes().info
    assert dict(info["10.0.0.1:8080"].meta) == {META_ZONE: "eu-1a", META_NODE: "node-1",
                                                META_POD: "web-abc",
                                                META_FOR_ZONES: "eu-1a,eu-1b"}
    assert dict(info["10.0.0.2:8080"].meta) == {META_ZONE: "eu-1c", META_FOR_ZONES: "eu-1c"}
    assert "10.0.0.3:8080" not in info  # nothing known: the default
    assert info["10.0.0.1:8080"] is not sd.InstanceInfo()
    # a metadata-only change is reported for that instance only, and equal infos are shared
    v.upsert(make_slice("web-1", [
        endpoint("10.0.0.1", zone="eu-1b", node="node-1", pod="web-abc"),
        endpoint("10.0.0.2", for_zones=["eu-1c"]),
        endpoint("10.0.0.3", zone="eu-1b", node="node-1", pod="web-abc"),
    ]))
    change = v.changes()
    assert set(change.info) == {"10.0.0.1:8080", "10.0.0.3:8080"}
    assert change.info["10.0.0.1:8080"] is change.info["10.0.0.3:8080"]
    assert not change.added
    assert not change.removed


def test_clearing_metadata_reports_the_default() -> None:
    v = view()
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1", zone="z")]))
    v.changes()
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1")]))
    assert v.changes().info == {"10.0.0.1:8080": sd.InstanceInfo()}
    assert v.info() == {}


def test_replace_drops_slices_that_are_gone() -> None:
    v = view()
    v.upsert(make_slice("web-1", [endpoint("10.0.0.1")]))
    v.upsert(make_slice("web-2", [endpoint("10.0.0.2")]))
    v.changes()
    v.replace([make_slice("web-2", [endpoint("10.0.0.2")]),
               make_slice("web-3", [endpoint("10.0.0.3")])])
    assert v.changes() == Change(added=("10.0.0.3:8080",), removed=("10.0.0.1:8080",))
    assert v.slices == 2


def test_applying_the_same_slice_twice_changes_nothing() -> None:
    v = view()
    s = make_slice("web-1", [endpoint("10.0.0.1")])
    v.upsert(s)
    v.changes()
    v.upsert(s)
    assert not v.changes()
    assert not v._touched


def test_port_choice_describes_itself() -> None:
    assert str(PortChoice.of("http")) == "port 'http'"
    assert str(PortChoice.of(80)) == "port 80"
    assert str(PortChoice.of(None)) == "its only port"
    assert "web" in repr(SliceView(source="service ns/web"))
