"""lb.pool_policy.Ejections: the pure passive-ejection state, driven with explicit ``now``."""

from __future__ import annotations

import ast
import inspect

import pytest

from kitsd import lb
from kitsd.lb import OutlierDetection
from kitsd.lb.pool_policy import Ejections

REFUSED = ConnectionRefusedError("refused")


def table(**settings: float) -> Ejections:
    return Ejections(OutlierDetection(**settings))  # type: ignore[arg-type]


def test_imports_nothing_that_blocks_or_reads_a_clock() -> None:
    tree = ast.parse(inspect.getsource(lb.pool_policy))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint({"threading", "asyncio", "socket", "time", "random"}), imported


def test_durations_double_up_to_maximum() -> None:
    ejections = table(base_ejection_time=1.0, max_ejection_time=10.0)
    durations = [ejections.failed("e", REFUSED, now=10.0 * t, pool=10) for t in range(6)]
    assert durations == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_huge_ejection_counts_stay_at_maximum() -> None:
    ejections = table(base_ejection_time=0.5, max_ejection_time=60.0)
    for t in range(2000):  # 2.0 ** 2000 would overflow a float
        duration = ejections.failed("e", REFUSED, now=60.0 * t, pool=10)
    assert duration == 60.0


def test_only_counted_errors_eject() -> None:
    ejections = table()
    assert ejections.failed("e", ValueError("bad request"), now=0.0, pool=10) is None
    assert ejections.failed("e", TimeoutError("slow"), now=0.0, pool=10) is None
    assert not ejections  # not even a record
    assert ejections.failed("e", ConnectionResetError(), now=0.0, pool=10) == 1.0


def test_is_ejected_until_the_duration_has_passed() -> None:
    ejections = table(base_ejection_time=2.0, max_ejection_time=8.0)
    assert not ejections.is_ejected("e", 10.0)
    ejections.failed("e", REFUSED, now=10.0, pool=10)
    assert ejections.is_ejected("e", 10.0)
    assert ejections.is_ejected("e", 11.999)
    assert not ejections.is_ejected("e", 12.0)
    assert not ejections.is_ejected("other", 10.0)


def test_a_failure_while_ejected_does_not_extend_it() -> None:
    ejections = table(base_ejection_time=1.0, max_ejection_time=30.0)
    assert ejections.failed("e", REFUSED, now=0.0, pool=10) == 1.0
    # attempts that started before the ejection fail later: no second ejection
    assert ejections.failed("e", REFUSED, now=0.5, pool=10) is None
    assert ejections.failed("e", REFUSED, now=1.0, pool=10) == 2.0


def test_consecutive_failures_threshold() -> None:
    ejections = table(consecutive_failures=3)
    assert ejections.failed("e", REFUSED, now=0.0, pool=10) is None
    assert ejections.failed("e", REFUSED, now=0.1, pool=10) is None
    assert not ejections.is_ejected("e", 0.2)
    assert ejections.failed("e", REFUSED, now=0.2, pool=10) == 1.0
    assert ejections.is_ejected("e", 0.3)
    # the run starts again after an ejection
    assert ejections.failed("e", REFUSED, now=1.5, pool=10) is None


def test_success_forgets_the_instance() -> None:
    ejections = table(base_ejection_time=1.0, max_ejection_time=30.0, consecutive_failures=2)
    ejections.failed("e", REFUSED, now=0.0, pool=10)
    ejections.succeeded("e")
    assert ejections.failed("e", REFUSED, now=0.1, pool=10) is None  # the run restarted
    assert ejections.failed("e", REFUSED, now=0.2, pool=10) == 1.0
    assert ejections.failed("e", REFUSED, now=5.0, pool=10) is None
    assert ejections.failed("e", REFUSED, now=5.1, pool=10) == 2.0
    ejections.succeeded("e")
    assert not ejections
    assert not ejections.is_ejected("e", 5.2)  # a success ends an ejection too
    assert ejections.ejected(5.2) == 0
    ejections.succeeded("never failed")  # harmless


def test_history_is_forgotten_after_the_maximum() -> None:
    ejections = table(base_ejection_time=1.0, max_ejection_time=4.0)
    assert ejections.failed("e", REFUSED, now=0.0, pool=10) == 1.0  # out until 1
    assert ejections.failed("e", REFUSED, now=3.0, pool=10) == 2.0  # soon again: until 5
    # forgotten max_ejection_time after the ejection ended (5 + 4 = 9): back to base
    assert ejections.failed("e", REFUSED, now=9.0, pool=10) == 1.0


def test_pruning_drops_old_records_of_other_instances() -> None:
    ejections = table(base_ejection_time=1.0, max_ejection_time=2.0)
    ejections.failed("old", REFUSED, now=0.0, pool=10)  # ends at 1, forgotten from 3
    ejections.failed("fresh", REFUSED, now=2.5, pool=10)
    assert len(ejections) == 2
    # pruning runs at most once per max_ejection_time (last at 2.5): by 4.5 "old" is gone
    ejections.failed("fresh", REFUSED, now=4.5, pool=10)
    assert len(ejections) == 1


@pytest.mark.parametrize(
    ("pool", "percent", "failing", "ejected"),
    [
        (10, 50, 7, 5),  # at most half the pool
        (10, 50, 3, 3),  # under the cap: every ejection honoured
        (10, 30, 10, 3),
        (100, 29, 100, 29),  # no float rounding down to 28
        (3, 50, 3, 1),  # int(1.5) == 1
        (3, 99, 3, 2),  # int(2.97) == 2, and one is always left
        (2, 90, 2, 1),  # never everyone
        (2, 100, 2, 1),
        (1, 90, 1, 0),  # a pool of one is never emptied
        (4, 0, 4, 0),  # 0 % turns ejection off
    ],
)
def test_cap_is_a_share_of_the_pool_never_everyone(
    pool: int, percent: float, failing: int, ejected: int
) -> None:
    ejections = table(max_ejected_percent=percent, max_ejection_time=100.0)
    keys = [f"e{i}" for i in range(pool)]
    durations = [ejections.failed(key, REFUSED, now=0.0, pool=pool) for key in keys[:failing]]
    assert sum(d is not None for d in durations) == ejected
    assert ejections.ejected(0.5) == ejected
    assert sum(ejections.is_ejected(key, 0.5) for key in keys) == ejected


def test_cap_frees_up_as_ejections_end() -> None:
    ejections = table(base_ejection_time=1.0, max_ejection_time=100.0)
    assert ejections.failed("a", REFUSED, now=0.0, pool=2) == 1.0
    assert ejections.failed("b", REFUSED, now=0.5, pool=2) is None  # capped: 1 of 2
    assert ejections.failed("b", REFUSED, now=1.0, pool=2) == 1.0  # a is back: b may go
    assert ejections.ejected(1.5) == 1


def test_retain_forgets_instances_that_left() -> None:
    ejections = table(max_ejection_time=100.0)
    for key in ("a", "b", "c"):
        ejections.failed(key, REFUSED, now=0.0, pool=10)
    assert ejections.ejected(0.5) == 3
    assert ejections.retain(lambda key, tag: key in {"a", "c"}) == 1
    assert ejections.ejected(0.5) == 2
    assert not ejections.is_ejected("b", 0.5)
    # b comes back and starts clean: base time again
    assert ejections.failed("b", REFUSED, now=0.6, pool=10) == 1.0


def test_retain_sees_the_tag_of_the_failed_endpoint() -> None:
    ejections = table(max_ejection_time=100.0)
    ejections.failed("a", REFUSED, now=0.0, pool=10, tag=17)
    ejections.failed("b", REFUSED, now=0.0, pool=10, tag=18)
    # a came back with another endpoint: forgotten; b is the same one: kept
    assert ejections.retain(lambda key, tag: tag == 18) == 1
    assert ejections.out(0.5) == {"b": 1.0}


def test_records_hold_no_endpoint() -> None:
    # Keys are instance strings; a record is numbers only (issue 7.4: records
    # that held endpoints kept closed endpoints and their buffers alive).
    ejections = table()
    ejections.failed("10.0.0.1:80", REFUSED, now=0.0, pool=10)
    record = ejections.records["10.0.0.1:80"]
    values = [getattr(record, name) for name in record.__slots__]
    assert all(isinstance(value, int | float | None) for value in values), values


def test_same_time_re_ejection_is_counted_once() -> None:
    # A success and a new ejection at the same `now`: the heap must not count it twice.
    ejections = table(base_ejection_time=1.0, max_ejection_time=1.0)
    ejections.failed("e", REFUSED, now=0.0, pool=10)
    ejections.succeeded("e")
    ejections.failed("e", REFUSED, now=0.0, pool=10)
    assert ejections.ejected(0.5) == 1
    assert ejections.ejected(1.0) == 0
