"""Tests for sd.event: the frozen Event snapshot and Event.same_state."""

from __future__ import annotations

import dataclasses
import random

import pytest

from kitsd.sd.event import Delta, Event, diff, splice


class OtherError(Exception):
    pass


def test_defaults_are_empty_and_without_error() -> None:
    event = Event()
    assert event.instances == ()
    assert event.error is None


def test_event_is_frozen() -> None:
    event = Event(("a:1",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.instances = ("b:2",)  # type: ignore[misc]


def test_same_instances_without_error_are_the_same_state() -> None:
    assert Event(("a:1", "b:2")).same_state(Event(("a:1", "b:2")))


def test_different_instances_are_not_the_same_state() -> None:
    assert not Event(("a:1",)).same_state(Event(("a:1", "b:2")))
    assert not Event(("a:1",)).same_state(Event())


def test_error_against_no_error_is_not_the_same_state() -> None:
    failing = Event(("a:1",), RuntimeError("down"))
    healthy = Event(("a:1",))
    assert not failing.same_state(healthy)
    assert not healthy.same_state(failing)


def test_errors_of_same_type_and_args_are_the_same_state() -> None:
    first = Event(("a:1",), RuntimeError("down", 7))
    second = Event(("a:1",), RuntimeError("down", 7))
    assert first.error is not second.error
    assert first.same_state(second)


def test_the_same_error_object_is_the_same_state() -> None:
    error = RuntimeError("down")
    assert Event((), error).same_state(Event((), error))


def test_errors_with_different_args_are_not_the_same_state() -> None:
    assert not Event((), RuntimeError("down")).same_state(Event((), RuntimeError("gone")))


def test_errors_of_different_types_are_not_the_same_state() -> None:
    assert not Event((), RuntimeError("down")).same_state(Event((), OtherError("down")))


def test_a_subclass_error_is_not_the_same_state() -> None:
    class Narrower(RuntimeError):
        pass

    assert not Event((), RuntimeError("down")).same_state(Event((), Narrower("down")))


def test_same_errors_with_different_instances_are_not_the_same_state() -> None:
    assert not Event(("a:1",), RuntimeError("down")).same_state(
        Event(("b:1",), RuntimeError("down"))
    )


def test_same_state_is_symmetric() -> None:
    events = [
        Event(),
        Event(("a:1",)),
        Event(("a:1",), RuntimeError("x")),
        Event(("a:1",), RuntimeError("y")),
        Event(("a:1",), OtherError("x")),
    ]
    for left in events:
        for right in events:
            assert left.same_state(right) == right.same_state(left)


def test_the_delta_is_a_hint_outside_equality_repr_and_hash() -> None:
    base = ("a:1",)
    with_delta = Event(("a:1", "b:1"), delta=Delta(base, ("b:1",)))
    without = Event(("a:1", "b:1"))
    assert with_delta == without
    assert hash(with_delta) == hash(without)
    assert repr(with_delta) == repr(without)
    assert with_delta.same_state(without)
    with pytest.raises(TypeError):
        Event(("a:1",), None, Delta(base))  # type: ignore[call-arg, arg-type]  # keyword-only


def test_a_delta_repr_does_not_print_its_base() -> None:
    base = tuple(f"h{n}:1" for n in range(1000))
    assert "h999:1" not in repr(Delta(base, ("x:1",)))


@pytest.mark.parametrize("seed", range(20))
def test_diff_and_splice_agree_with_sorting_the_set(seed: int) -> None:
    rng = random.Random(seed)
    pool = [f"10.0.{n // 256}.{n % 256}:80" for n in range(300)]
    members: set[str] = set()
    current: tuple[str, ...] = ()
    for _ in range(30):
        size = rng.choice([0, 1, 5, 50, 250])
        snapshot = [rng.choice(pool) for _ in range(size)]  # unsorted, with duplicates
        new_members, added, removed = diff(members, snapshot)
        assert new_members == set(snapshot)
        assert added == sorted(set(snapshot) - members)
        assert removed == sorted(members - set(snapshot))
        spliced = splice(current, added, removed)
        assert spliced == tuple(sorted(set(snapshot)))
        if not added and not removed:
            assert spliced is current  # unchanged: the same tuple, no copy
        members, current = new_members, spliced
