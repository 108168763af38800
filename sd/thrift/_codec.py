"""The I/O-free half of a Thrift call: the request's bytes, the reply's frame, and
what a decoded reply means.

Theory of operation.  A call is one message out, one message back (none for a
``oneway`` method).  :class:`Call` is built once per factory from the thriftpy2
service and the method name; the drivers (:mod:`sd.thrift._sync`,
:mod:`sd.thrift._async`) only move bytes:

1. :meth:`Call.arguments` turns the caller's request into the method's argument
   struct, or raises :class:`kitsd.core.errors.MisuseError` (nothing is sent);
2. :meth:`Call.encode` writes the whole message into memory (framed: with its
   4-byte length), so the driver sends it with one write;
3. framed replies: :class:`FrameReader` collects the length and the payload,
   refusing a length above ``max_frame_size`` before reading (or allocating)
   any of it, then :meth:`Call.decode` decodes the payload; buffered replies are
   decoded by :meth:`Call.read_reply` straight from the driver's socket reader;
4. the message header must be a ``REPLY`` or ``EXCEPTION`` to this method with
   the call's sequence id; anything else is a :class:`BadReply`;
5. :meth:`Call.unwrap` turns the decoded result into the return value, the
   declared exception (raised untouched) or a
   :class:`sd.thrift.ThriftApplicationError`.

Untrusted bytes are decoded only through ``TCyBufferedTransport`` (which raises
at the end of its input); thriftpy2's ``TCyMemoryBuffer`` silently shortens a
read past its end, so a truncated message would decode from memory it does not
own (``tests/thrift/test_codec.py`` pins that behaviour down).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

from kitsd.core import validate
from kitsd.core.errors import MisuseError, clip
from kitsd.sd.thrift._errors import ThriftApplicationError
from kitsd.sd.thrift._vendor import (
    BinaryProtocol,
    BufferedTransport,
    CompactProtocol,
    MemoryBuffer,
    TApplicationException,
    TMessageType,
)

__all__ = [
    "BadReply",
    "Call",
    "FrameReader",
    "Outcome",
    "ProtocolName",
    "TransportName",
    "describe_start",
    "undecodable",
]

ProtocolName = Literal["binary", "compact"]
TransportName = Literal["framed", "buffered"]

_FRAME = struct.Struct("!i")
_MAX_I32 = 2**31 - 1


class BadReply(Exception):  # internal; the drivers raise ThriftProtocolError
    """The bytes received are not the awaited reply; ``str()`` says how."""


class Outcome(NamedTuple):
    """A decoded reply: the value, or the declared exception the server raised, or
    the ``TApplicationException`` it answered with."""

    value: Any = None
    declared: BaseException | None = None
    application: TApplicationException | None = None


def describe_start(data: bytes) -> str:
    """A hint from the first bytes of what was received, for error messages."""
    if data[:2] == b"\x80\x01":
        return " (a binary-protocol message without a frame: is the server's transport " \
               "'buffered'?)"
    if data[:1] == b"\x82":
        return " (a compact-protocol message without a frame: is the server's transport " \
               "'buffered'?)"
    if data[:4] in (b"HTTP", b"GET ", b"POST", b"\x15\x03\x01\x00", b"\x15\x03\x03\x00"):
        return " (an HTTP or TLS server, not Thrift)"
    return ""


class FrameReader:
    """Collects one framed message: feed it what the socket gave until it returns
    the payload.  The length is checked against ``max_size`` as soon as its 4 bytes
    are in, before any of the payload is read."""

    __slots__ = ("_buffer", "_max_size", "_size")

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._buffer = bytearray()
        self._size = -1

    @property
    def missing(self) -> int:
        """How many more bytes the frame needs (at least 1 until it is whole)."""
        if self._size < 0:
            return 4 - len(self._buffer)
        return 4 + self._size - len(self._buffer)

    def feed(self, data: bytes) -> bytes | None:
        """Add ``data``; the payload once the frame is whole, else ``None``.

        Raises :class:`BadReply` for a bad length, or for bytes past the frame (a
        server that sends what nobody asked for)."""
        buffer = self._buffer
        buffer += data
        if self._size < 0:
            if len(buffer) < 4:
                return None
            (size,) = _FRAME.unpack_from(buffer)
            if size <= 0 or size > self._max_size:
                what = "an empty frame" if size == 0 else f"a frame of {size} bytes"
                if size > self._max_size:
                    what += f" (max_frame_size is {self._max_size})"
                raise BadReply(what + describe_start(bytes(buffer[:4])))
            self._size = size
        end = 4 + self._size
        if len(buffer) < end:
            return None
        if len(buffer) > end:
            raise BadReply(f"{len(buffer) - end} bytes after the reply's frame")
        return bytes(buffer[4:])


class _Bytes:
    """A thriftpy2 transport reading from bytes: ``read`` returns what is left, up to
    ``n`` bytes, and ``b""`` at the end (``TCyBufferedTransport`` then raises)."""

    __slots__ = ("_data", "_position")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0

    def read(self, n: int) -> bytes:
        start = self._position
        self._position = start + n
        return self._data[start:start + n]

    def is_open(self) -> bool:
        return True


def _binary(transport: Any) -> Any:
    return BinaryProtocol(transport)


def _compact(transport: Any) -> Any:
    return CompactProtocol(transport)


_PROTOCOLS: dict[str, Callable[[Any], Any]] = {"binary": _binary, "compact": _compact}


class Call:
    """One method of one Thrift service, with its protocol and transport: everything
    about a call that does not touch a socket.  Immutable; shared by every endpoint
    of a factory (and safe to share across threads)."""

    __slots__ = ("_args", "_fields", "_max_frame_size", "_protocol", "_required", "_result",
                 "framed", "method", "name", "oneway", "protocol_name")

    def __init__(self, service: Any, method: object, *, protocol: object, transport: object,
                 max_frame_size: object) -> None:
        services = getattr(service, "thrift_services", None)
        if not isinstance(services, list | tuple):
            raise TypeError("service must be a thriftpy2 service (thriftpy2.load(...).Service), "
                            f"not {type(service).__name__}")
        service_name = getattr(service, "__name__", "Service")
        if not isinstance(method, str) or method not in services:
            raise MisuseError(
                f"method must be one of {service_name}'s methods ({', '.join(services)}), "
                f"got {clip(repr(method))}")
        if protocol not in _PROTOCOLS:
            raise MisuseError(f"protocol must be 'binary' or 'compact', got {clip(repr(protocol))}")
        if transport not in ("framed", "buffered"):
            raise MisuseError(
                f"transport must be 'framed' or 'buffered', got {clip(repr(transport))}")
        frame_limit = validate.integer("max_frame_size", max_frame_size, minimum=1,
                                       maximum=_MAX_I32)
        self.method = method
        self.name = f"{service_name}.{method}"
        self._args = getattr(service, f"{method}_args")
        self._result = getattr(service, f"{method}_result")
        self.oneway = bool(getattr(self._result, "oneway", False))
        spec = self._args.thrift_spec
        self._fields = tuple(field[1] for _, field in sorted(spec.items()))
        self._required = tuple(field[1] for field in spec.values() if field[-1] is True)
        self.protocol_name: ProtocolName = protocol  # type: ignore[assignment]
        self._protocol = _PROTOCOLS[protocol]
        self.framed = transport == "framed"
        self._max_frame_size = frame_limit

    # -- the request ----------------------------------------------------------------

    def arguments(self, request: object) -> Any:
        """The argument struct for ``request``: a mapping of argument names to values,
        a tuple (or list) of them in IDL order, ``None`` (no arguments), or the
        method's argument struct itself.  Raises ``TypeError`` for another kind of
        request and :class:`MisuseError` for unknown, repeated or missing arguments
        (naming them, never their values)."""
        if isinstance(request, self._args):
            return request
        if request is None:
            values: dict[str, Any] = {}
        elif isinstance(request, Mapping):
            values = dict(request)
            unknown = [name for name in values if name not in self._fields]
            if unknown:
                raise MisuseError(f"{self.name} has no argument {clip(repr(unknown[0]))}")
        elif isinstance(request, tuple | list):
            if len(request) > len(self._fields):
                raise MisuseError(f"{self.name} takes {len(self._fields)} arguments, "
                                  f"got {len(request)}")
            values = dict(zip(self._fields, request, strict=False))
        else:
            raise TypeError(
                f"a request for {self.name} is a mapping of argument names to values, a "
                "tuple of arguments in IDL order, None, or its argument struct; got "
                f"{type(request).__name__}")
        for name in self._required:
            if values.get(name) is None:
                raise MisuseError(f"{self.name}: missing required argument {name!r}")
        return self._args(**values)

    def encode(self, arguments: Any, seqid: int) -> bytes:
        """The whole message (with its frame length when framed).  Raises
        :class:`MisuseError` when an argument's value does not fit its declared
        type (the message names the method and the type, not the value)."""
        buffer = MemoryBuffer()
        protocol = self._protocol(buffer)
        kind = TMessageType.ONEWAY if self.oneway else TMessageType.CALL
        try:
            protocol.write_message_begin(self.method, kind, seqid)
            protocol.write_struct(arguments)
            protocol.write_message_end()
        except Exception as error:
            raise MisuseError(f"cannot encode the arguments of {self.name}: "
                              f"{type(error).__name__}") from error
        data: bytes = buffer.getvalue()
        if self.framed:
            return _FRAME.pack(len(data)) + data
        return data

    # -- the reply ------------------------------------------------------------------

    def frame_reader(self) -> FrameReader:
        """A fresh :class:`FrameReader` bounded by ``max_frame_size``."""
        return FrameReader(self._max_frame_size)

    @property
    def max_reply_size(self) -> int:
        """The most bytes a reply may take (``max_frame_size``, framed or not)."""
        return self._max_frame_size

    def protocol(self, transport: Any) -> Any:
        """A thriftpy2 protocol of the configured kind reading ``transport``."""
        return self._protocol(transport)

    def check_begin(self, name: object, kind: object, seqid: object, expected: int) -> bool:
        """Check a reply's message header; whether it is an ``EXCEPTION``.  Raises
        :class:`BadReply` for another message type, method name or sequence id."""
        if kind not in (TMessageType.REPLY, TMessageType.EXCEPTION):
            raise BadReply(f"a message of type {clip(repr(kind), 20)} instead of a reply")
        if name != self.method:
            raise BadReply(f"a reply to {clip(repr(name), 60)}")
        if seqid != expected:
            raise BadReply(f"a reply with sequence id {clip(repr(seqid), 20)}, "
                           f"expected {expected}")
        return kind == TMessageType.EXCEPTION

    def read_reply(self, protocol: Any, seqid: int) -> Outcome:
        """Read one reply from a thriftpy2 ``protocol``.  Whatever the protocol or its
        transport raises propagates; the header is checked by :meth:`check_begin`."""
        name, kind, received = protocol.read_message_begin()
        if self.check_begin(name, kind, received, seqid):
            application = TApplicationException()
            protocol.read_struct(application)
            protocol.read_message_end()
            return Outcome(application=application)
        result = self._result()
        protocol.read_struct(result)
        protocol.read_message_end()
        return self.outcome(result)

    def decode(self, payload: bytes, seqid: int) -> Outcome:
        """Decode a framed reply's payload.  Raises :class:`BadReply` (chained from
        thriftpy2's error) when it is not a whole, well-formed reply."""
        try:
            return self.read_reply(self._protocol(BufferedTransport(_Bytes(payload))), seqid)
        except BadReply:
            raise
        except Exception as error:
            # no describe_start() hint here: a frame's payload starts as any message does
            raise BadReply(undecodable(error)) from error

    def new_result(self) -> Any:
        """An empty result struct of the method (for the async reader)."""
        return self._result()

    def outcome(self, result: Any) -> Outcome:
        """What a decoded result struct means (as thriftpy2's own client reads it):
        the success value; else the declared exception that is set; a void method's
        ``None``; else a ``MISSING_RESULT`` application error."""
        success = getattr(result, "success", None)
        if success is not None:
            return Outcome(value=success)
        for name, value in vars(result).items():
            if name != "success" and value is not None:
                return Outcome(declared=value)
        if hasattr(result, "success"):
            return Outcome(application=TApplicationException(
                TApplicationException.MISSING_RESULT, "the reply carried no result"))
        return Outcome()

    def unwrap(self, outcome: Outcome, instance: str) -> Any:
        """Return the value; raise the declared exception as it came (same object, no
        chaining), or :class:`ThriftApplicationError` from the application exception."""
        if outcome.declared is not None:
            raise outcome.declared
        application = outcome.application
        if application is not None:
            raise ThriftApplicationError(instance, self.name, application.type,
                                         application.message) from application
        return outcome.value


def undecodable(error: BaseException) -> str:
    """How to say that thriftpy2 could not decode a reply (type and a clipped message)."""
    text = clip(str(error), 80)
    return f"an undecodable reply ({type(error).__name__}{': ' + text if text else ''})"
