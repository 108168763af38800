"""Odd answers a real Consul will not readily give, scripted through a fake client.

The fakes satisfy :class:`sd.consul.client.ConsulClient` (the narrow protocol),
not Consul: these tests check the driver's reactions to answers (indexes going
backwards, index 0, garbage entries, 403s, flaky heartbeats), while the
``integration`` tests next to them run the same code against a real agent.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import consul
import pytest
import requests

from sd.consul import ConsulInstancer, ConsulRegistrar
from sd.consul.client import ConsulClient, map_error, private_copy
from sd.errors import PermissionDeniedError, RegistryUnavailableError
from sd.event import Event
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("no_thread_leaks")


def entry(address: str, port: int, tags: list[str] | None = None) -> dict[str, object]:
    return {"Node": {"Node": "n", "Address": "10.255.0.1"},
            "Service": {"ID": f"{address}-{port}", "Address": address, "Port": port,
                        "Tags": tags or []}}


@dataclass
class Call:
    at: float
    service: str
    index: str | None
    wait: str | None
    passing: bool | None
    tag: str | None


Outcome = tuple[object, object] | BaseException


@dataclass
class FakeHealth:
    """Plays ``script`` one answer per call; then behaves like an idle Consul
    (holds the query briefly and answers the last index again)."""

    script: list[Outcome]
    gate: threading.Event = field(default_factory=threading.Event)
    calls: list[Call] = field(default_factory=list)
    idle: threading.Event = field(default_factory=threading.Event)
    last: tuple[object, object] = ("1", [])
    lock: threading.Lock = field(default_factory=threading.Lock)

    def service(self, service: str, *, index: str | None = None, wait: str | None = None,
                passing: bool | None = None, tag: str | None = None) -> tuple[object, object]:
        if not self.gate.wait(5):
            raise AssertionError("the test never opened the gate")
        with self.lock:
            self.calls.append(Call(time.monotonic(), service, index, wait, passing, tag))
            outcome = self.script.pop(0) if self.script else None
        if outcome is None:
            self.idle.set()
            time.sleep(0.02)  # a held blocking query (kept short so stop() stays prompt)
            return self.last
        if isinstance(outcome, BaseException):
            raise outcome
        self.last = outcome
        return outcome


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
    def __init__(self, script: Sequence[Outcome] = (),
                 check_script: Sequence[object] = ()) -> None:
        self.health = FakeHealth(list(script))
        self.health.gate.set()
        self.agent = FakeAgent(check_script)


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def watch(events: list[Event]) -> Iterator[Callable[..., tuple[FakeConsul, ConsulInstancer]]]:
    started: list[ConsulInstancer] = []

    def start(script: list[Outcome], **kwargs: Any) -> tuple[FakeConsul, ConsulInstancer]:
        # Subscribe before the first answer, so the events hold every published state.
        fake = FakeConsul(script)
        fake.health.gate.clear()
        instancer = ConsulInstancer(fake, "svc", first_answer_timeout=0,
                                    **kwargs)
        started.append(instancer)
        instancer.subscribe(events.append)
        fake.health.gate.set()
        return fake, instancer

    yield start
    for instancer in started:
        instancer.stop()


def instances_seen(events: list[Event]) -> list[tuple[str, ...]]:
    return [event.instances for event in events if event.error is None]


# --- the instancer -------------------------------------------------------------------------


def test_the_fake_satisfies_the_narrow_protocol() -> None:
    fake: ConsulClient = FakeConsul()
    copy, interruptible = private_copy(fake)
    assert copy is fake
    assert interruptible is None


def test_query_parameters_first_tag_on_server_and_passing(
    watch: Callable[..., tuple[FakeConsul, ConsulInstancer]], events: list[Event]
) -> None:
    entries = [entry("10.0.0.1", 1, ["a"]), entry("10.0.0.2", 2, ["a", "b"])]
    fake, _ = watch([("5", entries)], tags=("a", "b"), wait=2.5)
    wait_for(fake.health.idle.is_set, what="the script to be played")
    first, second = fake.health.calls[:2]
    assert (first.service, first.index, first.passing, first.tag) == ("svc", None, True, "a")
    assert (second.index, second.wait) == ("5", "2500ms")
    assert events[-1] == Event(("10.0.0.2:2",))  # "b" is filtered here, not by the fake


def test_passing_only_false_sends_no_passing_filter(
    watch: Callable[..., tuple[FakeConsul, ConsulInstancer]],
) -> None:
    fake, _ = watch([("3", [])], passing_only=False)
    wait_for(fake.health.idle.is_set, what="the script to be played")
    assert {call.passing for call in fake.health.calls} == {None}
    assert {call.tag for call in fake.health.calls} == {None}


def test_index_going_backwards_resets_to_zero_after_a_backoff(
    watch: Callable[..., tuple[FakeConsul, ConsulInstancer]], events: list[Event],
    caplog: pytest.LogCaptureFixture,
) -> None:
    script: list[Outcome] = [("10", [entry("10.0.0.1", 1)]), ("4", [entry("10.0.0.2", 2)]),
                             ("6", [entry("10.0.0.3", 3)])]
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.consul.instancer"):
        fake, _ = watch(script)
        wait_for(fake.health.idle.is_set, what="the script to be played")
    calls = fake.health.calls
    assert [call.index for call in calls[:4]] == [None, "10", None, "6"]
    assert calls[2].at - calls[1].at >= 0.005  # backed off (10 ms, jittered to >= 5 ms)
    # The answer with the backwards index is not published; the fresh read is.
    assert instances_seen(events) == [(), ("10.0.0.1:1",), ("10.0.0.3:3",)]
    assert any("backwards" in record.getMessage() for record in caplog.records)


def test_index_zero_backs_off_and_then_waits_from_one(
    watch: Callable[..., tuple[FakeConsul, ConsulInstancer]], events: list[Event],
) -> None:
    fake, _ = watch([("0", [entry("10.0.0.1", 1)]), ("7", [entry("10.0.0.1", 1)])])
    wait_for(fake.health.idle.is_set, what="the script to be played")
    calls = fake.health.calls
    assert [call.index for call in calls[:3]] == [None, "1", "7"]
    assert calls[1].at - calls[0].at >= 0.005
    assert instances_seen(events) == [(), ("10.0.0.1:1",)]


def test_an_unreadable_index_header_counts_as_zero(
    watch: Callable[..., tuple[FakeConsul, ConsulInstancer]],
) -> None:
    fake, _ = watch([("not-a-number", []), ("3", [])])
    wait_for(fake.health.idle.is_set, what="the script to be played")
    assert [call.index for call in fake.health.calls[:3]] == [None, "1", "3"]


def test_garbage_entries_are_skipped_and_good_ones_kept(
    watch: Callable[..., tuple[FakeConsul, ConsulInstancer]], events: list[Event],
    caplog: pytest.LogCaptureFixture,
) -> None:
    garbage: list[object] = [entry("10.0.0.1", 1), "junk", {"Service": None}, 17,
                             entry("", 2), entry("10.0.0.3", 0), entry("10.0.0.4", 4)]
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.consul.health"):
        fake, _ = watch([("3", garbage)])
        wait_for(fake.health.idle.is_set, what="the script to be played")
    # entry("", 2) has no Service.Address and falls back to its node's address.
    assert events[-1] == Event(("10.0.0.1:1", "10.0.0.4:4", "10.255.0.1:2"))
    assert len([r for r in caplog.records if r.name == "kitsd.sd.consul.health"]) >= 4


def test_a_body_that_is_not_a_list_is_an_error_event(
    watch: Callable[..., tuple[FakeConsul, ConsulInstancer]], events: list[Event],
) -> None:
    fake, _ = watch([("3", [entry("10.0.0.1", 1)]), ("4", {"oops": True}),
                     ("5", [entry("10.0.0.1", 1)])])
    wait_for(fake.health.idle.is_set, what="the script to be played")
    errors = [event for event in events if event.error is not None]
    assert len(errors) == 1
    assert isinstance(errors[0].error, RegistryUnavailableError)
    assert "not a list" in str(errors[0].error)
    assert errors[0].instances == ("10.0.0.1:1",)  # the last instances are kept
    # ... and the next good answer clears the error.
    wait_for(lambda: events[-1] == Event(("10.0.0.1:1",)), what="the error to clear")


def test_acl_403_becomes_permission_denied_chained_from_the_vendor_error(
    watch: Callable[..., tuple[FakeConsul, ConsulInstancer]], events: list[Event],
) -> None:
    denied = consul.ACLPermissionDenied("ACL not found")
    fake, instancer = watch([("3", [entry("10.0.0.1", 1)]), denied])
    wait_for(fake.health.idle.is_set, what="the script to be played")
    errors = [event for event in events if event.error is not None]
    assert len(errors) == 1
    error = errors[0].error
    assert isinstance(error, PermissionDeniedError)
    assert error.__cause__ is denied
    assert errors[0].instances == ("10.0.0.1:1",)
    # After a failure the next query is a plain read (the agent may have lost its state).
    failed_at = next(i for i, call in enumerate(fake.health.calls) if call.index == "3")
    assert fake.health.calls[failed_at + 1].index is None
    wait_for(lambda: instancer.state == Event(("10.0.0.1:1",)), what="the error to clear")


def test_repeated_identical_failures_publish_one_error_event(
    watch: Callable[..., tuple[FakeConsul, ConsulInstancer]], events: list[Event],
) -> None:
    down = [requests.ConnectionError(f"refused, attempt {n} at 0x{n:x}") for n in range(5)]
    fake, _ = watch([("2", [entry("10.0.0.1", 1)]), *down, ("9", [entry("10.0.0.1", 1)])])
    wait_for(fake.health.idle.is_set, timeout=10, what="the script to be played")
    errors = [event for event in events if event.error is not None]
    assert len(errors) == 1
    assert isinstance(errors[0].error, RegistryUnavailableError)
    assert "cannot connect" in str(errors[0].error)
    wait_for(lambda: events[-1] == Event(("10.0.0.1:1",)), what="the error to clear")


def test_failures_back_off_exponentially(
    watch: Callable[..., tuple[FakeConsul, ConsulInstancer]],
) -> None:
    down = [requests.ConnectionError("refused") for _ in range(7)]
    fake, _ = watch(down)
    wait_for(fake.health.idle.is_set, timeout=10, what="the script to be played")
    times = [call.at for call in fake.health.calls[:8]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Failure n waits between half and all of 10 ms * 2**(n-1).
    for n, gap in enumerate(gaps, start=1):
        assert gap >= 0.01 * 2 ** (n - 1) / 2, (n, gaps)
    assert sum(gaps) >= 0.01 * (2 ** 7 - 1) / 2


def test_stop_from_inside_a_subscriber_does_not_deadlock() -> None:
    fake = FakeConsul([("3", [entry("10.0.0.1", 1)])])
    instancer = ConsulInstancer(fake, "svc")
    stopped = threading.Event()

    def stop_on_instances(event: Event) -> None:
        if event.instances:
            instancer.stop()
            stopped.set()

    # The first answer may already be in; either way stop() runs inside a delivery.
    instancer.subscribe(stop_on_instances)
    assert stopped.wait(5)
    instancer.stop()  # idempotent


def test_stop_during_a_long_backoff_is_prompt() -> None:
    fake = FakeConsul([requests.ConnectionError("refused") for _ in range(30)])
    instancer = ConsulInstancer(fake, "svc")
    # After the 8th failure the loop sleeps 0.64-1.28 s; stop() must cut that short.
    wait_for(lambda: len(fake.health.calls) >= 8, timeout=10, what="backoff to grow")
    started = time.monotonic()
    instancer.stop()
    assert time.monotonic() - started < 0.2


def test_instancers_with_the_same_arguments_share_one_watch(events: list[Event]) -> None:
    fake = FakeConsul([("3", [entry("10.0.0.1", 1)])])
    first = ConsulInstancer(fake, "svc", tags=["a"])
    second = ConsulInstancer(fake, "svc", tags=("a",))
    other = ConsulInstancer(fake, "svc", tags=("b",))
    try:
        watches = [t for t in threading.enumerate() if t.name == "kitsd-consul-watch-svc"]
        assert len(watches) == 2
        first.stop()
        second.subscribe(events.append)
        assert events[-1].instances == ("10.0.0.1:1",)
    finally:
        for instancer in (first, second, other):
            instancer.stop()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"service": ""}, "service"),
        ({"service": "a/b"}, "service"),
        ({"service": None}, "service"),
        ({"service": "svc", "wait": 0}, "wait"),
        ({"service": "svc", "wait": 601}, "wait"),
        ({"service": "svc", "tags": ["a", ""]}, "tags"),
    ],
)
def test_bad_instancer_arguments_raise_value_error(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConsulInstancer(FakeConsul(), **kwargs)


def test_a_single_string_is_not_a_tag_list() -> None:
    with pytest.raises(TypeError, match="one string"):
        ConsulInstancer(FakeConsul(), "svc", tags="ab")


# --- error mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "kind", "text"),
    [
        (consul.ACLPermissionDenied("ACL not found"), PermissionDeniedError, "permission denied"),
        (consul.ACLDisabled("nope"), PermissionDeniedError, "unauthorized"),
        (consul.Timeout("slow"), RegistryUnavailableError, "timed out"),
        (requests.ReadTimeout("slow"), RegistryUnavailableError, "timed out"),
        (requests.ConnectionError("refused"), RegistryUnavailableError, "cannot connect"),
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
    with ConsulRegistrar(fake, "web", "h", 1, ttl=0.3):
        wait_for(lambda: len(fake.agent.check.passes) >= 3, timeout=5, what="three heartbeats")
        started = time.monotonic()
        count = len(fake.agent.check.passes)
        wait_for(lambda: len(fake.agent.check.passes) >= count + 2, timeout=5,
                 what="two more heartbeats")
        elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 1.0  # two intervals of 0.1 s
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
            ConsulRegistrar(fake, "web", "h", 1, ttl=0.06):
        wait_for(lambda: len(fake.agent.service.registered) >= 2, timeout=5,
                 what="a second registration")
        wait_for(lambda: len(fake.agent.check.passes) >= 4, timeout=5, what="heartbeats resuming")
    assert fake.agent.service.registered[0] == fake.agent.service.registered[1]
    assert any("no longer knows" in record.getMessage() for record in caplog.records)


def test_unreachable_agent_is_retried_without_reregistering() -> None:
    down = [requests.ConnectionError("refused") for _ in range(4)]
    fake = FakeConsul(check_script=down)
    with ConsulRegistrar(fake, "web", "h", 1, ttl=0.6):
        # The first heartbeat is due after 0.2 s; retries follow within milliseconds.
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
    registrar = ConsulRegistrar(fake, "web", "h", 1, ttl=0.06)
    registrar.register()
    fake.agent.service.deregister_error = requests.ConnectionError("refused")
    with pytest.raises(RegistryUnavailableError, match="deregistering 'web-h-1'"):
        registrar.deregister()
    beats = len(fake.agent.check.passes)
    assert not [t for t in threading.enumerate() if t.name.startswith("kitsd-consul-ttl")]
    assert len(fake.agent.check.passes) == beats
