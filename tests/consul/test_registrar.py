"""ConsulRegistrar: argument checks, then against a real Consul agent (``integration``)."""

from __future__ import annotations

import logging
import time

import pytest

from kitsd.compose.consul import ConsulDevAgent
from kitsd.core.errors import PermissionDeniedError
from kitsd.sd.consul import ConsulRegistrar, HttpxConsul, connect
from tests.consul.conftest import (
    ACL_TOKEN,
    REAP_TEST,
    Agent,
    ReapScenario,
    kill_process,
    passing_instances,
    spawn_registrar,
)
from tests.helpers import wait_for


class _NoClient:
    """Never called: argument checks happen before any request."""


# --- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        (("", "10.0.0.1", 80), {}, "''"),
        (("  ", "10.0.0.1", 80), {}, "'  '"),
        (("a/b", "10.0.0.1", 80), {}, "'a/b'"),
        (("web", "", 80), {}, "''"),
        (("web", "bad host!", 80), {}, "'bad host!'"),
        (("web", "10.0.0.1:80", 80), {}, "'10.0.0.1:80'"),
        (("web", "10.0.0.1", 0), {}, "0"),
        (("web", "10.0.0.1", 65536), {}, "65536"),
        (("web", "10.0.0.1", -1), {}, "-1"),
        (("web", "10.0.0.1", True), {}, "True"),
        (("web", "10.0.0.1", "80"), {}, "'80'"),
        (("web", "10.0.0.1", 80), {"ttl": 0}, "ttl must be"),
        (("web", "10.0.0.1", 80), {"ttl": -5}, "ttl must be"),
        (("web", "10.0.0.1", 80), {"ttl": float("nan")}, "ttl must be"),
        (("web", "10.0.0.1", 80), {"deregister_critical_after": 0}, "deregister_critical_after"),
        (("web", "10.0.0.1", 80), {"service_id": ""}, "service_id"),
        (("web", "10.0.0.1", 80), {"tags": ["ok", ""]}, "tags"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(
    args: tuple[object, ...], kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError) as excinfo:
        ConsulRegistrar(_NoClient(), *args, **kwargs)  # type: ignore[arg-type]
    assert named in str(excinfo.value)


def test_defaults_and_normalised_address() -> None:
    registrar = ConsulRegistrar(_NoClient(), "web", "0:0::1", 8080)  # type: ignore[arg-type]
    assert registrar.service_id == "web-::1-8080"
    assert registrar.check_id == "service:web-::1-8080"
    assert registrar.instance == "[::1]:8080"
    assert registrar.address == "::1"
    assert registrar.ttl == 10.0
    assert registrar.deregister_critical_after == 60.0
    assert not registrar.registered
    named = ConsulRegistrar(_NoClient(), "web", "Host-A", 1, service_id="mine")  # type: ignore[arg-type]
    assert (named.service_id, named.address) == ("mine", "host-a")


# --- against a real agent --------------------------------------------------------------------

integration = pytest.mark.integration


@integration
@pytest.mark.usefixtures("no_thread_leaks")
def test_registration_is_visible_with_address_port_tags_and_a_passing_check(
    client: HttpxConsul, service_name: str
) -> None:
    with ConsulRegistrar(client, service_name, "127.0.0.1", 18001, tags=["x", "y"],
                         ttl=5) as registrar:
        service = client.agent.services()[registrar.service_id]
        assert (service["Service"], service["Address"], service["Port"]) == (
            service_name, "127.0.0.1", 18001)
        assert service["Tags"] == ["x", "y"]
        check = client.agent.checks()[registrar.check_id]
        assert check["Status"] == "passing"
        assert check["ServiceID"] == registrar.service_id
        wait_for(lambda: passing_instances(client, service_name) == ["127.0.0.1:18001"],
                 what="the instance in the catalog")
    assert registrar.service_id not in client.agent.services()
    assert passing_instances(client, service_name, passing=False) == []


@integration
@pytest.mark.usefixtures("no_thread_leaks")
def test_register_twice_and_deregister_twice(client: HttpxConsul,
                                             service_name: str) -> None:
    registrar = ConsulRegistrar(client, service_name, "127.0.0.1", 18002)
    registrar.register()
    registrar.register()
    try:
        ids = [sid for sid, s in client.agent.services().items() if s["Service"] == service_name]
        assert ids == [registrar.service_id]
    finally:
        registrar.deregister()
    registrar.deregister()
    assert registrar.service_id not in client.agent.services()


@integration
@pytest.mark.usefixtures("no_thread_leaks")
def test_without_ttl_the_service_has_no_check_and_counts_as_passing(
    client: HttpxConsul, service_name: str
) -> None:
    with ConsulRegistrar(client, service_name, "127.0.0.1", 18003, ttl=None) as registrar:
        assert not [c for c in client.agent.checks().values()
                    if c["ServiceID"] == registrar.service_id]
        wait_for(lambda: passing_instances(client, service_name) == ["127.0.0.1:18003"],
                 what="the instance in the catalog")


@integration
@pytest.mark.usefixtures("no_thread_leaks")
def test_heartbeats_keep_a_short_ttl_passing(client: HttpxConsul,
                                              service_name: str) -> None:
    ttl = 1.0  # the shortest TTL a ConsulRegistrar accepts (MIN_TTL)
    with ConsulRegistrar(client, service_name, "127.0.0.1", 18004, ttl=ttl) as registrar:
        # Observe for four TTLs: without heartbeats the check would turn critical after one.
        deadline = time.monotonic() + 4 * ttl
        seen = set()
        while time.monotonic() < deadline:
            seen.add(client.agent.checks()[registrar.check_id]["Status"])
            time.sleep(0.05)  # sampling interval of the observation, not synchronisation
        assert seen == {"passing"}


@integration
def test_killed_registrar_process_leaves_the_passing_set_after_its_ttl(
    client: HttpxConsul, service_name: str, consul_agent: Agent,
    capsys: pytest.CaptureFixture[str],
) -> None:
    child = spawn_registrar(consul_agent.http_addr, service_name, 18005, ttl=1.0,
                            deregister_critical_after=1.0)
    try:
        wait_for(lambda: passing_instances(client, service_name) == ["127.0.0.1:18005"],
                 timeout=20, what="the child registrar to be passing")
        kill_process(child)
        killed = time.monotonic()
        wait_for(lambda: passing_instances(client, service_name) == [], timeout=10,
                 what="the check to go critical")
        gone_after = time.monotonic() - killed
        # Still registered (critical) until the agent reaps it.
        assert passing_instances(client, service_name, passing=False) == ["127.0.0.1:18005"]
    finally:
        kill_process(child)
        client.agent.service.deregister(f"{service_name}-127.0.0.1-18005")
    assert gone_after <= 1.0 + 3.0
    with capsys.disabled():
        print(f"\n[consul] killed registrar (ttl 1s) left the passing set after {gone_after:.2f}s")


@integration
def test_killed_registrar_is_reaped(reaping_registrar: ReapScenario,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert REAP_TEST == "test_killed_registrar_is_reaped"
    scenario = reaping_registrar
    # Consul raises DeregisterCriticalServiceAfter to its 1 min minimum and reaps every 30 s.
    deadline = scenario.killed_at + scenario.critical_after + 60 + 30 + 15
    wait_for(lambda: passing_instances(scenario.client, scenario.service, passing=False) == [],
             timeout=max(1.0, deadline - time.monotonic()), what="the agent to reap the service")
    reaped_after = time.monotonic() - scenario.killed_at
    assert reaped_after >= 60  # not before Consul's minimum
    with capsys.disabled():
        print(f"\n[consul] killed registrar: critical after {scenario.critical_after:.2f}s, "
              f"reaped after {reaped_after:.1f}s (asked 1s; Consul minimum 60s + 30s reaper)")


@integration
@pytest.mark.usefixtures("no_thread_leaks")
def test_the_acl_token_travels_in_the_client_and_is_never_shown(
    acl_agent: ConsulDevAgent, service_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "kitsd-wrong-token-5e0f"
    with connect(acl_agent.http_addr, token=ACL_TOKEN) as good, \
            connect(acl_agent.http_addr, token=wrong) as bad:
        refused = ConsulRegistrar(bad, service_name, "127.0.0.1", 18006)
        with pytest.raises(PermissionDeniedError) as excinfo:
            refused.register()
        assert "permission denied" in str(excinfo.value)
        with ConsulRegistrar(good, service_name, "127.0.0.1", 18006, ttl=1) as registrar:
            assert registrar.service_id in good.agent.services()
            shown = [repr(registrar), str(registrar), repr(good), repr(refused),
                     str(excinfo.value), repr(excinfo.value)]
    shown.append(caplog.text)
    for text in shown:
        assert ACL_TOKEN not in text
        assert wrong not in text
