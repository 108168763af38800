"""HTTP/1.1 as the Consul watch speaks it: a request's bytes, an answer's head, a
chunked body.  Pure: no I/O, no threads, no clock (the I/O is
:class:`sd.consul._http11.Http11Transport`'s).

Theory of operation
-------------------
h11 parses an answer in ~50 µs of CPU when warm and ~0.2 ms when cold, which a
watch always is: its query was held for seconds, and the answer that ends it is
the one whose latency counts (``bench/bench_propagation.py``).  An agent's
answer is simple (RFC 9112 with none of its rarities), so these few rules read it
in a fraction of that, and refuse anything else rather than guess:

* the status line is ``HTTP/1.0`` or ``HTTP/1.1``, a three-digit status and an
  optional reason;
* header names are tokens, values hold no NUL, CR or LF, and no line is folded
  (obsolete line folding is refused, as h11 does);
* the header section is at most :data:`MAX_HEAD` bytes and a chunk-size or
  trailer line at most :data:`MAX_LINE`;
* the body is delimited by ``Transfer-Encoding: chunked`` (the only coding
  accepted there), else by ``Content-Length`` (copies must agree), else by the
  end of the connection; 1xx, 204, 304 and answers to ``HEAD`` have none;
* the connection is kept for another request only for HTTP/1.1 without
  ``Connection: close`` and with a framed body (not both framings at once).

Violations raise :class:`ProtocolError` (a ``ValueError``), which the transport
reports as ``httpx.RemoteProtocolError`` (or ``httpx.LocalProtocolError`` for a
request it refuses to write: a header that could split it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_HEAD", "MAX_LINE", "ChunkedBody", "Head", "ProtocolError", "parse_head",
           "request_bytes"]

MAX_HEAD = 65536
"""Most bytes an answer's status line and headers may take."""

MAX_LINE = 4096
"""Most bytes a chunk-size line or a trailer line may take."""

_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\x00\r\n]*))?")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(rb"[0-9]{1,19}")


class ProtocolError(ValueError):
    """An answer (or a request) that is not HTTP/1.1 as these rules read it."""


@dataclass(slots=True)
class Head:
    """An answer's status line and headers, and how its body is delimited."""

    status: int
    version: bytes
    """``b"HTTP/1.1"`` or ``b"HTTP/1.0"``."""
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    """As sent (names keep their case), values without surrounding blanks."""
    length: int | None
    """``Content-Length``, if that delimits the body."""
    chunked: bool
    keep_alive: bool
    """Whether the connection may carry another request after this answer."""


def parse_head(head: bytes) -> Head:
    """The head of an answer: ``head`` is its bytes up to (without) the blank line.

    Raises :class:`ProtocolError`.
    """
    lines = head.split(b"\r\n")
    status = _STATUS.fullmatch(lines[0])
    if status is None:
        raise ProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    close = status[1] == b"0"
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise ProtocolError(f"not a header line: {line[:80]!r}")
        if _BAD_VALUE.search(value) is not None:
            raise ProtocolError(f"a header value holds NUL, CR or LF: {name!r}")
        value = value.strip(b" \t")
        headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length":
            lengths.add(value)
        elif lowered == b"transfer-encoding":
            codings.extend(part.strip().lower() for part in value.split(b","))
        elif lowered == b"connection" and b"close" in (
                part.strip().lower() for part in value.split(b",")):
            close = True
    length: int | None = None
    if codings:
        if codings != [b"chunked"]:
            raise ProtocolError(f"unsupported Transfer-Encoding: {b', '.join(codings)!r}")
        close = close or bool(lengths)  # both framings: read it chunked, then hang up
    elif lengths:
        if len(lengths) > 1 or _DIGITS.fullmatch(value := next(iter(lengths))) is None:
            raise ProtocolError(f"bad Content-Length: {sorted(lengths)!r}")
        length = int(value)
    code = int(status[2])
    framed = bool(codings) or length is not None or 100 <= code < 200 or code in (204, 304)
    return Head(code, b"HTTP/1." + status[1], status[3] or b"", headers, length,
                bool(codings), keep_alive=framed and not close)


class ChunkedBody:
    """Decodes a chunked body from the bytes read so far (see :meth:`feed`)."""

    __slots__ = ("_left", "parts")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        """The chunks' data, in order."""
        self._left: int | None = None  # None: at a size line; -1: in the trailers

    def feed(self, buffer: bytearray) -> bool:
        """Consume what ``buffer`` holds of the body; ``True`` once it ended (what
        follows it stays in ``buffer``).  Raises :class:`ProtocolError`."""
        while True:
            left = self._left
            if left is not None and left >= 0:  # a chunk's data and its CRLF
                if len(buffer) < left + 2:
                    return False
                if buffer[left:left + 2] != b"\r\n":
                    raise ProtocolError("a chunk does not end with CRLF")
                self.parts.append(bytes(buffer[:left]))
                del buffer[:left + 2]
                self._left = None
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > MAX_LINE:
                    raise ProtocolError("a chunk-size or trailer line is too long")
                return False
            line = bytes(buffer[:end])
            del buffer[:end + 2]
            if left is None:
                size = _HEX.fullmatch(line.split(b";", 1)[0].strip(b" \t"))
                if size is None:
                    raise ProtocolError(f"not a chunk size: {line[:40]!r}")
                self._left = int(size[0], 16) or -1
            elif not line:  # the blank line after the trailers
                return True
            elif len(line) > MAX_LINE:
                raise ProtocolError("a trailer line is too long")


def request_bytes(method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                  body: bytes) -> bytes:
    """A request's bytes: ``target`` is the path and query, ``headers`` as they go
    (with ``Host``); ``Content-Length`` is added for a body unless a framing header
    is given (``Transfer-Encoding: chunked`` sends ``body`` as one chunk).

    Raises :class:`ProtocolError` for anything that could split the request.
    """
    if _TOKEN.fullmatch(method.encode("ascii", "replace")) is None \
            or re.search(rb"[\x00-\x20\x7f]", target) is not None:
        raise ProtocolError("a method or target that would split the request")
    parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    framing = None
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None or _BAD_VALUE.search(value) is not None:
            raise ProtocolError(f"a header that would split the request: {name[:40]!r}")
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            framing = lowered
        parts += (name, b": ", value, b"\r\n")
    if framing == b"transfer-encoding":
        body = (b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
    elif framing is None and body:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    parts += (b"\r\n", body)
    return b"".join(parts)
