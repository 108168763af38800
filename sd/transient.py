"""Riding out a registry's transient unavailability (a leader election, a restart).

Registrars call the registry on ``register()`` and ``deregister()``; a cluster
that is electing a leader answers "unavailable" for a second or two.  Rather
than fail a service's start-up for that, the call is retried by tenacity on the
:data:`sd.backoff.REGISTRY_TRANSIENT` curve for a bounded time, and only then
raised.  Under :func:`sd.backoff.set_testing` the waits are zero and the
attempts capped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import tenacity

from kitsd.core.errors import RegistryUnavailableError
from kitsd.sd.backoff import REGISTRY_TRANSIENT, CurveWait, testing_attempts

__all__ = ["retry_transient"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def retry_transient(operation: Callable[[], T], *, within: float, what: str) -> T:
    """Run ``operation``; while it raises :class:`RegistryUnavailableError`, try again
    on the :data:`~sd.backoff.REGISTRY_TRANSIENT` curve for up to ``within`` seconds,
    then raise the last error.  Other errors (permission denied, misuse) raise at
    once.  ``within <= 0`` means a single try."""
    if within <= 0:
        return operation()

    def log_retry(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.warning("%s: %s; trying again (attempt %d)", what, error, state.attempt_number)

    stop: tenacity.stop.stop_base = tenacity.stop_after_delay(within)
    attempts = testing_attempts()
    if attempts is not None:
        stop = stop | tenacity.stop_after_attempt(attempts)
    retrying = tenacity.Retrying(
        stop=stop,
        wait=CurveWait(REGISTRY_TRANSIENT),
        retry=tenacity.retry_if_exception_type(RegistryUnavailableError),
        before_sleep=log_retry,
        reraise=True,
    )
    return retrying(operation)
