# Generated from breaker/_async/endpoint.py by .ci/unasync.py: do not edit.
# Edit the source and run `python .ci/unasync.py`; `python .ci/unasync.py --check`
# fails on a hand edit.
"""The asyncio breaker-guarded endpoint, :class:`SyncBreakerEndpoint` (its sync twin,
``breaker/_sync/endpoint.py``, is generated from this file by ``.ci/unasync.py``)."""

from __future__ import annotations

from kitsd.breaker.endpoint import Guarded, Req, Resp, settle_error

__all__ = ["SyncBreakerEndpoint"]


class SyncBreakerEndpoint(Guarded[Req, Resp]):
    """An async endpoint guarded by a circuit breaker; see :class:`BreakerEndpoint`.

    The driver's lock is taken only briefly, never across a call of the endpoint.
    """

    __slots__ = ()

    def __call__(self, request: Req) -> Resp:
        """Call the wrapped endpoint through the breaker."""
        cb, driver, endpoint = self._breaker, self._driver, self.__wrapped__
        ticket = driver.admit(cb, endpoint, request)
        try:
            result: Resp = endpoint(request)
        except BaseException as exc:
            error = settle_error(driver, cb, ticket, exc)
            if error is exc:
                raise
            raise error from exc
        driver.succeed(cb, ticket)
        return result
