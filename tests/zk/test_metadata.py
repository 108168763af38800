"""Instance metadata through ZooKeeper: the JSON value form in the children view (no
server), and ZKRegistrar(info=...) -> ZooKeeper -> ZKInstancer against a real server."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from kitsd import sd
from kitsd.sd.instance_info import InstanceInfo
from kitsd.sd.zk import ZKInstancer, ZKRegistrar
from kitsd.sd.zk.view import ChildrenView
from tests.helpers import wait_for

HEAVY = InstanceInfo(weight=4, tags=("canary",), meta={"version": "2.1"})


def test_json_children_give_metadata_and_plain_ones_defaults() -> None:
    view = ChildrenView()
    view.apply_children(["a", "b"])
    view.apply_data("a", json.dumps({"address": "10.0.0.1:80", "weight": 4, "tags": ["canary"],
                                     "meta": {"version": "2.1"}}, indent=2).encode())
    view.apply_data("b", b"10.0.0.2:80")
    assert view.instances() == ("10.0.0.1:80", "10.0.0.2:80")
    assert view.info() == {"10.0.0.1:80": HEAVY}


def test_the_greatest_child_name_gives_the_metadata_of_a_shared_instance() -> None:
    view = ChildrenView()
    view.apply_children(["n-0000000001", "n-0000000002"])
    view.apply_data("n-0000000002", b'{"address": "h:1", "weight": 7}')
    view.apply_data("n-0000000001", b'{"address": "h:1", "weight": 2}')
    assert view.info() == {"h:1": InstanceInfo(weight=7)}


def test_bad_json_children_are_skipped_with_a_short_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    view = ChildrenView()
    view.apply_children(["bad", "huge", "ok"])
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.zk.view"):
        view.apply_data("bad", b'{"address": "h:1", "weight": "heavy"}')
        view.apply_data("huge", b'{"address": "h:2", "meta": {"k": "' + b"x" * 100_000 + b'"}}')
        view.apply_data("ok", b"h:3")
    assert view.instances() == ("h:3",)
    assert len(caplog.records) == 2
    for record in caplog.records:
        assert len(record.getMessage()) < 600


def test_registrar_refuses_bad_info() -> None:
    class FakeKazoo:
        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: None

    with pytest.raises(TypeError, match="info"):
        ZKRegistrar(FakeKazoo(), "/svc", "h:1", info={"weight": 2})  # type: ignore[arg-type]


@pytest.mark.integration
def test_metadata_round_trips_registrar_zookeeper_instancer(
    client: Any, other_client: Any, path: str
) -> None:
    events: list[sd.Event] = []
    with ZKInstancer(other_client, path) as instancer:
        instancer.subscribe(events.append)
        with ZKRegistrar(client, path, "10.0.0.1:8080", info=HEAVY) as registrar, \
                ZKRegistrar(client, path, "10.0.0.2:8080"):
            wait_for(lambda: len(instancer.state.instances) == 2, 10, "both registrations")
            assert dict(instancer.state.info) == {"10.0.0.1:8080": HEAVY}
            node = registrar.node
            assert node is not None
            data, _ = other_client.get(node)
            assert json.loads(data) == {"address": "10.0.0.1:8080", "weight": 4,
                                        "tags": ["canary"], "meta": {"version": "2.1"}}
            # A weight changed in place (an operator draining an instance) reaches us.
            other_client.set(node, b'{"address": "10.0.0.1:8080", "weight": 0}')
            wait_for(lambda: instancer.state.info.get("10.0.0.1:8080") == InstanceInfo(0), 10,
                     "the new weight")
        wait_for(lambda: instancer.state.instances == (), 10, "deregistration")
    assert instancer.state.info == {}
