"""sd.thrift's errors, and the pure rules that choose one.

::

    ThriftError (a KitsdError)              .instance, .method
    ├── ThriftConnectError                  the request was provably not sent: connecting failed,
    │   │                                   or writing it failed before all of it left
    │   │                                   (a ConnectionFailure: ejected and retried at once)
    │   └── ThriftConnectTimeout            connecting took longer than ``connect_timeout``
    │                                       (also a ThriftTimeout)
    ├── ThriftTimeout (a TimeoutError)      the deadline (or ``timeout``) passed; ``.phase`` says
    │                                       where, ``.sent`` whether the request had left
    ├── ThriftConnectionLost                the connection broke after the request was sent: the
    │                                       instance may have run it (not a ConnectionFailure)
    ├── ThriftProtocolError                 the instance sent something that is not the reply
    │                                       (garbage, an oversized frame, a wrong name or seqid)
    └── ThriftApplicationError              the instance answered with a TApplicationException

A service's *declared* exceptions (``throws (...)`` in the IDL) are not errors of
kitsd's: they reach the caller as the very objects thriftpy2 decoded.  Only
:class:`ThriftConnectError` is a :class:`kitsd.core.errors.ConnectionFailure`;
a timeout says nothing certain about the instance unless it was the connect
timeout the caller configured (as ``sd.http`` treats ``httpx.ConnectTimeout``).
Messages name the method and the instance, never the request.
"""

from __future__ import annotations

from typing import Literal

from kitsd.core.errors import ConnectionFailure, KitsdError, clip

__all__ = [
    "Phase",
    "ThriftApplicationError",
    "ThriftConnectError",
    "ThriftConnectTimeout",
    "ThriftConnectionLost",
    "ThriftError",
    "ThriftProtocolError",
    "ThriftTimeout",
    "application_error_name",
    "describe_os_error",
    "failure",
]

#: Where a call was when it failed: connecting, writing the request, reading the reply.
Phase = Literal["connect", "write", "read"]


class ThriftError(KitsdError):
    """Root of sd.thrift's errors: ``.instance`` (``host:port``) and ``.method``
    (``Service.method``); ``str()`` names both and says what went wrong."""

    def __init__(self, instance: str, method: str, what: str) -> None:
        super().__init__(f"Thrift {method} on {instance}: {what}")
        self.instance = instance
        self.method = method


class ThriftConnectError(ThriftError, ConnectionFailure):
    """The request was provably not sent: the connection could not be made, or
    writing the request failed before all of it left (the instance cannot have run
    it).  A :class:`kitsd.core.errors.ConnectionFailure`, so the retry loop ejects
    the instance and tries another at once.  The ``OSError`` is ``__cause__``."""


class ThriftTimeout(ThriftError, TimeoutError):
    """The call ran out of time: the retry deadline (:func:`lb.remaining`) or the
    factory's ``timeout``.  ``.phase`` is ``"connect"``, ``"write"`` or ``"read"``;
    ``.sent`` whether the whole request had been written (then the instance may
    have run it)."""

    def __init__(self, instance: str, method: str, what: str, *, phase: Phase,
                 sent: bool) -> None:
        super().__init__(instance, method, what)
        self.phase = phase
        self.sent = sent


class ThriftConnectTimeout(ThriftConnectError, ThriftTimeout):
    """Connecting took longer than the factory's ``connect_timeout``: the instance
    is unreachable (a connection failure) and the call timed out (a ``TimeoutError``)."""


class ThriftConnectionLost(ThriftError):
    """The connection broke (reset, closed) after the request had been written:
    the instance may have run the call, so this is *not* a connection failure; a
    retry of a call that must not run twice is the caller's decision."""


class ThriftProtocolError(ThriftError):
    """The instance sent bytes that are not the reply kitsd waits for: not Thrift
    at all, a frame larger than ``max_frame_size``, a reply to another method or
    sequence id, a truncated message.  The connection is discarded."""


class ThriftApplicationError(ThriftError):
    """The instance answered with a ``TApplicationException`` (an unknown method, an
    error its handler raised that the IDL does not declare, ...): ``.type`` (the
    code), ``.type_name`` (``"INTERNAL_ERROR"``, ...), ``.message`` (the server's
    text).  The instance answered, so it is not a connection failure, and the
    connection stays in the pool.  thriftpy2's exception is ``__cause__``."""

    def __init__(self, instance: str, method: str, type_: int, message: str | None) -> None:
        name = application_error_name(type_)
        text = f"application error {name}"
        super().__init__(instance, method, f"{text}: {clip(message)}" if message else text)
        self.type = type_
        self.type_name = name
        self.message = message


_APPLICATION_ERRORS = {
    0: "UNKNOWN", 1: "UNKNOWN_METHOD", 2: "INVALID_MESSAGE_TYPE", 3: "WRONG_METHOD_NAME",
    4: "BAD_SEQUENCE_ID", 5: "MISSING_RESULT", 6: "INTERNAL_ERROR", 7: "PROTOCOL_ERROR",
    8: "INVALID_TRANSFORM", 9: "INVALID_PROTOCOL", 10: "UNSUPPORTED_CLIENT_TYPE",
}


def application_error_name(type_: object) -> str:
    """The name of a ``TApplicationException`` type code (``6`` -> ``"INTERNAL_ERROR"``),
    as the Thrift specification numbers them; ``"TYPE_<n>"`` for others."""
    if isinstance(type_, int) and type_ in _APPLICATION_ERRORS:
        return _APPLICATION_ERRORS[type_]
    return f"TYPE_{clip(str(type_), 20)}"


def describe_os_error(error: BaseException) -> str:
    """``"Connection refused"`` for an ``OSError`` with a ``strerror``, else its type."""
    text = getattr(error, "strerror", None)
    return text if isinstance(text, str) and text else type(error).__name__


def failure(instance: str, method: str, phase: Phase, error: BaseException | None, *,
            bound: str, connect_timeout: bool = False) -> ThriftError:
    """The error for a call that failed at the socket, by the rules in the module
    docstring.

    ``error`` is what the socket raised (a ``TimeoutError`` when the wait ran out)
    or ``None`` for the end of the stream; ``bound`` says what limited the wait
    (``"the retry deadline"``, ``"timeout=2s"``, ``"connect_timeout=1s"``) and
    ``connect_timeout`` whether that was the factory's connect timeout.

    ============  ==========================  ==================================
    phase         timed out                   broken / closed
    ============  ==========================  ==================================
    ``connect``   ThriftConnectTimeout if     ThriftConnectError
                  connect_timeout, else
                  ThriftTimeout (not sent)
    ``write``     ThriftTimeout (not sent)    ThriftConnectError (not all of it
                                              left: it cannot have run)
    ``read``      ThriftTimeout (sent)        ThriftConnectionLost (it may have run)
    ============  ==========================  ==================================
    """
    if isinstance(error, TimeoutError):
        doing = {"connect": "connecting", "write": "writing the request",
                 "read": "waiting for the reply"}[phase]
        what = f"{bound} passed while {doing}"
        if phase == "connect" and connect_timeout:
            return ThriftConnectTimeout(instance, method, what, phase=phase, sent=False)
        return ThriftTimeout(instance, method, what, phase=phase, sent=phase == "read")
    cause = "the connection was closed" if error is None else describe_os_error(error)
    if phase == "connect":
        return ThriftConnectError(instance, method, f"cannot connect: {cause}")
    if phase == "write":
        return ThriftConnectError(instance, method,
                                  f"the request could not be written ({cause}); it was not sent")
    return ThriftConnectionLost(instance, method,
                                f"{cause} after the request was sent, before the reply")
