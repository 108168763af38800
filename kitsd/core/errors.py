"""The kitsd error tree.

Every error kitsd raises on its own account derives from :class:`KitsdError`::

    KitsdError
    ├── MisuseError (also ValueError)        the caller passed something wrong
    │   └── InvalidInstanceError             not a ``host:port`` instance string
    ├── BackendError                         a registry misbehaved or is unreachable
    │   ├── RegistryUnavailableError         cannot reach or read the registry
    │   └── PermissionDeniedError            the registry refused our credentials
    ├── lb.NoEndpointsError                  the balancer had nothing to pick
    ├── lb.RetryError                        every attempt failed (``.errors``, ``.final``)
    ├── lb.RetryTimeout (also TimeoutError)  the retry deadline passed (``.errors``)
    └── sd.http.StatusError                  an HTTP instance answered a status ``decode`` refused

Vendor exceptions (py-consul, the etcd client, httpx) are mapped at the driver
boundary and chained with ``raise ... from``.  Errors raised by *your* endpoints
travel unchanged through balancers, retry and breakers.

:class:`ConnectionFailure` is not an error class of its own but a marker: an
abstract base class with which transport errors are registered
(``ConnectionError`` here, httpx's connect errors by :mod:`sd.http`).  The retry
loop in :mod:`lb` ejects an instance at once when an attempt fails with one.
Register your own transport's errors with ``ConnectionFailure.register(MyError)``.
"""

from __future__ import annotations

import re
from abc import ABC

__all__ = [
    "BackendError",
    "ConnectionFailure",
    "InvalidInstanceError",
    "KitsdError",
    "MisuseError",
    "PermissionDeniedError",
    "RegistryUnavailableError",
    "clip",
    "shown_value",
]


class KitsdError(Exception):
    """Root of every error kitsd raises on its own account."""


class MisuseError(KitsdError, ValueError):
    """The caller passed an argument kitsd cannot use."""


class InvalidInstanceError(MisuseError):
    """A string that is not a valid ``host:port`` instance.

    ``.value`` holds the offending value as given.  The message shows it through
    :func:`shown_value`: cut to 100 characters, and without anything before an ``@``
    (``admin:secret@host:80`` shows as ``'***@host:80'``), so the error can be logged.
    """

    def __init__(self, value: object, reason: str) -> None:
        super().__init__(f"invalid instance {shown_value(value)}: {reason}")
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

    Use with ``isinstance``; register error classes with ``ConnectionFailure.register``.
    """


ConnectionFailure.register(ConnectionError)


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
