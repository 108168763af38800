"""Tokens and when to fetch them, as plain decisions.

Theory of operation.  A token source (an OAuth2 client, a JWT signer that
caches) hands out one token to every caller until shortly before it expires,
and fetches the next one *once*, however many callers arrive at that moment.
:class:`TokenCache` decides, under the driver's lock, what each caller does:

=====================================  =========================================
state                                  the caller ...
=====================================  =========================================
fresh token (before ``refresh_at``)    USEs it
token past ``refresh_at``, still       FETCHes the next one if nobody is
valid                                  fetching (others go on USing the current)
no valid token, nobody fetching        FETCHes it
no valid token, a fetch under way      WAITs for it, then decides again
the fetch it waited for succeeded      USEs the token it brought, even one that
                                       already expired (a lifetime shorter than
                                       the wait: one fetch per wave, not one per
                                       waiter)
the fetch it waited for failed         FAILED: raises that fetch's error
=====================================  =========================================

The caller that FETCHes reports :meth:`TokenCache.fetched` or
:meth:`TokenCache.failed`; either ends the fetch and wakes the waiters.  A failed
fetch is remembered for the waiters of that fetch (they raise its error rather
than each trying again, so an outage costs one request per wave, not one per
caller); a fetch that fails while the current token is still valid leaves that
token in use.  :meth:`TokenCache.invalidate` drops a token a server refused (a
401), only if it is still the cached one, so 200 callers refused at once cause
one fetch.

``refresh_at`` is :func:`refresh_point`: ``leeway`` seconds before expiry, but
never more than a tenth of the token's lifetime (a 2-second token is refreshed
after 1.8 s, not fetched on every call).  No clock here: ``now`` is an argument
(the drivers pass ``time.monotonic()``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["REFRESH_SHARE", "Decision", "Token", "TokenCache", "refresh_point"]

#: At most this share of a token's lifetime is given up by refreshing early.
REFRESH_SHARE = 0.1


@dataclass(frozen=True, slots=True)
class Token:
    """A token and its times on the monotonic clock (``None``: does not expire).
    ``repr()`` never shows the value."""

    value: str = field(repr=False)
    expires_at: float | None = None
    refresh_at: float | None = None

    def valid(self, now: float) -> bool:
        """Whether it has not expired at ``now``."""
        return self.expires_at is None or now < self.expires_at


def refresh_point(now: float, lifetime: float | None, leeway: float) -> tuple[float | None,
                                                                             float | None]:
    """``(expires_at, refresh_at)`` of a token received at ``now`` that lives
    ``lifetime`` seconds (``None``: for ever)."""
    if lifetime is None:
        return None, None
    lifetime = max(0.0, lifetime)
    return now + lifetime, now + lifetime - min(leeway, lifetime * REFRESH_SHARE)


class Decision(enum.Enum):
    """What a caller does next (see the module docstring)."""

    USE = "use"
    FETCH = "fetch"
    WAIT = "wait"
    FAILED = "failed"  # the fetch this caller waited for failed: raise its error


class TokenCache:
    """The state of one token source (see the module docstring).  Not thread-safe by
    itself: the drivers call it under their lock."""

    __slots__ = ("_error", "_fetching", "_generation", "_token", "_token_generation")

    def __init__(self) -> None:
        self._token: Token | None = None
        self._token_generation = 0  # the generation whose fetch brought _token
        self._fetching = False
        self._generation = 0
        self._error: BaseException | None = None

    @property
    def generation(self) -> int:
        """Counts finished fetches; a waiter compares it to know its fetch ended."""
        return self._generation

    def decide(self, now: float, waited_for: int | None = None) -> tuple[Decision, Token | None]:
        """What the caller does; with USE (and a refreshing FETCH) the token to use.

        ``waited_for``: the generation a waiting caller saw before it waited; when
        that fetch failed (and no valid token is left), FAILED: the caller raises
        :attr:`error`; when a fetch since brought a token, USE it."""
        token = self._token
        if waited_for is not None and waited_for != self._generation:
            if self._error is not None and not self._valid(now):
                return Decision.FAILED, None
            if token is not None and self._token_generation > waited_for:
                return Decision.USE, token
        if token is not None and token.valid(now):
            if (token.refresh_at is not None and now >= token.refresh_at
                    and not self._fetching):
                self._fetching = True
                return Decision.FETCH, token
            return Decision.USE, token
        if self._fetching:
            return Decision.WAIT, None
        self._fetching = True
        return Decision.FETCH, None

    @property
    def error(self) -> BaseException | None:
        """The error of the last fetch, if it failed."""
        return self._error

    def _valid(self, now: float) -> bool:
        return self._token is not None and self._token.valid(now)

    def fetched(self, token: Token) -> None:
        """The fetch succeeded: ``token`` is the one to hand out."""
        self._token = token
        self._fetching = False
        self._error = None
        self._generation += 1
        self._token_generation = self._generation

    def failed(self, error: BaseException) -> None:
        """The fetch failed with ``error`` (kept for its waiters)."""
        self._fetching = False
        self._error = error
        self._generation += 1

    def abandoned(self) -> None:
        """The fetch ended without a result (its caller was cancelled): the waiters
        decide again, and one of them fetches."""
        self._fetching = False
        self._generation += 1

    def invalidate(self, value: str) -> bool:
        """Drop the cached token if its value is ``value`` (a server refused it);
        whether it was dropped."""
        if self._token is not None and self._token.value == value:
            self._token = None
            return True
        return False
