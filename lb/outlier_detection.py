"""The passive-ejection policy: :class:`OutlierDetection`, and what it counts.

A plain, frozen settings object; the state it drives lives in :mod:`lb.pool_policy`,
owned by the balancer it is given to.

Two kinds of failure count (Envoy's ``consecutive_gateway_failure`` and
``consecutive_5xx``, in spirit):

* connection-level failures (:class:`sd.ConnectionFailure`): the instance is not
  there; ``consecutive_failures`` of them in a row eject it (default: one);
* *counted errors* (:func:`is_counted_error`): the instance answered, badly — an
  HTTP status >= 500 (any error with an int ``status_code`` >= 500, such as
  ``sd.http.StatusError``), a ``TimeoutError`` of one attempt, or any error
  registered with the :class:`CountedError` marker (gRPC ``UNAVAILABLE`` and the
  like: ``CountedError.register(MyUnavailable)``).  ``consecutive_errors`` of
  them in a row (connection failures included) eject it; ``None`` (the default)
  leaves them uncounted.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass, field

from kitsd.core import validate
from kitsd.core.errors import ConnectionFailure, MisuseError

__all__ = ["CountedError", "OutlierDetection", "is_counted_error"]


class CountedError(ABC):  # noqa: B024 - a marker: registration is its whole interface
    """Marker for errors that count towards ``consecutive_errors`` ejection
    (``CountedError.register(SomeUnavailableError)``), as :class:`sd.ConnectionFailure`
    marks connection failures."""


def is_counted_error(error: BaseException) -> bool:
    """Whether ``error`` says the instance answered badly: a status >= 500
    (``status_code`` attribute), a timeout of the attempt, a :class:`CountedError`,
    or a connection failure."""
    if isinstance(error, ConnectionFailure | CountedError):
        return True
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool) and status >= 500:
        return True
    # lb.RetryTimeout is a whole call's timeout, not an attempt's: it never reaches here
    return isinstance(error, TimeoutError)


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """When a balancer takes an instance out of rotation, and for how long.

    * ``consecutive_failures`` counted failures in a row eject an instance (default
      1: at once).  Counted today: connection-level failures
      (:class:`sd.ConnectionFailure`); other errors neither count nor reset the count.
    * The first ejection lasts ``base_ejection_time`` seconds; each further ejection
      of the same instance doubles it, up to ``max_ejection_time``.  A success
      forgets the instance's history; so does its leaving the endpoint set.
    * ``consecutive_errors`` (``None``: off) counted errors in a row eject too; what
      counts is ``errors(error) -> bool``, by default :func:`is_counted_error`
      (5xx statuses, attempt timeouts, :class:`CountedError`, connection failures).
      Errors that are not counted neither count nor reset a run; a success resets it.
    * At most ``max_ejected_percent`` of the instances (rounded down) are out at
      once, and never all of them: ejection is advice, not a verdict.
    * Panic mode (Envoy's ``healthy_panic_threshold``): when fewer than
      ``panic_threshold`` percent of the instances are in rotation, picks ignore
      ejection altogether and spread over every instance (``0`` disables it).

    Give it to a balancer (``lb.RoundRobin(endpointer, outlier_detection=...)``);
    ``outlier_detection=None`` disables ejection.  Raises :class:`TypeError` or
    :class:`sd.MisuseError` (a ``ValueError``) naming a bad setting.
    """

    consecutive_failures: int = 1
    base_ejection_time: float = 1.0
    max_ejection_time: float = 30.0
    max_ejected_percent: float = 50.0
    consecutive_errors: int | None = None
    panic_threshold: float = 50.0
    errors: Callable[[BaseException], bool] = field(default=is_counted_error, repr=False)

    def __post_init__(self) -> None:
        validate.integer("consecutive_failures", self.consecutive_failures, minimum=1)
        validate.optional_integer("consecutive_errors", self.consecutive_errors, minimum=1)
        if not callable(self.errors):
            raise TypeError(f"errors must be callable(error) -> bool, got {self.errors!r}")
        base = validate.seconds("base_ejection_time", self.base_ejection_time)
        validate.seconds("max_ejection_time", self.max_ejection_time)
        if self.max_ejection_time < base:
            raise MisuseError(
                f"max_ejection_time must be >= base_ejection_time, got {self.max_ejection_time!r}"
            )
        for name in ("max_ejected_percent", "panic_threshold"):
            validate.number(name, getattr(self, name), minimum=0, maximum=100)

    def counts(self, error: BaseException) -> bool:
        """Whether ``error`` counts towards ejecting the instance that raised it."""
        return self.is_connection_failure(error) or (
            self.consecutive_errors is not None and bool(self.errors(error)))

    @staticmethod
    def is_connection_failure(error: BaseException) -> bool:
        """Whether ``error`` is a connection-level failure (counted by ``consecutive_failures``)."""
        return isinstance(error, ConnectionFailure)

    def panicking(self, instances: int, ejected: int) -> bool:
        """Whether, with ``ejected`` of ``instances`` out, picks should ignore ejection."""
        healthy = instances - ejected
        return ejected > 0 and healthy * 100.0 < self.panic_threshold * instances - 1e-9

    def ejection_time(self, ejections: int) -> float:
        """Seconds the ``ejections``-th ejection (from 1) of one instance lasts."""
        return min(self.max_ejection_time, self.base_ejection_time * 2.0 ** min(ejections - 1, 64))

    def max_ejected(self, instances: int) -> int:
        """How many of ``instances`` may be out of rotation at once (never all)."""
        # the epsilon keeps 100 * 29% from rounding down to 28
        allowed = int(instances * self.max_ejected_percent / 100.0 + 1e-9)
        return max(0, min(allowed, instances - 1))
