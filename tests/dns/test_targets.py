"""SRV targets without glue (issue 16.8): looked up a few at a time, negative answers
remembered, a failed target never loses the others, and a floor under the refresh.

Against the scripted DNS server (real DNS over real sockets); the figures are printed
with a ``FIGURE`` prefix (``-s`` shows them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from kitsd import sd
from kitsd.core.errors import MisuseError
from kitsd.sd.dns import SRVInstancer
from kitsd.sd.dns.resolver import MAX_TARGET_LOOKUPS
from kitsd.sd.dns.srv import MIN_REFRESH, NEGATIVE_TTL, TargetCache
from tests.dns.fake_dns import ScriptedDNS, address_answer, rcode_answer, srv_answer
from tests.helpers import wait_for

NAME = "_users._tcp.example.test"


class Targets:
    """SRV records (TTL 0) pointing at ``count`` glue-less targets ``t<i>.<domain>``:
    if ``resolvable`` they answer A queries with 10.1.x.y (TTL ``ttl``), ``silent`` ones
    never answer, otherwise NXDOMAIN (with an SOA whose negative TTL is
    ``negative_ttl``, if set).  Each target query is answered after ``delay`` seconds."""

    def __init__(self, count: int, *, resolvable: bool = False, ttl: int = 0,
                 negative_ttl: int | None = None, domain: str = "example.test.",
                 delay: float = 0.0) -> None:
        self.records = [f"1 1 8080 t{i}.{domain}" for i in range(count)]
        self.resolvable = resolvable
        self.silent: set[str] = set()
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.delay = delay

    def __call__(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        if question.rdtype == dns.rdatatype.SRV:
            return srv_answer(query, self.records, ttl=0)
        target = question.name.to_text()
        if target in self.silent:
            return None
        if self.delay:
            time.sleep(self.delay)  # the server's latency, not a synchronisation
        if not self.resolvable:
            answer = rcode_answer(query, dns.rcode.NXDOMAIN)
            if self.negative_ttl is not None:
                answer.authority.append(dns.rrset.from_text(
                    "example.test.", self.negative_ttl, "IN", "SOA",
                    f"ns.example.test. admin.example.test. 1 60 60 60 {self.negative_ttl}"))
            return answer
        if question.rdtype != dns.rdatatype.A:
            return address_answer(query, [])
        number = int(target.split(".")[0][1:])
        return address_answer(query, [f"10.1.{number // 250}.{number % 250 + 1}"], ttl=self.ttl)


def target_queries(server: ScriptedDNS) -> int:
    return sum(1 for _, kind in server.queries if kind in ("A", "AAAA"))


@pytest.fixture
def unresolvable() -> Iterator[tuple[ScriptedDNS, Targets]]:
    script = Targets(200, delay=0.005)
    with ScriptedDNS(script, concurrent=True) as server:
        yield server, script


def test_unresolvable_targets_are_asked_a_few_at_a_time_and_then_remembered(
    unresolvable: tuple[ScriptedDNS, Targets],
) -> None:
    """200 NXDOMAIN targets at TTL 0: were 201 queries/s and 175 connections at once."""
    server, _ = unresolvable
    with SRVInstancer(NAME, resolver=server.address, min_ttl=MIN_REFRESH,
                      timeout=10.0) as instancer:
        assert instancer.state.error is None
        assert instancer.state.instances == ()  # answered: no target has an address
        after_first = target_queries(server)
        srv_before = len(server.queries) - after_first
        window = 1.0
        time.sleep(window)  # the figure: what the watch asks for in this second
        refreshes = len(server.queries) - target_queries(server) - srv_before
        asked = target_queries(server) - after_first
    print(f"FIGURE 200 NXDOMAIN targets, TTL 0: first refresh {after_first} target queries,"
          f" then {asked / window:.0f} target queries/s over {refreshes} refreshes;"
          f" {server.most_in_flight} queries in flight at once"
          f" ({server.most_connections} connections)")
    assert after_first == 200  # NXDOMAIN on A: no AAAA query for a name that does not exist
    assert refreshes >= 1  # the watch did refresh meanwhile...
    assert asked == 0  # ...without asking again for targets known to have no address
    assert server.most_in_flight <= MAX_TARGET_LOOKUPS


def test_a_negative_answer_is_remembered_for_its_soa_ttl_and_asked_again_after() -> None:
    script = Targets(3, negative_ttl=1)  # the SOA says 1 s: NEGATIVE_TTL (5 s) wins
    cache = TargetCache(max_ttl=300)
    assert cache.missing("t0", 1.0, now=0.0) == NEGATIVE_TTL
    assert cache.missing("t0", 1.0, now=10.0) == 2 * NEGATIVE_TTL  # still none: doubles
    assert cache.missing("t1", 600.0, now=0.0) == 300  # the SOA's, capped by max_ttl
    cache.resolved("t0", ["10.0.0.1"], 30, now=20.0)
    assert cache.missing("t0", None, now=60.0) == NEGATIVE_TTL  # resolved meanwhile: anew
    with ScriptedDNS(script) as server, SRVInstancer(
            NAME, resolver=server.address, min_ttl=MIN_REFRESH, max_ttl=0.5) as instancer:
        # max_ttl caps the negative lifetime too: asked again within about a second
        first = target_queries(server)
        assert first == 3
        wait_for(lambda: target_queries(server) >= 6, timeout=10,
                 what="the targets to be asked again once their negative TTL ran out")
        assert instancer.state.instances == ()


def test_a_silent_target_does_not_lose_the_others() -> None:
    """2,000 glue-less targets, one of them silent: was 0 instances published."""
    # short names: 2,000 SRV records must fit in one 64 KiB answer
    script = Targets(2000, resolvable=True, ttl=30, domain="x.")
    script.silent.add("t7.x.")
    with ScriptedDNS(script, concurrent=True) as server:
        started = time.monotonic()
        with SRVInstancer(NAME, resolver=server.address, timeout=20.0,
                          first_answer_timeout=60) as instancer:
            took = time.monotonic() - started
            state = instancer.state
        print(f"FIGURE 2,000 glue-less targets, one silent: {len(state.instances)} instances"
              f" published after {took:.2f}s; {server.most_in_flight} queries in flight at once")
    assert state.error is None
    assert len(state.instances) == 1999
    assert "10.1.0.8:8080" not in state.instances  # t7's
    assert server.most_in_flight <= MAX_TARGET_LOOKUPS


def test_a_resolved_target_is_remembered_for_its_ttl() -> None:
    script = Targets(5, resolvable=True, ttl=3600)
    with ScriptedDNS(script) as server, SRVInstancer(
            NAME, resolver=server.address, min_ttl=MIN_REFRESH) as instancer:
        assert len(instancer.state.instances) == 5
        first = target_queries(server)
        srv = len(server.queries) - first
        wait_for(lambda: len(server.queries) - target_queries(server) >= srv + 3,
                 what="three more refreshes")
        assert target_queries(server) == first  # the addresses' TTL has not run out


def test_the_refresh_has_a_floor() -> None:
    """``min_ttl=0.0001`` gave 187 lookups/s."""
    for options in ({"min_ttl": 0.0001}, {"interval": 0.05}):
        with pytest.raises(MisuseError, match=f"at least {MIN_REFRESH:g}"):
            SRVInstancer(NAME, resolver="127.0.0.1:53", **options)  # type: ignore[arg-type]
    with pytest.raises(MisuseError, match="min_ttl"):
        sd.instancer_from_url("dnssrv://_a._tcp.example?min_ttl=0.0001")


def test_lookups_per_second_stay_under_the_floor() -> None:
    script = Targets(0)
    with ScriptedDNS(script) as server, SRVInstancer(
            NAME, resolver=server.address, min_ttl=MIN_REFRESH, first_answer_timeout=10):
        start = len(server.queries)
        time.sleep(1.0)  # the figure: how many lookups one second sees
        lookups = len(server.queries) - start
    print(f"FIGURE min_ttl={MIN_REFRESH}, TTL 0: {lookups} SRV lookups in 1 s")
    assert lookups <= 1.0 / MIN_REFRESH + 1


def test_the_cache_forgets_targets_that_left_the_answer() -> None:
    cache = TargetCache()
    cache.resolved("a", ["10.0.0.1"], 60, now=0.0)
    cache.missing("b", None, now=0.0)
    assert cache.fresh("a", 1.0) == ("10.0.0.1",)
    assert cache.fresh("b", 1.0) == ()
    assert cache.fresh("a", 61.0) is None
    assert cache.stale("a") == ("10.0.0.1",)  # what a failed lookup of "a" keeps
    cache.keep_only(["a"])
    assert len(cache) == 1
    assert cache.fresh("b", 1.0) is None
