"""The pool's decisions (sd/thrift/_pool.py): LIFO reuse, max_idle, idle expiry, close."""

from __future__ import annotations

import pytest

from kitsd.sd.thrift._pool import Pool, PoolClosed


def test_empty_pool_says_open_one() -> None:
    assert Pool[str](4, None).take(0.0) == (None, [])


def test_most_recently_returned_first() -> None:
    pool = Pool[str](4, None)
    assert pool.give("a", 1.0) is None
    assert pool.give("b", 2.0) is None
    assert pool.take(3.0) == ("b", [])
    assert pool.take(3.0) == ("a", [])
    assert len(pool) == 0


def test_full_pool_hands_the_extra_back() -> None:
    pool = Pool[str](1, None)
    assert pool.give("a", 0.0) is None
    assert pool.give("b", 0.0) == "b"
    assert Pool[str](0, None).give("c", 0.0) == "c"


def test_idle_timeout_expires_oldest_first() -> None:
    pool = Pool[str](4, 10.0)
    pool.give("old", 0.0)
    pool.give("older-ish", 5.0)
    pool.give("new", 12.0)
    connection, expired = pool.take(15.0)
    assert (connection, expired) == ("new", ["old", "older-ish"])
    assert len(pool) == 0


def test_close_returns_idle_and_refuses_afterwards() -> None:
    pool = Pool[str](4, None)
    pool.give("a", 0.0)
    pool.give("b", 0.0)
    assert pool.close() == ["a", "b"]
    assert pool.close() == []
    with pytest.raises(PoolClosed):
        pool.take(0.0)
    assert pool.give("late", 1.0) == "late"  # a connection a call opened meanwhile
