"""Health answers to instances (sd.consul.health): pure."""

from __future__ import annotations

import logging

import pytest

from kitsd.core.errors import InvalidInstanceError
from kitsd.sd.consul.health import Memo, UnreadableAnswerError, entry_instance, service_instances


def entry(
    service_address: object = "10.0.0.1",
    port: object = 8080,
    *,
    node_address: object = "192.168.0.9",
    tags: object = None,
    service_id: str = "svc-1",
) -> dict[str, object]:
    service: dict[str, object] = {"ID": service_id, "Service": "svc", "Address": service_address,
                                  "Port": port}
    if tags is not None:
        service["Tags"] = tags
    return {"Node": {"Node": "n1", "Address": node_address}, "Service": service, "Checks": []}


def test_service_address_wins_over_node_address() -> None:
    assert entry_instance(entry("10.0.0.1", 81, node_address="10.9.9.9")) == "10.0.0.1:81"


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_empty_service_address_falls_back_to_node_address(empty: object) -> None:
    assert entry_instance(entry(empty, 82, node_address="10.9.9.9")) == "10.9.9.9:82"


def test_ipv6_addresses_get_brackets_and_are_normalised() -> None:
    assert entry_instance(entry("0:0::1", 83)) == "[::1]:83"
    assert entry_instance(entry("", 84, node_address="fe80::1")) == "[fe80::1]:84"
    assert entry_instance(entry("[::2]", 85)) == "[::2]:85"


def test_host_names_are_kept_lower_cased() -> None:
    assert entry_instance(entry("Web-1.Example.COM", 86)) == "web-1.example.com:86"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("not an object", "JSON object"),
        ({"Node": {"Address": "1.2.3.4"}}, "no Service"),
        (entry("", 80, node_address=""), "neither"),
        (entry("", 80, node_address=None), "neither"),
        (entry("1.2.3.4", None), "not an integer"),
        (entry("1.2.3.4", "80"), "not an integer"),
        (entry("1.2.3.4", True), "not an integer"),
        (entry("1.2.3.4", 0), "outside"),
        (entry("1.2.3.4", 70000), "outside"),
        (entry("bad host!", 80), "not a host name"),
    ],
)
def test_unusable_entries_raise_invalid_instance(bad: object, reason: str) -> None:
    with pytest.raises(InvalidInstanceError, match=reason):
        entry_instance(bad)


def test_instances_are_sorted_and_deduplicated() -> None:
    entries = [entry("10.0.0.2", 1), entry("10.0.0.1", 2), entry("10.0.0.2", 1, service_id="x")]
    assert service_instances(entries) == ("10.0.0.1:2", "10.0.0.2:1")


def test_none_means_no_instances_and_empty_list_too() -> None:
    assert service_instances(None) == ()
    assert service_instances([]) == ()


@pytest.mark.parametrize("body", [{"Node": {}}, "text", 42, b"[]"])
def test_an_answer_that_is_not_a_list_is_unreadable(body: object) -> None:
    with pytest.raises(UnreadableAnswerError, match="not a list"):
        service_instances(body)
    assert issubclass(UnreadableAnswerError, ValueError)


def test_invalid_entries_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    good = entry("10.0.0.1", 80)
    entries = [good, "garbage", entry("10.0.0.2", "x", service_id="bad-port"), None,
               entry("10.0.0.3", 81, service_id="fine")]
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.consul.health"):
        result = service_instances(entries, source="consul 'svc'")
    assert result == ("10.0.0.1:80", "10.0.0.3:81")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    assert any("'bad-port'" in message and "consul 'svc'" in message for message in messages)
    assert any("'garbage'" in message for message in messages)


def test_required_tags_keep_entries_carrying_all_of_them() -> None:
    entries = [
        entry("10.0.0.1", 1, tags=["a", "b", "c"], service_id="abc"),
        entry("10.0.0.2", 2, tags=["a", "b"], service_id="ab"),
        entry("10.0.0.3", 3, tags=["a"], service_id="a"),
        entry("10.0.0.4", 4, tags=["b"], service_id="b"),
        entry("10.0.0.5", 5, service_id="untagged"),
        entry("10.0.0.6", 6, tags=None, service_id="null-tags"),
    ]
    assert service_instances(entries, required_tags=["b"]) == (
        "10.0.0.1:1", "10.0.0.2:2", "10.0.0.4:4"
    )
    assert service_instances(entries, required_tags=["b", "c"]) == ("10.0.0.1:1",)
    assert service_instances(entries, required_tags=()) == tuple(
        f"10.0.0.{i}:{i}" for i in range(1, 7)
    )


def test_tag_matching_is_exact() -> None:
    entries = [entry("10.0.0.1", 1, tags=["B"]), entry("10.0.0.2", 2, tags=["b "])]
    assert service_instances(entries, required_tags=["b"]) == ()


def test_malformed_tags_count_as_none() -> None:
    entries = [entry("10.0.0.1", 1, tags="b"), entry("10.0.0.2", 2, tags=["b", 7])]
    assert service_instances(entries, required_tags=["b"]) == ("10.0.0.2:2",)


# --- the memo ---------------------------------------------------------------------------------


def test_the_memo_gives_the_same_instances_as_a_fresh_parse() -> None:
    answer = [entry("10.0.0.1", 1), entry("", 2, node_address="10.0.0.2"),
              entry("Host.Example", 3), entry("0:0::1", 4), entry(" 10.0.0.5 ", 5)]
    memo: Memo = {}
    fresh = service_instances(answer)
    assert service_instances(answer, memo=memo) == fresh
    assert service_instances(answer, memo=memo) == fresh  # now from the memo
    assert fresh == ("10.0.0.1:1", "10.0.0.2:2", "10.0.0.5:5", "[::1]:4", "host.example:3")


def test_the_memo_never_lets_a_bad_entry_through() -> None:
    memo: Memo = {}
    service_instances([entry("10.0.0.1", 1), entry("  ", 2, node_address="10.0.0.2")], memo=memo)
    # A blank service address falls back to *this* entry's node, not a memoised one.
    assert service_instances([entry("  ", 2, node_address="10.0.0.3")], memo=memo) == (
        "10.0.0.3:2",)
    assert service_instances([entry("10.0.0.1", "1"), entry("10.0.0.1", 1.0)],
                             memo=memo) == ()


def test_the_memo_stays_bounded() -> None:
    memo: Memo = {}
    for round_ in range(5):
        service_instances([entry(f"10.0.{round_}.{n}", 80) for n in range(100)], memo=memo)
        assert len(memo) <= 2 * 100 + 64


def test_unordered_instances_are_the_same_set() -> None:
    answer = [entry(f"10.0.0.{n}", 80) for n in (3, 1, 2, 1)]
    assert sorted(service_instances(answer, ordered=False)) == list(service_instances(answer))
    assert len(service_instances(answer, ordered=False)) == 3
