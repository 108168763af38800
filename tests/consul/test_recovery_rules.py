"""The watch's recovery schedule (sd.consul.index, "Recovery"): pure."""

from __future__ import annotations

import consul
import httpx
import pytest
import requests

from kitsd.core.errors import RegistryUnavailableError
from kitsd.sd.backoff import CONSUL_PROBE, CONSUL_WATCH
from kitsd.sd.consul.client import reached_agent
from kitsd.sd.consul.index import RECOVERY_PROBES, RECOVERY_READ_TIMEOUT, WatchPolicy

DOWN = RegistryUnavailableError("cannot connect")


def test_while_nothing_reaches_the_agent_it_is_probed_every_100_to_200_ms() -> None:
    policy = WatchPolicy()
    policy.answered("12", [])
    delays = [policy.failed(DOWN, reached=False).delay for _ in range(50)]
    assert all(0.1 <= delay <= 0.2 for delay in delays)
    assert policy.index == 0  # the query after a failure is a plain read


def test_errors_the_agent_answered_back_off_to_two_seconds_at_most() -> None:
    policy = WatchPolicy()
    delays = [policy.failed(DOWN).delay for _ in range(30)]
    for n, delay in enumerate(delays[:8], start=1):
        ceiling = 0.01 * 2 ** (n - 1)
        assert ceiling / 2 <= delay <= ceiling
    assert all(1.0 <= delay <= 2.0 for delay in delays[8:])  # at most one request a second


def test_probing_does_not_grow_the_backoff_and_an_answer_resets_both() -> None:
    policy = WatchPolicy()
    for _ in range(5):
        policy.failed(DOWN)
    for _ in range(20):
        policy.failed(DOWN, reached=False)
    for _ in range(RECOVERY_PROBES):  # starting up
        assert policy.failed(DOWN).delay <= 0.2
    # The agent is up but still answers errors: the backoff goes on where it was.
    assert 0.16 <= policy.failed(DOWN).delay <= 0.32  # the 6th failure
    assert policy.answered("3", []).delay == 0
    assert policy.failed(DOWN).delay <= 0.01


def test_the_curves_are_the_documented_ones() -> None:
    assert (CONSUL_WATCH.initial, CONSUL_WATCH.maximum) == (0.01, 2.0)
    assert (CONSUL_PROBE.initial, CONSUL_PROBE.maximum) == (0.2, 0.2)


@pytest.mark.parametrize(
    ("error", "reached"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("syn unanswered"), False),
        (ConnectionRefusedError(), False),
        (requests.ConnectTimeout(), False),
        (httpx.ReadError("reset"), True),
        (httpx.RemoteProtocolError("closed"), True),
        (httpx.ReadTimeout("slow"), True),
        (consul.ConsulException("500 No cluster leader"), True),
        (ValueError("junk"), True),
    ],
)
def test_which_failures_reached_the_agent(error: BaseException, reached: bool) -> None:
    assert reached_agent(error) is reached


def test_an_agent_starting_up_after_refusing_is_probed_then_backed_off() -> None:
    policy = WatchPolicy()
    for _ in range(3):
        policy.failed(DOWN, reached=False)
    # It listens again but has no leader yet: quick queries, a bounded number of them.
    starting = [policy.failed(DOWN).delay for _ in range(RECOVERY_PROBES)]
    assert all(0.1 <= delay <= 0.2 for delay in starting)
    assert policy.failed(DOWN).delay <= 0.01  # then the backoff, from its start
    # An answer ends the start-up: a later error backs off at once.
    policy.failed(DOWN, reached=False)
    policy.answered("7", [])
    assert policy.failed(DOWN).delay <= 0.01


def test_reads_are_given_up_early_only_while_the_agent_is_down_or_starting() -> None:
    policy = WatchPolicy()
    assert policy.read_timeout is None
    policy.failed(DOWN)
    assert policy.read_timeout is None  # an agent that answered errors: the usual timeout
    policy.failed(DOWN, reached=False)
    assert policy.read_timeout == RECOVERY_READ_TIMEOUT
    for _ in range(RECOVERY_PROBES):
        policy.failed(DOWN)  # held reads given up while it starts
    assert policy.read_timeout is None  # start-up over: the agent is failing, not starting
    policy.failed(DOWN, reached=False)
    policy.answered("3", [])
    assert policy.read_timeout is None
