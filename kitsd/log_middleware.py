"""One structured log line per retried call (go-kit's logging middleware, over
:mod:`kitsd.core.observe`).

::

    import kitsd.log_middleware
    from kitsd.core import observe
    observe.add_observer(kitsd.log_middleware.CallLogger(level=logging.DEBUG))

Every call made by an ``lb.retry``/``lb.retry_async`` stack then logs one line
through stdlib ``logging`` with these ``extra`` fields (for JSON formatters):
``kitsd_service``, ``kitsd_instance`` (the last instance tried), ``kitsd_outcome``,
``kitsd_attempts``, ``kitsd_duration`` (seconds) and, on failure,
``kitsd_error_type`` (the class name of the error the call gave up on).  It is
an observer rather than a wrapper around each endpoint because the retry alone
knows which instance answered and how many attempts it took.

What is never logged: requests, responses, headers, bodies, tokens, and the
error's message (an HTTP error's text can hold a URL with credentials in its
query); only the error's class name.
"""

from __future__ import annotations

import logging

from kitsd.core import validate
from kitsd.core.observe import SUCCESS, CallFinished, Observation

__all__ = ["CallLogger"]

_default_logger = logging.getLogger(__name__)


class CallLogger:
    """Logs each :class:`kitsd.core.observe.CallFinished` to ``logger`` (default
    ``kitsd.log_middleware``): at ``level`` for successes and at
    ``failure_level`` for any other outcome.  Thread-safe (stdlib logging is)."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        level: int = logging.INFO,
        failure_level: int = logging.WARNING,
    ) -> None:
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(f"logger must be a logging.Logger, got {logger!r}")
        validate.integer("level", level)
        validate.integer("failure_level", failure_level)
        self.logger = logger or _default_logger
        self.level = level
        self.failure_level = failure_level

    def __call__(self, observation: Observation) -> None:
        """Log a finished call; ignore every other observation."""
        if not isinstance(observation, CallFinished):
            return
        level = self.level if observation.outcome == SUCCESS else self.failure_level
        if not self.logger.isEnabledFor(level):
            return
        error = observation.error
        final = getattr(error, "final", error)  # a RetryError: the error it gave up on
        error_type = "" if final is None else type(final).__name__
        self.logger.log(
            level,
            "call %s %s after %d attempt(s) in %.1f ms (instance %s)%s",
            observation.service, observation.outcome, observation.attempts,
            observation.duration * 1000, observation.instance or "-",
            f": {error_type}" if error_type else "",
            extra={
                "kitsd_service": observation.service,
                "kitsd_instance": observation.instance,
                "kitsd_outcome": observation.outcome,
                "kitsd_attempts": observation.attempts,
                "kitsd_duration": observation.duration,
                "kitsd_error_type": error_type,
            },
        )
