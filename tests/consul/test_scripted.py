"""Odd answers a real Consul will not readily give, scripted.

The instancer tests run BOTH drivers (``ConsulInstancer`` on its thread,
``AsyncConsulInstancer`` on asyncio) against :class:`tests.consul.scripted.ScriptedAgent`,
an ``httpx.MockTransport``: requests are built by py-consul and sent by httpx
exactly as against a real agent, so these tests check the one transport and
the one watch (indexes going backwards, index 0, odd headers, bad bodies,
403s, ACL default deny).  The registrar tests script py-consul's answers
through a small fake of the narrow client protocol.  The ``integration``
tests next to them run the same code against a real agent.
"""

from __future__ import annotations

import itertools
import logging
import statistics
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import consul
import httpx
import pytest
import requests

from kitsd.core.errors import MisuseError, PermissionDeniedError, RegistryUnavailableError
from kitsd.sd import backoff
from kitsd.sd.consul import ConsulInstancer, ConsulRegistrar
from kitsd.sd.consul.client import ConsulClient, map_error, private_client
from kitsd.sd.event import Event
from kitsd.sd.instance_info import InstanceInfo
from tests.consul.scripted import DRIVERS, Drivers, Reply, ScriptedAgent, drivers, entry
from tests.helpers import wait_for


def thread_names() -> list[str]:
    return [thread.name for thread in threading.enumerate()]

pytestmark = pytest.mark.usefixtures("no_thread_leaks")

DENY = {"X-Consul-Default-Acl-Policy": "deny"}


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> Iterator[Drivers]:
    yield from drivers(request.param)


@pytest.fixture
def events() -> list[Event]:
    return []


def instances_seen(events: list[Event]) -> list[tuple[str, ...]]:
    return [event.instances for event in events if event.error is None]


def errors_seen(events: list[Event]) -> list[Event]:
    return [event for event in events if event.error is not None]


# --- the instancers, both drivers -----------------------------------------------------------


def test_query_parameters_first_tag_on_server_and_passing(
    driver: Drivers, events: list[Event]
) -> None:
    entries = [entry("10.0.0.1", 1, ["a"]), entry("10.0.0.2", 2, ["a", "b"])]
    agent = ScriptedAgent([Reply("5", entries)])
    driver.watch(agent, events, tags=("a", "b"), wait=2.5)
    wait_for(agent.idle.is_set, what="the script to be played")
    first, second = agent.calls[:2]
    assert first.path == "/v1/health/service/svc"
    assert first.params == {"passing": ["1"], "tag": ["a"]}
    assert second.params == {"index": ["5"], "wait": ["2500ms"], "passing": ["1"],
                             "tag": ["a"]}
    # "b" is filtered here, not by the agent; the entry's tags come along as metadata
    assert events[-1] == Event(("10.0.0.2:2",), info={"10.0.0.2:2": InstanceInfo(tags=("a", "b"))})


def test_passing_only_false_sends_no_passing_filter(driver: Drivers, events: list[Event]) -> None:
    agent = ScriptedAgent([Reply("3", [])])
    driver.watch(agent, events, passing_only=False)
    wait_for(agent.idle.is_set, what="the script to be played")
    assert all("passing" not in call.params and "tag" not in call.params
               for call in agent.calls)


def test_settings_of_the_client_reach_the_watch(driver: Drivers, events: list[Event]) -> None:
    agent = ScriptedAgent([Reply("3", [])])
    driver.watch(agent, events, client_kwargs={"token": "s3cret-token", "dc": "dc9"})
    wait_for(agent.idle.is_set, what="the script to be played")
    for call in agent.calls:
        assert call.headers["x-consul-token"] == "s3cret-token"
        assert call.params["dc"] == ["dc9"]
        assert "token" not in call.params  # never in the URL


def test_index_going_backwards_resets_to_zero_after_a_backoff(
    driver: Drivers, events: list[Event], caplog: pytest.LogCaptureFixture,
) -> None:
    script: list[Reply | BaseException] = [
        Reply("10", [entry("10.0.0.1", 1)]), Reply("4", [entry("10.0.0.2", 2)]),
        Reply("6", [entry("10.0.0.3", 3)])]
    agent = ScriptedAgent(script)
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.consul.watch"):
        driver.watch(agent, events)
        wait_for(agent.idle.is_set, what="the script to be played")
    calls = agent.calls
    assert [call.index for call in calls[:4]] == [None, "10", None, "6"]
    assert calls[2].at - calls[1].at >= 0.005  # backed off (10 ms, jittered to >= 5 ms)
    # The answer with the backwards index is not published; the fresh read is.
    # (the first event is the first answer: nothing before it, issue 15.4)
    assert instances_seen(events) == [("10.0.0.1:1",), ("10.0.0.3:3",)]
    assert any("backwards" in record.getMessage() for record in caplog.records)


def test_index_zero_backs_off_and_then_waits_from_one(
    driver: Drivers, events: list[Event],
) -> None:
    agent = ScriptedAgent([Reply("0", [entry("10.0.0.1", 1)]), Reply("7", [entry("10.0.0.1", 1)])])
    driver.watch(agent, events)
    wait_for(agent.idle.is_set, what="the script to be played")
    calls = agent.calls
    assert [call.index for call in calls[:3]] == [None, "1", "7"]
    assert calls[1].at - calls[0].at >= 0.005
    assert instances_seen(events) == [("10.0.0.1:1",)]


def test_an_unreadable_index_header_counts_as_zero(driver: Drivers, events: list[Event]) -> None:
    agent = ScriptedAgent([Reply("not-a-number", []), Reply("3", [])])
    driver.watch(agent, events)
    wait_for(agent.idle.is_set, what="the script to be played")
    assert [call.index for call in agent.calls[:3]] == [None, "1", "3"]


def test_an_answer_without_index_header_is_an_error_event(
    driver: Drivers, events: list[Event],
) -> None:
    agent = ScriptedAgent([Reply("3", [entry("10.0.0.1", 1)]), Reply(None, []),
                           Reply("5", [entry("10.0.0.2", 2)])])
    driver.watch(agent, events)
    wait_for(agent.idle.is_set, what="the script to be played")
    [error] = errors_seen(events)
    assert isinstance(error.error, RegistryUnavailableError)
    assert "X-Consul-Index" in str(error.error)
    assert error.instances == ("10.0.0.1:1",)
    assert [call.index for call in agent.calls[:3]] == [None, "3", None]
    wait_for(lambda: events[-1] == Event(("10.0.0.2:2",)), what="the error to clear")


def test_garbage_entries_are_skipped_and_good_ones_kept(
    driver: Drivers, events: list[Event], caplog: pytest.LogCaptureFixture,
) -> None:
    garbage: list[object] = [entry("10.0.0.1", 1), "junk", {"Service": None}, 17,
                             entry("", 2), entry("10.0.0.3", 0), entry("10.0.0.4", 4),
                             entry("10.0.0.5", True)]
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.consul.health"):
        agent = ScriptedAgent([Reply("3", garbage)])
        driver.watch(agent, events)
        wait_for(agent.idle.is_set, what="the script to be played")
    # entry("", 2) has no Service.Address and falls back to its node's address.
    assert events[-1] == Event(("10.0.0.1:1", "10.0.0.4:4", "10.255.0.1:2"))
    assert len([r for r in caplog.records if r.name == "kitsd.sd.consul.health"]) >= 5


@pytest.mark.parametrize(
    ("body", "text"),
    [({"oops": True}, "not a list"), (b"[{not json", "decode JSON"), (b"\xff\xfe", "decode JSON")],
    ids=["object", "bad-json", "not-utf8"],
)
def test_a_bad_body_is_an_error_event(
    driver: Drivers, events: list[Event], body: object, text: str,
) -> None:
    agent = ScriptedAgent([Reply("3", [entry("10.0.0.1", 1)]), Reply("4", body),
                           Reply("5", [entry("10.0.0.1", 1)])])
    driver.watch(agent, events)
    wait_for(agent.idle.is_set, what="the script to be played")
    [error] = errors_seen(events)
    assert isinstance(error.error, RegistryUnavailableError)
    assert text in str(error.error)
    assert error.instances == ("10.0.0.1:1",)  # the last instances are kept
    # ... and the next good answer clears the error.
    wait_for(lambda: events[-1] == Event(("10.0.0.1:1",)), what="the error to clear")


def test_acl_403_becomes_permission_denied_chained_from_the_vendor_error(
    driver: Drivers, events: list[Event],
) -> None:
    agent = ScriptedAgent([Reply("3", [entry("10.0.0.1", 1)]),
                           Reply(None, b"ACL not found", status=403),
                           Reply("4", [entry("10.0.0.1", 1)])])
    instancer = driver.watch(agent, events)
    wait_for(agent.idle.is_set, what="the script to be played")
    [error] = errors_seen(events)
    assert isinstance(error.error, PermissionDeniedError)
    assert isinstance(error.error.__cause__, consul.ACLPermissionDenied)
    assert error.instances == ("10.0.0.1:1",)
    # After a failure the next query is a plain read (the agent may have lost its state).
    assert [call.index for call in agent.calls[:3]] == [None, "3", None]
    wait_for(lambda: instancer.state == Event(("10.0.0.1:1",)), what="the error to clear")


@pytest.mark.parametrize(("status", "kind"), [(401, PermissionDeniedError),
                                              (500, RegistryUnavailableError),
                                              (429, RegistryUnavailableError)])
def test_other_statuses_are_error_events(
    driver: Drivers, events: list[Event], status: int, kind: type[Exception],
) -> None:
    agent = ScriptedAgent([Reply(None, b"No cluster leader", status=status)])
    driver.watch(agent, events)
    wait_for(lambda: bool(errors_seen(events)), what="an error event")
    assert isinstance(errors_seen(events)[0].error, kind)


def test_repeated_identical_failures_publish_one_error_event(
    driver: Drivers, events: list[Event],
) -> None:
    down: list[Reply | BaseException] = [httpx.ConnectError(f"refused, attempt {n} at 0x{n:x}")
                                         for n in range(5)]
    agent = ScriptedAgent([Reply("2", [entry("10.0.0.1", 1)]), *down,
                           Reply("9", [entry("10.0.0.1", 1)])])
    driver.watch(agent, events)
    wait_for(agent.idle.is_set, timeout=10, what="the script to be played")
    [error] = errors_seen(events)
    assert isinstance(error.error, RegistryUnavailableError)
    assert "cannot connect" in str(error.error)
    wait_for(lambda: events[-1] == Event(("10.0.0.1:1",)), what="the error to clear")


def test_errors_the_agent_answers_back_off_exponentially(
    driver: Drivers, events: list[Event],
) -> None:
    agent = ScriptedAgent([Reply(None, b"No cluster leader", 500) for _ in range(7)])
    driver.watch(agent, events)
    wait_for(agent.idle.is_set, timeout=10, what="the script to be played")
    times = [call.at for call in agent.calls[:8]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Failure n waits between half and all of 10 ms * 2**(n-1).
    for n, gap in enumerate(gaps, start=1):
        assert gap >= 0.01 * 2 ** (n - 1) / 2, (n, gaps)
    assert sum(gaps) >= 0.01 * (2 ** 7 - 1) / 2


def test_an_agent_that_refuses_connections_is_probed_every_100_to_200_ms(
    driver: Drivers, events: list[Event],
) -> None:
    agent = ScriptedAgent([httpx.ConnectError("refused") for _ in range(6)])
    driver.watch(agent, events)
    wait_for(agent.idle.is_set, timeout=10, what="the script to be played")
    times = [call.at for call in agent.calls[:7]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.1 for gap in gaps), gaps  # no more than ten attempts a second
    assert statistics.median(gaps) < 0.3, gaps  # and not a growing backoff


def test_stop_during_a_long_backoff_is_prompt(driver: Drivers, events: list[Event]) -> None:
    agent = ScriptedAgent([Reply(None, b"No cluster leader", 500) for _ in range(30)])
    instancer = driver.watch(agent, events)
    # After the 8th failure the loop sleeps 0.64-1.28 s; stop() must cut that short.
    wait_for(lambda: len(agent.calls) >= 8, timeout=10, what="backoff to grow")
    started = time.monotonic()
    driver.stop(instancer)
    assert time.monotonic() - started < 0.2


def test_stop_cuts_a_held_query_short(driver: Drivers, events: list[Event]) -> None:
    agent = ScriptedAgent([Reply("3", [])], hold=30)
    instancer = driver.watch(agent, events)
    wait_for(lambda: len(agent.calls) >= 2, what="the blocking query to be held")
    started = time.monotonic()
    driver.stop(instancer)
    assert time.monotonic() - started < 0.2


# --- ACL default deny ------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "t0ken-without-read"])
def test_an_empty_answer_under_default_deny_is_a_permission_error(
    driver: Drivers, events: list[Event], caplog: pytest.LogCaptureFixture, token: str | None,
) -> None:
    agent = ScriptedAgent([Reply("3", [], headers=DENY), Reply("4", [], headers=DENY),
                           Reply("5", [entry("10.0.0.1", 1)], headers=DENY)])
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.consul.watch"):
        driver.watch(agent, events, client_kwargs={"token": token})
        wait_for(lambda: bool(events) and events[-1] == Event(("10.0.0.1:1",)),
                 what="instances at last")
    [denied] = errors_seen(events)
    assert isinstance(denied.error, PermissionDeniedError)
    assert "permission denied" in str(denied.error)
    assert ("no ACL token was sent" in str(denied.error)) is (token is None)
    assert denied.instances == ()
    # The index advanced without backoff: instances showed up with the next answers.
    assert [call.index for call in agent.calls[:3]] == [None, "3", "4"]
    warnings = [r for r in caplog.records if "default-deny" in r.getMessage()]
    assert len(warnings) == 1  # warned once, not per answer
    assert token is None or all(token not in r.getMessage() for r in caplog.records)


def test_empty_under_default_deny_after_instances_is_a_plain_empty_set(
    driver: Drivers, events: list[Event],
) -> None:
    agent = ScriptedAgent([Reply("3", [entry("10.0.0.1", 1)], headers=DENY),
                           Reply("4", [], headers=DENY)])
    driver.watch(agent, events)
    wait_for(agent.idle.is_set, what="the script to be played")
    assert errors_seen(events) == []
    assert instances_seen(events) == [("10.0.0.1:1",), ()]


def test_empty_answer_under_default_allow_is_not_an_error(
    driver: Drivers, events: list[Event],
) -> None:
    agent = ScriptedAgent([Reply("3", [], headers={"X-Consul-Default-Acl-Policy": "allow"})])
    driver.watch(agent, events)
    wait_for(agent.idle.is_set, what="the script to be played")
    assert errors_seen(events) == []


# --- secrets ---------------------------------------------------------------------------------


def test_the_token_is_in_no_log_line_repr_or_error(
    driver: Drivers, events: list[Event], caplog: pytest.LogCaptureFixture,
) -> None:
    token = "t0p-s3cret-acl-token"  # noqa: S105 - a test value
    agent = ScriptedAgent([Reply("3", [], headers=DENY), Reply(None, b"ACL not found", 403),
                           httpx.ConnectError("refused"), Reply("7", [entry("10.0.0.1", 1)])])
    with caplog.at_level(logging.DEBUG):
        instancer = driver.watch(agent, events, client_kwargs={"token": token})
        wait_for(agent.idle.is_set, what="the script to be played")
        client = agent.client(token=token)
        client.close()
    assert len(errors_seen(events)) >= 2
    texts = [record.getMessage() for record in caplog.records]
    texts += [repr(instancer), repr(client), repr(client.settings), str(instancer.state)]
    texts += [f"{event.error!r} {event.error}" for event in errors_seen(events)]
    assert any("GET" in text for text in texts)  # httpx's request lines were captured
    assert [text for text in texts if token in text] == []


# --- the thread driver -----------------------------------------------------------------------


def test_stop_from_inside_a_subscriber_does_not_deadlock() -> None:
    agent = ScriptedAgent([Reply("3", [entry("10.0.0.1", 1)])])
    with agent.client() as client:
        instancer = ConsulInstancer(client, "svc")
        stopped = threading.Event()

        def stop_on_instances(event: Event) -> None:
            if event.instances:
                instancer.stop()
                stopped.set()

        # The first answer may already be in; either way stop() runs inside a delivery.
        instancer.subscribe(stop_on_instances)
        assert stopped.wait(5)
        instancer.stop()  # idempotent


def test_instancers_with_the_same_arguments_share_one_watch(events: list[Event]) -> None:
    agent = ScriptedAgent([Reply("3", [entry("10.0.0.1", 1)])])
    with agent.client() as client:
        first = ConsulInstancer(client, "svc", tags=["a"])
        second = ConsulInstancer(client, "svc", tags=("a",))
        other = ConsulInstancer(client, "svc", tags=("b",))
        try:
            watches = [t for t in threading.enumerate() if t.name == "kitsd-consul-watch-svc"]
            assert len(watches) == 2
            first.stop()
            second.subscribe(events.append)
            assert events[-1].instances == ("10.0.0.1:1",)
        finally:
            for instancer in (first, second, other):
                instancer.stop()


def test_a_narrow_protocol_object_is_called_as_it_is() -> None:
    fake = FakeConsul()
    copy, settings = private_client(fake)
    assert copy is fake
    assert settings is None
    with ConsulInstancer(fake, "svc") as instancer:
        wait_for(lambda: fake.health.calls >= 2, what="two queries")
        assert instancer.state == Event(("10.0.0.1:1",))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"service": ""}, ValueError, "service"),
        ({"service": "a/b"}, ValueError, "service"),
        ({"service": None}, ValueError, "service"),
        ({"wait": 0}, ValueError, "wait"),
        ({"wait": 601}, ValueError, "wait"),
        ({"wait": float("nan")}, ValueError, "wait"),
        ({"wait": "10"}, TypeError, "wait"),
        ({"tags": ["a", ""]}, ValueError, "tags"),
        ({"tags": "ab"}, TypeError, "one string"),
        ({"passing_only": "yes"}, TypeError, "passing_only"),
        ({"first_answer_timeout": float("inf")}, ValueError, "first_answer_timeout"),
        ({"first_answer_timeout": float("nan")}, ValueError, "first_answer_timeout"),
        ({"first_answer_timeout": -1}, ValueError, "first_answer_timeout"),
        ({"first_answer_timeout": None}, TypeError, "first_answer_timeout"),
        ({"owns_client": 1}, TypeError, "owns_client"),
    ],
)
def test_bad_instancer_arguments_raise_before_anything_starts(
    kwargs: dict[str, Any], error: type[Exception], match: str,
) -> None:
    agent = ScriptedAgent([])
    arguments: dict[str, Any] = {"service": "svc", **kwargs}
    before = set(threading.enumerate())
    with agent.client() as client:
        with pytest.raises(error, match=match):
            ConsulInstancer(client, **arguments)
        assert set(threading.enumerate()) == before
        assert agent.calls == []
        # Nothing was left in the shared-watch table: a good instancer starts a watch of
        # its own, which queries the agent.
        with ConsulInstancer(client, "svc", first_answer_timeout=0):
            wait_for(lambda: len(agent.calls) >= 1, what="the good instancer's first query")
            assert thread_names().count("kitsd-consul-watch-svc") == 1


def test_a_client_that_is_no_consul_client_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="client"):
        ConsulInstancer(object(), "svc")  # type: ignore[arg-type]


# --- the asyncio driver's own arguments ------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"timeout": float("nan")}, ValueError, "timeout"),
        ({"timeout": float("inf")}, ValueError, "timeout"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": "5"}, TypeError, "timeout"),
        ({"scheme": "ftp"}, ValueError, "scheme"),
        ({"wait": float("nan")}, ValueError, "wait"),
    ],
)
async def test_bad_async_instancer_arguments_raise(
    kwargs: dict[str, Any], error: type[Exception], match: str,
) -> None:
    from kitsd.sd.consul import AsyncConsulInstancer

    with pytest.raises(error, match=match):
        AsyncConsulInstancer("127.0.0.1:8500", "svc", **kwargs)


async def test_async_instancer_refuses_settings_beside_a_client() -> None:
    from kitsd.sd.consul import AsyncConsulInstancer

    with ScriptedAgent([]).client() as client, pytest.raises(MisuseError, match="token"):
        AsyncConsulInstancer(client, "svc", token="x")  # noqa: S106 - a test value


# --- fakes of the narrow protocol, for the registrar -----------------------------------------


class FakeHealth:
    """Answers every query with one instance at index 3, after a short hold."""

    def __init__(self) -> None:
        self.calls = 0

    def service(self, service: str, *, index: str | None = None, wait: str | None = None,
                passing: bool | None = None, tag: str | None = None) -> tuple[object, object]:
        self.calls += 1
        if index is not None:
            time.sleep(0.02)  # a held blocking query (kept short so stop() stays prompt)
        return "3", [entry("10.0.0.1", 1)]


class FakeAgentService:
    def __init__(self) -> None:
        self.registered: list[dict[str, object]] = []
        self.deregistered: list[str] = []
        self.register_error: BaseException | None = None
        self.deregister_error: BaseException | None = None

    def register(self, name: str, service_id: str | None = None, address: str | None = None,
                 port: int | None = None, tags: list[str] | None = None,
                 check: Mapping[str, object] | None = None) -> bool:
        if self.register_error is not None:
            raise self.register_error
        self.registered.append({"name": name, "service_id": service_id, "address": address,
                                "port": port, "tags": tags, "check": check})
        return True

    def deregister(self, service_id: str) -> bool:
        if self.deregister_error is not None:
            raise self.deregister_error
        self.deregistered.append(service_id)
        return True


class FakeAgentCheck:
    """``ttl_pass`` plays ``script`` (True/False answers or exceptions), then answers True."""

    def __init__(self, script: Sequence[object] = ()) -> None:
        self.script = list(script)
        self.passes: list[str] = []
        self.lock = threading.Lock()

    def ttl_pass(self, check_id: str, notes: str | None = None) -> object:
        with self.lock:
            self.passes.append(check_id)
            outcome = self.script.pop(0) if self.script else True
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class FakeAgent:
    def __init__(self, check_script: Sequence[object] = ()) -> None:
        self.service = FakeAgentService()
        self.check = FakeAgentCheck(check_script)


class FakeConsul:
    def __init__(self, check_script: Sequence[object] = ()) -> None:
        self.health = FakeHealth()
        self.agent = FakeAgent(check_script)


def test_the_fake_satisfies_the_narrow_protocol() -> None:
    fake: ConsulClient = FakeConsul()
    assert private_client(fake) == (fake, None)


# --- error mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "kind", "text"),
    [
        (consul.ACLPermissionDenied("ACL not found"), PermissionDeniedError, "permission denied"),
        (consul.ACLDisabled("nope"), PermissionDeniedError, "unauthorized"),
        (consul.Timeout("slow"), RegistryUnavailableError, "timed out"),
        (requests.ReadTimeout("slow"), RegistryUnavailableError, "timed out"),
        (requests.ConnectionError("refused"), RegistryUnavailableError, "cannot connect"),
        (httpx.ConnectError("refused"), RegistryUnavailableError, "cannot connect"),
        (httpx.ReadTimeout("slow"), RegistryUnavailableError, "timed out"),
        (httpx.RemoteProtocolError("closed"), RegistryUnavailableError, "cannot connect"),
        (consul.ConsulException("Missing index header: {}"), RegistryUnavailableError,
         "no X-Consul-Index header"),
        (ConnectionResetError("reset"), RegistryUnavailableError, "cannot connect"),
        (consul.NotFound("gone"), RegistryUnavailableError, "not found"),
        (consul.ConsulException("500 No cluster leader"), RegistryUnavailableError,
         "No cluster leader"),
        (ValueError("bad json"), RegistryUnavailableError, "unreadable"),
        (RuntimeError("odd"), RegistryUnavailableError, "RuntimeError"),
    ],
)
def test_map_error(vendor: BaseException, kind: type[Exception], text: str) -> None:
    mapped = map_error(vendor, doing="watching service 'x'", agent="http://h:1")
    assert type(mapped) is kind
    assert mapped.__cause__ is vendor
    assert text in str(mapped)
    assert str(mapped).startswith("watching service 'x' at Consul agent http://h:1: ")


def test_map_error_passes_kitsd_errors_through() -> None:
    error = RegistryUnavailableError("already mapped")
    assert map_error(error, doing="x", agent="y") is error


# --- the registrar --------------------------------------------------------------------------


def test_registration_payload() -> None:
    fake = FakeConsul()
    registrar = ConsulRegistrar(fake, "web", "10.0.0.1", 8080, tags=["a", "b"],
                                ttl=9, deregister_critical_after=90)
    with registrar:
        [payload] = fake.agent.service.registered
    assert payload == {
        "name": "web", "service_id": "web-10.0.0.1-8080", "address": "10.0.0.1", "port": 8080,
        "tags": ["a", "b"],
        "check": {"ttl": "9000ms", "CheckID": "service:web-10.0.0.1-8080",
                  "Name": "kitsd TTL of web-10.0.0.1-8080", "Status": "passing",
                  "DeregisterCriticalServiceAfter": "90000ms"},
    }
    assert fake.agent.service.deregistered == ["web-10.0.0.1-8080"]


def test_without_ttl_there_is_no_check_and_no_thread() -> None:
    fake = FakeConsul()
    registrar = ConsulRegistrar(fake, "web", "h", 1, ttl=None)
    before = set(threading.enumerate())
    registrar.register()
    assert set(threading.enumerate()) == before
    assert fake.agent.service.registered[0]["check"] is None
    registrar.deregister()


def test_register_and_deregister_are_idempotent() -> None:
    fake = FakeConsul()
    registrar = ConsulRegistrar(fake, "web", "h", 1, ttl=30)
    registrar.register()
    registrar.register()
    assert registrar.registered
    registrar.deregister()
    registrar.deregister()
    assert not registrar.registered
    assert len(fake.agent.service.registered) == 1
    assert fake.agent.service.deregistered == ["web-h-1"]


def test_heartbeat_passes_about_every_third_of_the_ttl() -> None:
    fake = FakeConsul()
    with ConsulRegistrar(fake, "web", "h", 1, ttl=1.5):
        wait_for(lambda: len(fake.agent.check.passes) >= 1, timeout=5, what="a heartbeat")
        started = time.monotonic()
        count = len(fake.agent.check.passes)
        wait_for(lambda: len(fake.agent.check.passes) >= count + 2, timeout=5,
                 what="two more heartbeats")
        elapsed = time.monotonic() - started
    assert 0.75 <= elapsed < 1.5  # two intervals of 0.5 s
    assert set(fake.agent.check.passes) == {"service:web-h-1"}


@pytest.mark.parametrize(
    "forgot",
    [False, consul.NotFound("Unknown check ID"),
     consul.ConsulException('500 CheckID "service:web-h-1" does not have associated TTL')],
    ids=["404-false", "not-found", "no-ttl"],
)
def test_agent_that_forgot_the_check_gets_a_new_registration(
    forgot: object, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeConsul(check_script=[True, forgot])
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.consul.registrar"), \
            ConsulRegistrar(fake, "web", "h", 1, ttl=1):
        wait_for(lambda: len(fake.agent.service.registered) >= 2, timeout=5,
                 what="a second registration")
        wait_for(lambda: len(fake.agent.check.passes) >= 3, timeout=5, what="heartbeats resuming")
    assert fake.agent.service.registered[0] == fake.agent.service.registered[1]
    assert any("no longer knows" in record.getMessage() for record in caplog.records)


def test_unreachable_agent_is_retried_without_reregistering() -> None:
    down = [requests.ConnectionError("refused") for _ in range(4)]
    fake = FakeConsul(check_script=down)
    with ConsulRegistrar(fake, "web", "h", 1, ttl=1.2):
        # The first heartbeat is due after 0.4 s; retries follow within milliseconds.
        wait_for(lambda: len(fake.agent.check.passes) >= 5, timeout=5,
                 what="retries, then a good heartbeat")
    assert len(fake.agent.service.registered) == 1


def test_register_failure_is_mapped_and_starts_nothing() -> None:
    fake = FakeConsul()
    vendor = consul.ACLPermissionDenied("Permission denied")
    fake.agent.service.register_error = vendor
    registrar = ConsulRegistrar(fake, "web", "h", 1)
    before = set(threading.enumerate())
    with pytest.raises(PermissionDeniedError) as excinfo:
        registrar.register()
    assert excinfo.value.__cause__ is vendor
    assert not registrar.registered
    assert set(threading.enumerate()) == before


def test_deregister_failure_is_mapped_but_the_heartbeat_stops() -> None:
    fake = FakeConsul()
    registrar = ConsulRegistrar(fake, "web", "h", 1, ttl=1)
    registrar.register()
    wait_for(lambda: len(fake.agent.check.passes) >= 1, what="a heartbeat")
    fake.agent.service.deregister_error = requests.ConnectionError("refused")
    with backoff.testing(), \
            pytest.raises(RegistryUnavailableError, match="deregistering 'web-h-1'"):
        registrar.deregister()
    beats = len(fake.agent.check.passes)
    assert not [t for t in threading.enumerate() if t.name.startswith("kitsd-consul-ttl")]
    assert len(fake.agent.check.passes) == beats


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ttl": 0.001}, ValueError, "ttl"),
        ({"ttl": 0.999}, ValueError, "at least 1"),
        ({"ttl": 0}, ValueError, "ttl"),
        ({"ttl": float("nan")}, ValueError, "ttl"),
        ({"ttl": float("inf")}, ValueError, "ttl"),
        ({"ttl": "10"}, TypeError, "ttl"),
        ({"deregister_critical_after": -1}, ValueError, "deregister_critical_after"),
        ({"deregister_critical_after": float("nan")}, ValueError, "deregister_critical_after"),
        ({"retry_for": float("nan")}, ValueError, "retry_for"),
    ],
)
def test_bad_registrar_arguments(kwargs: dict[str, Any], error: type[Exception],
                                 match: str) -> None:
    with pytest.raises(error, match=match):
        ConsulRegistrar(FakeConsul(), "web", "h", 1, **kwargs)


def test_the_shortest_ttl_is_accepted() -> None:
    assert ConsulRegistrar(FakeConsul(), "web", "h", 1, ttl=1).ttl == 1.0
