"""lb.EjectionTable: the pure passive-ejection bookkeeping, driven with explicit ``now``."""

from __future__ import annotations

import ast
import gc
import inspect
import weakref

import pytest

import lb.ejection
from lb import EjectionTable


class Endpoint:
    """A stand-in endpoint; the table only cares about identity."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def pool(n: int) -> list[Endpoint]:
    return [Endpoint(f"e{i}") for i in range(n)]


def test_imports_nothing_that_blocks_or_reads_a_clock() -> None:
    tree = ast.parse(inspect.getsource(lb.ejection))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint({"threading", "asyncio", "socket", "time", "random"}), imported


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0.0},
        {"base": -1.0},
        {"base": 2.0, "maximum": 1.0},
        {"max_fraction": 1.0},
        {"max_fraction": -0.1},
    ],
)
def test_rejects_unusable_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EjectionTable(**kwargs)


def test_durations_double_up_to_maximum() -> None:
    table = EjectionTable(base=1.0, maximum=10.0)
    e = Endpoint("e")
    durations = [table.eject(e, now=float(t)) for t in range(6)]
    assert durations == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_huge_strike_counts_stay_at_maximum() -> None:
    table = EjectionTable(base=0.5, maximum=60.0)
    e = Endpoint("e")
    for _ in range(2000):  # 2.0 ** 2000 would overflow a float
        duration = table.eject(e, now=0.0)
    assert duration == 60.0


def test_is_ejected_until_the_duration_has_passed() -> None:
    table = EjectionTable(base=2.0, maximum=8.0)
    e, other = Endpoint("e"), Endpoint("other")
    assert not table.is_ejected(e, 10.0)
    table.eject(e, now=10.0)
    assert table.is_ejected(e, 10.0)
    assert table.is_ejected(e, 11.999)
    assert not table.is_ejected(e, 12.0)
    assert not table.is_ejected(other, 10.0)


def test_strikes_persist_past_the_ejection_until_forgotten() -> None:
    table = EjectionTable(base=1.0, maximum=4.0)
    e = Endpoint("e")
    assert table.eject(e, now=0.0) == 1.0  # ejected until 1
    assert table.eject(e, now=3.0) == 2.0  # failed again soon after: doubled, until 5
    # Forgotten `maximum` seconds after the ejection ends (5 + 4 = 9): back to base.
    assert table.eject(e, now=9.0) == 1.0


def test_success_clears_strikes() -> None:
    table = EjectionTable(base=1.0, maximum=30.0)
    e = Endpoint("e")
    table.eject(e, now=0.0)
    table.eject(e, now=1.0)
    table.succeeded(e)
    assert not table
    assert not table.is_ejected(e, 1.5)
    assert table.eject(e, now=2.0) == 1.0
    table.succeeded(Endpoint("never ejected"))  # harmless
    assert len(table) == 1


def test_pruning_forgets_old_records_of_other_endpoints() -> None:
    table = EjectionTable(base=1.0, maximum=2.0)
    old, fresh = Endpoint("old"), Endpoint("fresh")
    table.eject(old, now=0.0)  # ends at 1, forgotten from 1 + 2 = 3
    assert len(table) == 1
    table.eject(fresh, now=2.999)
    assert len(table) == 2
    table.eject(fresh, now=3.0)
    assert len(table) == 1
    assert bool(table)


def test_records_keep_their_endpoint_alive_so_ids_stay_unique() -> None:
    table = EjectionTable()
    e = Endpoint("e")
    ref = weakref.ref(e)
    table.eject(e, now=0.0)
    del e
    gc.collect()
    kept = ref()
    assert kept is not None
    table.succeeded(kept)
    del kept
    gc.collect()
    assert ref() is None


def test_usable_returns_the_same_list_when_nothing_is_dropped() -> None:
    table = EjectionTable()
    endpoints = pool(3)
    assert table.usable(endpoints, now=0.0) is endpoints
    table.eject(Endpoint("elsewhere"), now=0.0)
    assert table.usable(endpoints, now=0.0) is endpoints
    table.eject(endpoints[0], now=0.0)
    assert table.usable(endpoints, now=5.0) is endpoints  # its ejection is over


def test_usable_drops_an_ejected_endpoint() -> None:
    table = EjectionTable(base=1.0)
    a, b, c = endpoints = pool(3)
    table.eject(b, now=0.0)
    assert list(table.usable(endpoints, now=0.5)) == [a, c]
    assert list(table.usable(endpoints, now=1.0)) == [a, b, c]


@pytest.mark.parametrize(
    ("size", "fraction", "ejected", "skipped"),
    [
        (10, 0.5, 7, 5),  # at most half the pool
        (10, 0.5, 3, 3),  # under the cap: every ejection honoured
        (10, 0.3, 10, 3),
        (3, 0.5, 3, 1),  # int(1.5) == 1
        (3, 0.99, 3, 2),  # int(2.97) == 2, and one is always left
        (2, 0.9, 2, 1),  # never all candidates
        (1, 0.9, 1, 0),  # a pool of one is never emptied
        (4, 0.0, 4, 0),  # max_fraction 0 turns skipping off
    ],
)
def test_cap_is_a_fraction_of_the_pool_never_everyone(
    size: int, fraction: float, ejected: int, skipped: int
) -> None:
    table = EjectionTable(base=1.0, maximum=100.0, max_fraction=fraction)
    endpoints = pool(size)
    for endpoint in endpoints[:ejected]:
        table.eject(endpoint, now=0.0)
    usable = table.usable(endpoints, now=0.5)
    assert len(usable) == size - skipped
    assert len(usable) >= 1
    assert set(endpoints[ejected:]) <= set(usable)  # healthy ones are never skipped


def test_cap_honours_the_ejections_with_longest_to_run() -> None:
    table = EjectionTable(base=1.0, maximum=100.0, max_fraction=0.5)
    endpoints = pool(4)
    e0, e1, e2, e3 = endpoints
    table.eject(e0, now=0.0)  # until 1
    table.eject(e1, now=0.0)
    table.eject(e1, now=0.0)
    table.eject(e1, now=0.0)  # until 4
    table.eject(e2, now=0.0)
    table.eject(e2, now=0.0)  # until 2
    table.eject(e3, now=0.0)
    table.eject(e3, now=0.0)
    table.eject(e3, now=0.0)
    table.eject(e3, now=0.0)  # until 8
    # Only two of four may be skipped: the two with longest to run (e3, e1).
    assert list(table.usable(endpoints, now=0.5)) == [e0, e2]
    # Once e0's ejection is over it no longer competes for the cap.
    assert list(table.usable(endpoints, now=1.5)) == [e0, e2]
    assert list(table.usable(endpoints, now=4.5)) == [e0, e1, e2]


def test_exclude_drops_endpoints_that_failed_in_this_call() -> None:
    table = EjectionTable()
    a, b, c = endpoints = pool(3)
    assert list(table.usable(endpoints, now=0.0, exclude={id(b)})) == [a, c]
    assert list(table.usable(endpoints, now=0.0, exclude={id(a), id(c)})) == [b]
    # Excluding everyone would leave nothing: all are candidates again.
    assert list(table.usable(endpoints, now=0.0, exclude={id(a), id(b), id(c)})) == [a, b, c]
    # Unknown ids are ignored.
    assert list(table.usable(endpoints, now=0.0, exclude={id(object())})) == [a, b, c]


def test_exclude_and_ejection_together_keep_one_candidate() -> None:
    table = EjectionTable(base=1.0, max_fraction=0.75)
    a, b, c, d = endpoints = pool(4)
    table.eject(c, now=0.0)
    table.eject(d, now=0.0)
    # a and b failed in this call; c and d are ejected. The cap (3 of 4) would allow
    # skipping both, but that would leave no candidate: one of them stays.
    usable = table.usable(endpoints, now=0.5, exclude={id(a), id(b)})
    assert len(usable) == 1
    assert usable[0] in (c, d)
    # With one call-failure only, both ejections are honoured.
    assert list(table.usable(endpoints, now=0.5, exclude={id(a)})) == [b]
