"""Tests for sd.etcd.revision: the pure prefix view and its revision bookkeeping (no server)."""

from __future__ import annotations

import ast
import logging
import random
from pathlib import Path

import pytest

from kitsd.sd.etcd.revision import KeyValue, Phase, PrefixView, WatchEvent, decode_instance

ROOT = Path(__file__).resolve().parents[2]


def put(key: str, value: str | bytes, revision: int) -> WatchEvent:
    raw = value.encode() if isinstance(value, str) else value
    return WatchEvent("put", key.encode(), revision, raw)


def delete(key: str, revision: int) -> WatchEvent:
    return WatchEvent("delete", key.encode(), revision)


def kv(key: str, value: str | bytes, revision: int = 1) -> KeyValue:
    raw = value.encode() if isinstance(value, str) else value
    return KeyValue(key.encode(), raw, revision)


def test_starts_needing_a_read() -> None:
    view = PrefixView()
    assert view.phase is Phase.NEED_READ
    assert view.needs_read
    assert view.instances() == ()
    with pytest.raises(RuntimeError, match="read"):
        _ = view.watch_from


def test_read_sets_instances_and_next_watch_revision() -> None:
    view = PrefixView()
    changed = view.apply_read([kv("/s/b", "10.0.0.2:80", 3), kv("/s/a", "10.0.0.1:80", 2)], 7)
    assert changed
    assert view.instances() == ("10.0.0.1:80", "10.0.0.2:80")
    assert view.revision == 7
    assert view.watch_from == 8
    assert view.phase is Phase.WATCHING


def test_events_apply_in_order_and_advance_the_revision() -> None:
    view = PrefixView()
    view.apply_read([kv("/s/a", "10.0.0.1:80")], 5)
    assert view.apply_events([put("/s/b", "10.0.0.2:80", 6)])
    assert view.instances() == ("10.0.0.1:80", "10.0.0.2:80")
    assert view.apply_events([delete("/s/a", 7), put("/s/b", "10.0.0.3:80", 8)])
    assert view.instances() == ("10.0.0.3:80",)
    assert view.revision == 8
    assert view.watch_from == 9


def test_events_at_or_below_the_applied_revision_are_duplicates() -> None:
    view = PrefixView()
    view.apply_read([kv("/s/a", "10.0.0.1:80", 4)], 6)
    # A resumed watch that starts early re-sends revision 4 and 6: neither is applied again.
    assert not view.apply_events([delete("/s/a", 4), put("/s/x", "10.9.9.9:1", 6)])
    assert view.instances() == ("10.0.0.1:80",)
    assert view.revision == 6
    assert view.apply_events([delete("/s/a", 6), delete("/s/a", 7)])
    assert view.instances() == ()
    assert view.revision == 7


def test_all_events_of_one_revision_apply_together() -> None:
    # A transaction puts several keys at one revision; they arrive in one response.
    view = PrefixView()
    view.apply_read([], 1)
    view.apply_events([put("/s/a", "10.0.0.1:80", 2), put("/s/b", "10.0.0.2:80", 2)])
    assert view.instances() == ("10.0.0.1:80", "10.0.0.2:80")
    assert view.revision == 2


def test_unchanged_instances_report_no_change() -> None:
    view = PrefixView()
    view.apply_read([kv("/s/a", "10.0.0.1:80")], 2)
    # Another key with the same instance, then a re-put of the same value: same instance set.
    assert not view.apply_events([put("/s/b", "10.0.0.1:80", 3)])
    assert not view.apply_events([put("/s/a", "10.0.0.1:80", 4)])
    assert not view.apply_events([delete("/s/a", 5)])
    assert view.instances() == ("10.0.0.1:80",)
    assert view.apply_events([delete("/s/b", 6)])
    assert view.instances() == ()


def test_compaction_forces_a_read_that_replaces_everything() -> None:
    view = PrefixView()
    view.apply_read([kv("/s/a", "10.0.0.1:80"), kv("/s/b", "10.0.0.2:80")], 4)
    view.compacted(9)
    assert view.needs_read
    assert view.compactions == 1
    with pytest.raises(RuntimeError):
        _ = view.watch_from
    # Events meanwhile are ignored: the read supersedes them.
    assert not view.apply_events([put("/s/c", "10.0.0.3:80", 10)])
    # /s/a vanished while we were not looking; the read is authoritative.
    assert view.apply_read([kv("/s/b", "10.0.0.2:80"), kv("/s/d", "10.0.0.4:80")], 12)
    assert view.instances() == ("10.0.0.2:80", "10.0.0.4:80")
    assert view.watch_from == 13


def test_bad_values_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    view = PrefixView(source="etcd prefix '/s/'")
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.etcd.revision"):
        view.apply_read(
            [kv("/s/utf", b"\xff\xfe:80"), kv("/s/noport", "host"), kv("/s/ok", "10.0.0.1:80")], 3
        )
    assert view.instances() == ("10.0.0.1:80",)
    messages = [record.getMessage() for record in caplog.records]
    assert any("/s/utf" in m and "UTF-8" in m for m in messages)
    assert any("/s/noport" in m and "no port" in m for m in messages)


def test_a_bad_put_replaces_a_good_value_at_that_key(caplog: pytest.LogCaptureFixture) -> None:
    view = PrefixView()
    view.apply_read([kv("/s/a", "10.0.0.1:80")], 2)
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.etcd.revision"):
        assert view.apply_events([put("/s/a", "not an instance", 3)])
    assert view.instances() == ()
    assert view.revision == 3
    assert caplog.records, "the bad value must be logged"
    # And a later good value at the same key brings it back.
    assert view.apply_events([put("/s/a", "10.0.0.5:80", 4)])
    assert view.instances() == ("10.0.0.5:80",)


def test_decode_instance_normalises_and_never_raises() -> None:
    assert decode_instance(b"k", b" LOCALHOST:80 ") == "localhost:80"
    assert decode_instance(b"k", b"[0:0::1]:443") == "[::1]:443"
    assert decode_instance(b"k", b"") is None
    assert decode_instance(b"k", b"\xc3") is None
    assert decode_instance(b"k", b"host:99999") is None


def _random_history(rng: random.Random, length: int) -> list[WatchEvent]:
    """Changes at revisions 2.., sometimes several per revision (transactions)."""
    keys = [f"/s/{index}" for index in range(6)]
    events: list[WatchEvent] = []
    revision = 1
    while len(events) < length:
        revision += 1
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            key = rng.choice(keys)
            if rng.random() < 0.3:
                events.append(delete(key, revision))
            else:
                value = rng.choice(
                    ["10.0.0.1:80", "10.0.0.2:80", "bad", f"10.1.0.{revision % 250}:8"]
                )
                events.append(put(key, value, revision))
    return events


def _truth(events: list[WatchEvent], up_to: int) -> tuple[str, ...]:
    state: dict[bytes, str | None] = {}
    for event in events:
        if event.mod_revision > up_to:
            break
        if event.kind == "delete":
            state.pop(event.key, None)
        else:
            state[event.key] = decode_instance(event.key, event.value)
    return tuple(sorted({value for value in state.values() if value is not None}))


def _batches(events: list[WatchEvent], start: int) -> list[list[WatchEvent]]:
    """What a watch from ``start`` delivers: one response per revision, in order."""
    by_revision: dict[int, list[WatchEvent]] = {}
    for event in events:
        if event.mod_revision >= start:
            by_revision.setdefault(event.mod_revision, []).append(event)
    return [by_revision[revision] for revision in sorted(by_revision)]


@pytest.mark.parametrize("seed", range(25))
def test_broken_and_resumed_watches_lose_and_repeat_nothing(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Model check: watches break at random points and resume from ``watch_from`` --
    sometimes (a buggy or lagging server) from an earlier revision -- and the view
    always equals the true state at its revision."""
    caplog.set_level(logging.ERROR, logger="kitsd.sd.etcd.revision")  # bad values are expected here
    rng = random.Random(seed)
    events = _random_history(rng, 60)
    last = events[-1].mod_revision
    view = PrefixView()
    view.apply_read([], 1)
    while view.revision < last:
        start = view.watch_from
        if rng.random() < 0.3:
            start = max(2, start - rng.randint(1, 5))  # replays some applied revisions
        batches = _batches(events, start)
        for batch in batches[: rng.randint(1, max(1, len(batches)))]:
            view.apply_events(batch)
            assert view.instances() == _truth(events, view.revision)
        if rng.random() < 0.1:
            # The history got compacted past us: a fresh read at some revision.
            view.compacted(view.revision + 1)
            at = rng.randint(view.revision, last)
            latest: dict[bytes, WatchEvent] = {}
            for event in events:
                if event.mod_revision <= at:
                    latest[event.key] = event
            view.apply_read(
                [KeyValue(k, e.value, e.mod_revision) for k, e in latest.items()
                 if e.kind == "put"],
                at,
            )
            assert view.instances() == _truth(events, at)
    assert view.instances() == _truth(events, last)


FORBIDDEN = {"threading", "asyncio", "socket", "time", "subprocess", "selectors", "concurrent"}


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_revision_module_is_pure() -> None:
    """sd/etcd/revision.py and the first-party modules it imports do no I/O, threads or time."""
    todo = [ROOT / "sd" / "etcd" / "revision.py"]
    seen: set[Path] = set()
    problems = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported(path):
            if name.split(".")[0] in FORBIDDEN:
                problems.append(f"{path.relative_to(ROOT)} imports {name}")
            elif name.split(".")[:2] == ["kitsd", "sd"]:
                target = ROOT.joinpath(*name.split(".")).with_suffix(".py")
                if target.is_file():
                    todo.append(target)
    assert len(seen) >= 3, "the scan must reach sd.instance and kitsd.core.errors"
    assert problems == []


def test_incremental_view_matches_a_full_recount_under_random_changes() -> None:
    """The sorted view kept per event equals sorting the whole key map after every batch,
    and ``changed`` is true exactly when the instance set changed."""
    import random

    rng = random.Random(7)
    view = PrefixView()
    view.apply_read([KeyValue(b"k0", b"10.0.0.1:80")], 1)
    model: dict[bytes, str] = {b"k0": "10.0.0.1:80"}
    revision = 1
    for _ in range(400):
        events = []
        for _ in range(rng.randint(1, 4)):
            revision += 1
            key = f"k{rng.randrange(12)}".encode()
            if rng.random() < 0.3:
                events.append(WatchEvent("delete", key, revision))
                model.pop(key, None)
            else:
                value = rng.choice(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "bad"])
                events.append(WatchEvent("put", key, revision, value.encode()))
                if value == "bad":
                    model.pop(key, None)
                else:
                    model[key] = value
        before = view.instances()
        changed = view.apply_events(events)
        expected = tuple(sorted(set(model.values())))
        assert view.instances() == expected
        assert changed == (expected != before)


def test_instances_hands_out_one_tuple_per_state() -> None:
    view = PrefixView()
    view.apply_read([KeyValue(b"a", b"10.0.0.1:80")], 1)
    first = view.instances()
    assert view.instances() is first
    view.apply_events([WatchEvent("put", b"a", 2, b"10.0.0.1:80")])  # same value
    assert view.instances() is first
    view.apply_events([WatchEvent("put", b"b", 3, b"10.0.0.2:80")])
    assert view.instances() == ("10.0.0.1:80", "10.0.0.2:80")


def test_a_huge_bad_value_gives_a_short_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kitsd.sd.etcd.revision")
    assert decode_instance(b"/svc/junk", b"x" * 1_000_000) is None
    assert decode_instance(b"/svc/junk2", b"\xff" * 1_000_000) is None
    assert decode_instance(b"k" * 100_000, b"nohost:99999999" * 10_000) is None
    assert caplog.records
    for record in caplog.records:
        assert len(record.getMessage()) < 600, record.getMessage()[:200]
