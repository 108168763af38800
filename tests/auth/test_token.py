"""The pure refresh rules and single-flight decisions (kitsd/auth/_token.py)."""

from __future__ import annotations

import pytest

from kitsd.auth._token import Decision, Token, TokenCache, refresh_point


def test_refresh_point() -> None:
    assert refresh_point(100.0, None, 60.0) == (None, None)
    assert refresh_point(100.0, 3600.0, 60.0) == (3700.0, 3640.0)  # leeway before expiry
    expires_at, refresh_at = refresh_point(100.0, 2.0, 60.0)
    assert expires_at == 102.0
    assert refresh_at == pytest.approx(101.8)  # a tenth of the lifetime at most
    assert refresh_point(100.0, -5.0, 60.0) == (100.0, 100.0)


def test_token_repr_hides_the_value() -> None:
    assert "s3cret" not in repr(Token("s3cret", 1.0, 0.5))


def test_first_caller_fetches_the_rest_wait() -> None:
    cache = TokenCache()
    assert cache.decide(0.0) == (Decision.FETCH, None)
    for _ in range(200):
        assert cache.decide(0.0) == (Decision.WAIT, None)
    token = Token("a", 10.0, 9.0)
    cache.fetched(token)
    assert cache.decide(1.0) == (Decision.USE, token)


def test_refresh_ahead_one_fetches_others_use_the_current_token() -> None:
    cache = TokenCache()
    cache.decide(0.0)
    current = Token("a", 10.0, 9.0)
    cache.fetched(current)
    assert cache.decide(9.5) == (Decision.FETCH, current)  # the refresher may fall back on it
    for _ in range(200):
        assert cache.decide(9.5) == (Decision.USE, current)
    cache.fetched(Token("b", 20.0, 19.0))
    assert cache.decide(9.6)[1] == Token("b", 20.0, 19.0)


def test_expired_token_is_not_used() -> None:
    cache = TokenCache()
    cache.decide(0.0)
    cache.fetched(Token("a", 10.0, 9.0))
    assert cache.decide(10.0) == (Decision.FETCH, None)


def test_waiters_of_a_failed_fetch_fail_with_it() -> None:
    cache = TokenCache()
    cache.decide(0.0)
    assert cache.decide(0.0)[0] is Decision.WAIT
    seen = cache.generation
    error = RuntimeError("endpoint down")
    cache.failed(error)
    assert cache.decide(0.1, waited_for=seen) == (Decision.FAILED, None)
    assert cache.error is error
    assert cache.decide(0.2) == (Decision.FETCH, None)  # a new caller tries again


def test_abandoned_fetch_lets_a_waiter_fetch() -> None:
    cache = TokenCache()
    cache.decide(0.0)
    seen = cache.generation
    cache.abandoned()
    assert cache.decide(0.1, waited_for=seen) == (Decision.FETCH, None)


def test_invalidate_only_the_refused_token() -> None:
    cache = TokenCache()
    cache.decide(0.0)
    cache.fetched(Token("b", 10.0, 9.0))
    assert not cache.invalidate("a")  # an older token: someone refreshed already
    assert cache.decide(1.0)[0] is Decision.USE
    assert cache.invalidate("b")
    assert cache.decide(1.0) == (Decision.FETCH, None)
    assert cache.decide(1.0) == (Decision.WAIT, None)  # 200 refusals, one fetch
