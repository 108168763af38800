"""The kitsd error tree.

Every error kitsd raises on its own account derives from :class:`KitsdError`::

    KitsdError
    ├── MisuseError (also ValueError)        the caller passed something wrong
    │   ├── InvalidInstanceError             not a ``host:port`` instance string
    │   └── WrongTypeError (also TypeError)  an argument of the wrong type (a checked number…)
    ├── BackendError                         a registry misbehaved or is unreachable
    │   ├── RegistryUnavailableError         cannot reach or read the registry
    │   └── PermissionDeniedError            the registry refused our credentials
    ├── lb.NoEndpointsError                  the balancer had nothing to pick [NoEndpoints]
    ├── lb.RetryBudgetExhausted              a retry budget refused a retry [Rejected]
    ├── lb.RetryError                        every attempt failed (``.errors``, ``.final``)
    ├── lb.RetryTimeout (also TimeoutError)  the retry deadline passed (``.errors``)
    ├── sd.http.StatusError                  an HTTP instance answered a status ``decode`` refused
    └── kitsd.ratelimit.RateLimitExceeded    a rate limiter had no token [Rejected]

    pybreaker.CircuitBreakerError
    └── breaker.CircuitOpenError             an open breaker refused the call [Rejected]

``[Marker]`` names the marker (below) the class carries.

Vendor exceptions (py-consul, the etcd client, httpx) are mapped at the driver
boundary and chained with ``raise ... from``.  Errors raised by *your* endpoints
travel unchanged through balancers, retry and breakers.

Markers
-------
Layers judge errors raised by other layers (the retry loop ejects an instance,
observers label an outcome) without importing them, through *marker* types:
abstract base classes that an error class carries as a base.

* :class:`ConnectionFailure` — the instance cannot be reached (``ConnectionError``
  and its subclasses; ``sd.http``'s connect errors, ``sd.grpc.UnavailableError``,
  the transport's unreachable attempts).  The retry loop in :mod:`lb` ejects an
  instance at once when an attempt fails with one.
* :class:`Rejected` — refused before reaching an instance: an open breaker
  (``breaker.CircuitOpenError``), a rate limit (``kitsd.ratelimit.RateLimitExceeded``),
  a retry budget (``lb.RetryBudgetExhausted``).  Outcome label ``rejected``.
* :class:`NoEndpoints` — the balancer had nothing to pick (``lb.NoEndpointsError``).
  Outcome label ``no_endpoints``.
* :class:`Leaving` — the instance is leaving, not failing: it answered from its drain
  path (the transport's 503 with ``kitsd-draining``, see :mod:`kitsd.serve`).  The
  retry tries another instance; ejection and breakers do not count it.

Which classes carry a marker is decided where each class is defined, never by
importing a module: classification is the same in every process, whatever it
imported.  Your own error classes may carry a marker too, by subclassing it or
with ``ConnectionFailure.register(MyError)`` (an explicit choice of your code).
"""

from __future__ import annotations

import re
from abc import ABC
from typing import Any

from kitsd.core.redact import shown_address

__all__ = [
    "BackendError",
    "ConnectionFailure",
    "InvalidInstanceError",
    "KitsdError",
    "Leaving",
    "MisuseError",
    "NoEndpoints",
    "PermissionDeniedError",
    "RegistryUnavailableError",
    "Rejected",
    "WrongTypeError",
    "clip",
    "shown_value",
]


class KitsdError(Exception):
    """Root of every error kitsd raises on its own account."""


class MisuseError(KitsdError, ValueError):
    """The caller passed an argument kitsd cannot use."""


class WrongTypeError(MisuseError, TypeError):
    """An argument of the wrong type (a string where seconds are expected, ``True``
    for a count): both a ``TypeError``, as Python's own checks raise, and a
    :class:`MisuseError`, so ``except ValueError`` around a constructor catches
    every bad argument.  Raised by :mod:`kitsd.core.validate`."""


class InvalidInstanceError(MisuseError):
    """A string that is not a valid ``host:port`` instance.

    ``.value`` holds the offending value as given.  The message shows it by the
    redaction rule of :mod:`kitsd.core.redact`: cut to 100 characters, without
    anything before an ``@`` and without a port that is not a number
    (``admin:secret@host:80`` shows as ``'***@host:80'``, ``host:secret`` as
    ``'host:***'``), so the error can be logged.
    """

    def __init__(self, value: object, reason: str) -> None:
        shown = shown_address(value) if isinstance(value, str) else shown_value(value)
        super().__init__(f"invalid instance {shown}: {reason}")
        self.value = value
        self.reason = reason


class BackendError(KitsdError):
    """A service registry failed us; ``__cause__`` holds the vendor error."""


class RegistryUnavailableError(BackendError):
    """The registry could not be reached or did not answer usefully."""


class PermissionDeniedError(BackendError):
    """The registry refused the credentials (ACL token, user/password)."""


class ConnectionFailure(ABC):  # noqa: B024 - a marker: it has no methods by design
    """Marker for transport errors that mean "this instance cannot be reached".

    Use with ``isinstance``.  ``ConnectionError`` and its subclasses are
    connection failures by definition; other classes carry the marker as a base
    (or are registered with ``ConnectionFailure.register`` by the code that
    owns them).
    """

    @classmethod
    def __subclasshook__(cls, other: type) -> Any:  # True, or NotImplemented: ask on
        # A definition, not a registration: true in every process from the start.
        if cls is ConnectionFailure and issubclass(other, ConnectionError):
            return True
        return NotImplemented


class Rejected(ABC):  # noqa: B024 - a marker: it has no methods by design
    """Marker for errors that refused a call before it reached an instance: an open
    breaker, a rate limit, a retry budget (outcome label ``rejected``).  Use with
    ``isinstance``; carry it as a base class."""


class NoEndpoints(ABC):  # noqa: B024 - a marker: it has no methods by design
    """Marker for "the balancer had nothing to pick" (outcome label
    ``no_endpoints``); :class:`lb.NoEndpointsError` carries it."""


class Leaving(ABC):  # noqa: B024 - a marker: it has no methods by design
    """Marker for "the instance is draining on its way out": it said so (a 503 from its
    drain path), so the call goes to another instance and neither ejection nor a
    breaker counts it against this one.  Use with ``isinstance``; carry it as a base."""


def clip(text: str, limit: int = 100) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was, for messages and
    logs: a 1 MiB registry value must not become a 1 MiB log line."""
    if len(text) <= limit:
        return text
    size = len(text.encode("utf-8", "surrogatepass"))
    return f"{text[:limit]}…({size} bytes)"


def shown_value(value: object) -> str:
    """``repr(value)`` fit for a message or a log line: user information (anything
    before the last ``@``, where a password would be) replaced by ``***``, and cut
    by :func:`clip`."""
    if isinstance(value, str):
        if "@" in value:
            value = "***@" + value.rpartition("@")[2]
        return repr(clip(value))
    # Another object (a registry entry, say): redact each "user:password@" inside its repr.
    return clip(_USER_INFO.sub("***@", repr(value)))


_USER_INFO = re.compile(r"""[^\s'"(){}\[\],;/@]+@""")
