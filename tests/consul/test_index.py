"""The blocking-index rules (sd.consul.index): pure, table-driven."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from kitsd.core.errors import PermissionDeniedError, RegistryUnavailableError
from kitsd.sd.backoff import Backoff
from kitsd.sd.consul.health import UnreadableAnswerError
from kitsd.sd.consul.index import UNREAD, BlockingIndex, Decision, Step, WatchPolicy, parse_index
from kitsd.sd.event import Event
from kitsd.sd.instance_info import InstanceInfo
from tests.test_purity import violations

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["sd/consul/index.py", "sd/consul/health.py"])
def test_pure_modules_import_nothing_that_does_io(module: str) -> None:
    assert violations(ROOT / module) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("42", 42), (" 7 ", 7), (42, 42), (b"9", 9), ("0", 0), ("-3", -3), (-3, -3),
        (None, None), ("", None), ("abc", None), ("1.5", None), ("4 2", None), (True, None),
        (1.0, None), ("١٢", None), (b"\xff", None), ([], None),
    ],
)
def test_parse_index(raw: object, expected: int | None) -> None:
    assert parse_index(raw) == expected


def feed(answers: list[object], start: BlockingIndex | None = None) -> list[Step]:
    rules = start or BlockingIndex()
    return [rules.observe(answer) for answer in answers]


def test_first_answer_is_taken_as_is() -> None:
    rules = BlockingIndex()
    assert rules.index == 0
    step = rules.observe("15")
    assert step == Step(15, publish=True, back_off=False)
    assert rules.index == 15


def test_growing_and_unchanged_indexes_are_normal() -> None:
    steps = feed(["3", "3", "8", 8, "100"])
    assert [s.index for s in steps] == [3, 3, 8, 8, 100]
    assert all(s.publish and not s.back_off and s.reason is None for s in steps)


@pytest.mark.parametrize("lower", ["4", 4, "1", "0", "-1", "garbage", None])
def test_an_index_that_goes_backwards_resets_to_zero_and_backs_off(lower: object) -> None:
    rules = BlockingIndex()
    rules.observe("5")
    step = rules.observe(lower)
    assert step.index == 0
    assert step.back_off
    assert not step.publish
    assert step.reason is not None
    assert "backwards" in step.reason
    assert rules.index == 0


def test_after_a_reset_the_fresh_read_is_normal_even_if_lower() -> None:
    steps = feed(["50", "10", "12"])
    assert [(s.index, s.publish, s.back_off) for s in steps] == [
        (50, True, False), (0, False, True), (12, True, False)
    ]


@pytest.mark.parametrize("insane", ["0", 0, "-7", "", "x", None])
def test_a_non_positive_or_unreadable_index_waits_from_one_and_backs_off(insane: object) -> None:
    step = BlockingIndex().observe(insane)
    assert step.index == 1
    assert step.back_off
    assert step.publish  # the entries of a plain read are still the current state
    assert step.reason is not None
    assert "not a positive integer" in step.reason


def test_a_server_stuck_at_index_zero_is_never_hammered() -> None:
    # Asking with 0 answers at once; after the first insane answer the rules ask
    # with 1 (a query that blocks), and every answer of the stuck server backs off.
    steps = feed(["0"] * 6)
    assert all(s.back_off for s in steps)
    indexes = [s.index for s in steps]
    assert indexes[0] == 1
    assert all(not (a == 0 and b == 0) for a, b in itertools.pairwise(indexes))


def test_index_one_after_an_insane_answer_then_normal() -> None:
    steps = feed(["0", "1", "9"])
    assert [(s.index, s.back_off) for s in steps] == [(1, True), (1, False), (9, False)]


def test_failed_query_resets_to_a_plain_read() -> None:
    rules = BlockingIndex()
    rules.observe("77")
    assert rules.failed() == 0
    assert rules.index == 0
    step = rules.observe("3")  # an agent that restarted without its state
    assert step == Step(3, publish=True, back_off=False)


# --- the loop policy ---------------------------------------------------------------------------


def policy(required_tags: tuple[str, ...] = ()) -> WatchPolicy:
    return WatchPolicy(required_tags=required_tags, where="watching 'web'",
                       backoff=Backoff(rng=random.Random(7)))


def entry(address: str, port: int, tags: list[str] | None = None) -> dict[str, object]:
    return {"Node": {"Address": "10.9.9.9"},
            "Service": {"ID": f"{address}-{port}", "Address": address, "Port": port,
                        "Tags": tags or []}}


def test_policy_publishes_normal_answers_at_once() -> None:
    loop = policy(required_tags=("b",))
    decision = loop.answered("12", [entry("10.0.0.2", 2, ["a", "b"]), entry("10.0.0.1", 1, ["a"])])
    # the event carries the entry's tags as metadata
    assert decision == Decision(event=Event(("10.0.0.2:2",),
                                            info={"10.0.0.2:2": InstanceInfo(tags=("a", "b"))}))
    assert loop.index == 12


def test_policy_backs_off_on_a_backwards_index_without_publishing() -> None:
    loop = policy()
    loop.answered("12", [])
    decision = loop.answered("3", [entry("10.0.0.1", 1)])
    assert decision.event is None
    assert decision.error is None
    assert 0.005 <= decision.delay <= 0.01
    assert decision.log is not None
    assert "backwards" in decision.log
    assert loop.index == 0


def test_policy_errors_keep_nothing_but_the_error_and_back_off_exponentially() -> None:
    loop = policy()
    loop.answered("12", [])
    error = RegistryUnavailableError("agent down")
    delays = []
    for _ in range(6):
        decision = loop.failed(error)
        assert decision.error is error
        assert decision.event is None
        assert loop.index == 0
        delays.append(decision.delay)
    for n, delay in enumerate(delays, start=1):
        ceiling = 0.01 * 2 ** (n - 1)
        assert ceiling / 2 <= delay <= ceiling
    # A good answer resets the backoff.
    assert loop.answered("5", []).delay == 0
    assert loop.failed(error).delay <= 0.01


def test_policy_turns_an_unreadable_body_into_a_chained_error() -> None:
    loop = policy()
    decision = loop.answered("4", {"not": "a list"})
    assert isinstance(decision.error, RegistryUnavailableError)
    assert isinstance(decision.error.__cause__, UnreadableAnswerError)
    assert str(decision.error).startswith("watching 'web': unreadable answer")
    assert decision.delay > 0
    assert loop.index == 0


# --- unchanged answers, ACL default deny -------------------------------------------------------


def entries_at(*ports: int) -> list[object]:
    return [{"Node": {"Address": "10.0.0.9"}, "Service": {"Address": "10.0.0.1", "Port": port}}
            for port in ports]


def test_an_answer_repeating_the_last_index_is_unchanged_and_skipped() -> None:
    policy = WatchPolicy()
    assert policy.unchanged_at is None  # nothing read yet
    first = policy.answered("5", entries_at(1))
    assert first.event == Event(("10.0.0.1:1",))
    assert policy.unchanged_at == 5
    # Same index: nothing is translated (not even a body that would be unreadable).
    assert policy.answered("5", {"not": "a list"}) == Decision()
    assert policy.answered("5", UNREAD) == Decision()
    assert policy.answered("6", entries_at(2)).event == Event(("10.0.0.1:2",))


def test_no_skipping_after_an_anomaly_or_a_failure() -> None:
    policy = WatchPolicy(backoff=Backoff(rng=random.Random(1)))
    policy.answered("0", entries_at(1))  # insane: waits from 1, which is no answer's index
    assert policy.unchanged_at is None
    assert policy.answered("1", entries_at(2)).event == Event(("10.0.0.1:2",))
    assert policy.unchanged_at == 1
    policy.failed(RegistryUnavailableError("down"))
    assert policy.unchanged_at is None


def test_an_unread_body_that_was_not_unchanged_is_an_error() -> None:
    decision = WatchPolicy().answered("5", UNREAD)
    assert isinstance(decision.error, RegistryUnavailableError)


@pytest.mark.parametrize("token_sent", [True, False])
def test_empty_under_default_deny_is_permission_denied_until_instances_show(
    token_sent: bool,
) -> None:
    policy = WatchPolicy(token_sent=token_sent, where="watching 'web'")
    first = policy.answered("3", [], default_deny=True)
    assert isinstance(first.error, PermissionDeniedError)
    assert first.event is None
    assert first.delay == 0  # the blocking query goes on: instances show at once
    assert first.log is not None
    assert ("no ACL token was sent" in str(first.error)) is not token_sent
    again = policy.answered("4", [], default_deny=True)
    assert isinstance(again.error, PermissionDeniedError)
    assert again.log is None  # warned once
    assert policy.answered("5", entries_at(1), default_deny=True).event == Event(
        ("10.0.0.1:1",))
    # Read access proven: an empty answer now means the service scaled to zero.
    assert policy.answered("6", [], default_deny=True) == Decision(event=Event(()))


def test_empty_without_default_deny_is_just_empty() -> None:
    assert WatchPolicy().answered("3", []) == Decision(event=Event(()))
