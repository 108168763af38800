"""SRVInstancer against a scripted DNS server: real DNS over UDP, odd answers on demand."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from kitsd import sd
from kitsd.core.errors import MisuseError, RegistryUnavailableError
from kitsd.sd.dns import SRVInstancer
from kitsd.sd.dns.instancer import _running_watches
from tests.dns.fake_dns import ScriptedDNS, address_answer, rcode_answer, srv_answer
from tests.helpers import assert_no_new_threads, wait_for

NAME = "_users._tcp.example.test"


class Script:
    """What the scripted server answers, changed by the test as it goes."""

    def __init__(self) -> None:
        self.mode = "records"
        self.records = ["1 10 8080 a.example.test."]
        self.glue: list[tuple[str, str, str]] = [("a.example.test.", "A", "10.0.0.1")]
        self.addresses: dict[str, list[str]] = {}
        self.ttl = 0  # as Consul: re-resolve every min_ttl

    def __call__(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        if question.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            kind = dns.rdatatype.to_text(question.rdtype)
            return address_answer(query, self.addresses.get(f"{question.name}{kind}", []))
        if self.mode == "silent":
            return None
        if self.mode == "nxdomain":
            return rcode_answer(query, dns.rcode.NXDOMAIN)
        if self.mode == "servfail":
            return rcode_answer(query, dns.rcode.SERVFAIL)
        if self.mode == "empty":
            return srv_answer(query, [])
        return srv_answer(query, self.records, ttl=self.ttl, additional=self.glue)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def server(script: Script) -> Iterator[ScriptedDNS]:
    with ScriptedDNS(script) as scripted:
        yield scripted


def watch(server: ScriptedDNS, **options: object) -> tuple[SRVInstancer, list[sd.Event]]:
    options.setdefault("min_ttl", 0.1)
    options.setdefault("timeout", 0.5)
    instancer = SRVInstancer(NAME, resolver=server.address, **options)  # type: ignore[arg-type]
    events: list[sd.Event] = []
    instancer.subscribe(events.append)
    return instancer, events


def srv_queries(server: ScriptedDNS) -> int:
    return sum(1 for _, kind in server.queries if kind == "SRV")


def test_glue_addresses_become_instances(server: ScriptedDNS, script: Script) -> None:
    instancer, events = watch(server)
    with instancer:
        wait_for(lambda: events[-1].instances == ("10.0.0.1:8080",), what="the first answer")
        assert instancer.records[0].priority == 1
        assert instancer.records[0].weight == 10
        assert all(kind == "SRV" for _, kind in server.queries), "glue needs no A lookup"


def test_targets_without_glue_are_looked_up(server: ScriptedDNS, script: Script) -> None:
    script.glue = []
    script.records = ["1 1 80 v4.example.test.", "1 1 81 v6.example.test.",
                      "1 1 82 nowhere.example.test."]
    script.addresses = {"v4.example.test.A": ["10.0.0.4"], "v6.example.test.AAAA": ["2001:db8::6"]}
    instancer, events = watch(server)
    with instancer:
        wait_for(lambda: events[-1].instances == ("10.0.0.4:80", "[2001:db8::6]:81"))


def test_names_kept_when_not_resolving(server: ScriptedDNS, script: Script) -> None:
    instancer, events = watch(server, resolve=False)
    with instancer:
        wait_for(lambda: events[-1].instances == ("a.example.test:8080",))
        assert all(kind == "SRV" for _, kind in server.queries)


@pytest.mark.parametrize("mode", ["nxdomain", "empty"])
def test_nxdomain_and_no_answer_publish_an_empty_set(
    server: ScriptedDNS, script: Script, mode: str
) -> None:
    instancer, events = watch(server)
    with instancer:
        wait_for(lambda: events[-1].instances == ("10.0.0.1:8080",))
        script.mode = mode
        wait_for(lambda: events[-1].instances == (), what=f"an empty set after {mode}")
        assert events[-1].error is None


@pytest.mark.parametrize("mode", ["servfail", "silent"])
def test_servfail_and_timeout_publish_an_error_and_keep_the_instances(
    server: ScriptedDNS, script: Script, mode: str
) -> None:
    instancer, events = watch(server)
    with instancer:
        wait_for(lambda: events[-1].instances == ("10.0.0.1:8080",))
        script.mode = mode
        wait_for(lambda: events[-1].error is not None, what=f"an error event after {mode}")
        assert events[-1].instances == ("10.0.0.1:8080",)
        assert isinstance(events[-1].error, RegistryUnavailableError)
        assert NAME in str(events[-1].error)
        script.mode = "records"
        script.records = ["1 1 9090 a.example.test."]
        # (compared field by field: the event also carries the SRV metadata)
        wait_for(lambda: (events[-1].instances, events[-1].error) == (("10.0.0.1:9090",), None),
                 what="recovery")


def test_refresh_follows_the_ttl(server: ScriptedDNS, script: Script) -> None:
    script.ttl = 0  # Consul's TTL: re-resolve every min_ttl
    instancer, events = watch(server, min_ttl=0.1)
    with instancer:
        wait_for(lambda: srv_queries(server) >= 4, what="lookups every min_ttl")
        script.records = ["1 1 8081 a.example.test."]
        wait_for(lambda: events[-1].instances == ("10.0.0.1:8081",))


def test_a_long_ttl_is_not_re_resolved_early(server: ScriptedDNS, script: Script) -> None:
    script.ttl = 3600
    instancer, events = watch(server, min_ttl=0.1, max_ttl=7200)
    with instancer:
        wait_for(lambda: events[-1].instances == ("10.0.0.1:8080",))
        time.sleep(0.5)  # asserting that nothing happens: ten min_ttls pass without a lookup
        assert srv_queries(server) == 1


def test_stop_is_prompt_during_a_hanging_lookup(server: ScriptedDNS, script: Script) -> None:
    before = set(threading.enumerate()) - server.threads
    script.mode = "silent"
    instancer, _ = watch(server, timeout=30.0, first_answer_timeout=0)
    wait_for(lambda: srv_queries(server) >= 1, what="the lookup to be in flight")
    started = time.monotonic()
    instancer.stop()
    assert time.monotonic() - started < 0.5
    assert_no_new_threads(before | server.threads, timeout=0.5)
    assert _running_watches() == 0


def test_stop_is_prompt_every_time_even_when_it_lands_on_a_query_being_sent(
    server: ScriptedDNS, script: Script
) -> None:
    """The flake of issue item 9: Python 3.11's asyncio.wait_for, around every dnspython
    socket operation, loses a cancellation that lands as an operation completes; the
    lookup went on for its 2 s try and stop() returned after 0.9 s with the thread still
    running (1 in ~50 stops in a large process).  stop() now cancels until it ends."""
    script.mode = "silent"
    slowest = 0.0
    for round_ in range(40):
        instancer, _ = watch(server, timeout=30.0, first_answer_timeout=0)
        wait_for(lambda goal=round_ + 1: srv_queries(server) >= goal,  # type: ignore[misc]
                 what="the lookup to be in flight")
        started = time.monotonic()
        instancer.stop()
        slowest = max(slowest, time.monotonic() - started)
        assert _running_watches() == 0
    print(f"FIGURE DNS watch stop during a hanging lookup: slowest of 40 {slowest * 1000:.1f} ms")
    assert slowest < 0.5
    assert not [thread for thread in threading.enumerate()
                if thread.name.startswith("kitsd-dns-watch") and thread.is_alive()]


def test_instancers_with_the_same_settings_share_one_watch(
    server: ScriptedDNS, no_thread_leaks: None
) -> None:
    first, events_a = watch(server)
    second, events_b = watch(server)
    other, _ = watch(server, resolve=False)
    try:
        assert _running_watches() == 2
        wait_for(lambda: bool(events_b) and events_b[-1].instances == ("10.0.0.1:8080",))
        assert events_a[-1] == events_b[-1]
    finally:
        first.stop()
        assert _running_watches() == 2
        second.stop()
        other.stop()
        other.stop()  # idempotent
    assert _running_watches() == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "mentions"),
    [
        ((5,), {}, TypeError, "name"),
        (("",), {}, MisuseError, "SRV name"),
        (("bad name",), {}, MisuseError, "SRV name"),
        (("a\n.example",), {}, MisuseError, "SRV name"),
        (("a" * 64 + ".example",), {}, MisuseError, "SRV name"),
        ((NAME,), {"resolver": "dns.example:53"}, MisuseError, "IP address"),
        ((NAME,), {"resolver": "127.0.0.1:0"}, MisuseError, "resolver"),
        ((NAME,), {"resolver": 53}, TypeError, "resolver"),
        ((NAME,), {"resolve": "yes"}, TypeError, "resolve"),
        ((NAME,), {"timeout": math.nan}, MisuseError, "timeout"),
        ((NAME,), {"timeout": math.inf}, MisuseError, "timeout"),
        ((NAME,), {"min_ttl": 5, "max_ttl": 1}, MisuseError, "min_ttl"),
        ((NAME,), {"interval": -1}, MisuseError, "interval"),
    ],
)
def test_bad_arguments_fail_at_construction_leaving_nothing_running(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], mentions: str,
    no_thread_leaks: None,
) -> None:
    with pytest.raises(error, match=mentions):
        SRVInstancer(*args, **kwargs)  # type: ignore[arg-type]
    assert _running_watches() == 0


def test_a_junk_answer_does_not_hide_the_good_records(
    server: ScriptedDNS, script: Script
) -> None:
    script.records = ["1 1 0 zero.example.test.", "1 1 80 .", "5 1 81 a.example.test."]
    instancer, events = watch(server)
    with instancer:
        wait_for(lambda: events[-1].instances == ("10.0.0.1:81",))
        assert events[-1].error is None


def test_a_bad_record_is_warned_about_once_not_on_every_refresh(
    server: ScriptedDNS, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    script.records = ["1 1 0 zero.example.test.", "5 1 81 a.example.test."]
    instancer, events = watch(server)
    with instancer:
        wait_for(lambda: events[-1].instances == ("10.0.0.1:81",))
        wait_for(lambda: srv_queries(server) >= 5, what="several refreshes")
        warnings = [r for r in caplog.records if "outside 1-65535" in r.getMessage()]
        assert len(warnings) == 1


def test_lookups_go_over_tcp_unless_told_otherwise(server: ScriptedDNS) -> None:
    instancer, events = watch(server)
    with instancer:
        wait_for(lambda: events[-1].instances == ("10.0.0.1:8080",))
    assert set(server.transports) == {"tcp"}
    udp, udp_events = watch(server, tcp=False)
    with udp:
        wait_for(lambda: udp_events[-1].instances == ("10.0.0.1:8080",))
    assert server.transports[-1] == "udp"


def test_no_system_resolver_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, no_thread_leaks: None
) -> None:
    import dns.resolver

    def unconfigured(self: object, *args: object, **kwargs: object) -> None:
        raise dns.resolver.NoResolverConfiguration("no nameservers")  # type: ignore[no-untyped-call]

    monkeypatch.setattr(dns.resolver.BaseResolver, "read_resolv_conf", unconfigured)
    with pytest.raises(MisuseError, match="resolver="):
        SRVInstancer(NAME)
    assert _running_watches() == 0


def test_the_instancer_publishes_the_metadata_and_its_changes(
    server: ScriptedDNS, script: Script
) -> None:
    script.records = ["1 10 8080 a.example.test."]
    instancer, events = watch(server)
    with instancer:
        wait_for(lambda: events[-1].instances == ("10.0.0.1:8080",), what="the first answer")
        info = events[-1].info["10.0.0.1:8080"]
        assert info.weight == 10
        assert dict(info.meta) == {"srv.priority": "1", "srv.target": "a.example.test"}
        seen = len(events)
        script.records = ["1 30 8080 a.example.test."]  # only the weight changes
        wait_for(lambda: events[-1].info["10.0.0.1:8080"].weight == 30, what="the new weight")
        assert events[-1].instances == events[seen - 1].instances


class Slow(Script):
    """The script, answering every query after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def __call__(self, query: dns.message.Message) -> dns.message.Message | None:
        time.sleep(self.delay)  # the scripted server's latency, not a synchronisation
        return super().__call__(query)


def test_the_first_event_is_the_answer_never_an_empty_set() -> None:
    """Issue 15.4: no instancer may publish a state it has not read."""
    with ScriptedDNS(Slow(0.05)) as slow:
        instancer, events = watch(slow)
        with instancer:
            assert [(event.instances, event.error) for event in events] == [
                (("10.0.0.1:8080",), None)]
            assert instancer.answered


def test_a_silent_server_is_an_error_first_not_an_empty_set(
    server: ScriptedDNS, script: Script
) -> None:
    script.mode = "silent"
    instancer, events = watch(server, timeout=30.0, first_answer_timeout=0.1)
    with instancer:
        assert len(events) == 1
        assert events[0].instances == ()
        assert isinstance(events[0].error, RegistryUnavailableError)
        assert "no answer from SRV _users._tcp.example.test at 127.0.0.1:" in str(events[0].error)
