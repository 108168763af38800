"""sd.consul._wire: the HTTP/1.1 rules the watch's transport reads answers and writes
requests with (pure: no sockets here; the transport's own tests and every Consul test
run them against a server)."""

from __future__ import annotations

import pytest

from kitsd.sd.consul._wire import (
    MAX_LINE,
    ChunkedBody,
    ProtocolError,
    parse_head,
    request_bytes,
)

CONSUL = (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: application/json\r\n"
          b"Vary: Accept-Encoding\r\nX-Consul-Default-Acl-Policy: allow\r\nX-Consul-Index: 17\r\n"
          b"X-Consul-Knownleader: true\r\nDate: Sun, 06 Dec 2026 18:11:35 GMT\r\n"
          b"Content-Length: 561")


def test_an_agents_answer() -> None:
    head = parse_head(CONSUL)
    assert (head.status, head.version, head.reason) == (200, b"HTTP/1.1", b"OK")
    assert (b"X-Consul-Index", b"17") in head.headers  # names keep their case
    assert head.length == 561
    assert not head.chunked
    assert head.keep_alive


@pytest.mark.parametrize(("head", "length", "chunked", "keep_alive"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", None, True, True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding:  Chunked ", None, True, True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close", 3, False, False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: Keep-Alive, CLOSE", 3, False, False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3", 3, False, True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 3", 3, False, False),
    (b"HTTP/1.1 200 OK", None, False, False),  # delimited by the end of the connection
    (b"HTTP/1.1 204 No Content", None, False, True),
    (b"HTTP/1.1 304 Not Modified", None, False, True),
    (b"HTTP/1.1 200", None, False, False),  # no reason
    # both framings: read chunked, then hang up (a smuggling attempt if not a bug)
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked", None, True, False),
])
def test_framing_and_keep_alive(head: bytes, length: int | None, chunked: bool,
                                keep_alive: bool) -> None:
    parsed = parse_head(head)
    assert (parsed.length, parsed.chunked, parsed.keep_alive) == (length, chunked, keep_alive)


@pytest.mark.parametrize("head", [
    b"",
    b"HTTP/2 200 OK",
    b"HTTP/1.1 2000 OK",
    b"ICY 200 OK",
    b"HTTP/1.1 200 OK\r\nno colon here",
    b"HTTP/1.1 200 OK\r\nBad Name: x",
    b"HTTP/1.1 200 OK\r\n: empty name",
    b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded",  # obsolete line folding
    b"HTTP/1.1 200 OK\r\nX-A: a\x00b",
    b"HTTP/1.1 200 OK\r\nX-A: a\nInjected: b",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4",
    b"HTTP/1.1 200 OK\r\nContent-Length: -3",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0x10",
    b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity",
])
def test_what_is_not_read(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_head(head)


CHUNKED = b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\nNEXT"


@pytest.mark.parametrize("step", [1, 2, 3, 7, len(CHUNKED)])
def test_a_chunked_body_read_in_pieces(step: int) -> None:
    body, buffer, done = ChunkedBody(), bytearray(), False
    for start in range(0, len(CHUNKED), step):
        buffer += CHUNKED[start:start + step]
        done = body.feed(buffer)
        if done:
            break
    assert done
    assert b"".join(body.parts) == b"hello world"
    assert bytes(buffer).startswith(b"NEXT"[:len(buffer)])  # what follows is left


@pytest.mark.parametrize("data", [
    b"zz\r\n",
    b"\r\n",
    b"-1\r\n",
    b"1" * 17 + b"\r\n",
    b"3\r\nabcX\r\n",  # no CRLF after the data
    b"1" * (MAX_LINE + 2),  # a size line that never ends
    b"0\r\n" + b"X" * (MAX_LINE + 2),  # nor a trailer line
])
def test_a_bad_chunked_body(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ChunkedBody().feed(bytearray(data))


def test_a_request() -> None:
    data = request_bytes("GET", b"/v1/health/service/web?index=7&wait=10000ms",
                         [(b"Host", b"127.0.0.1:8500"), (b"X-Consul-Token", b"t")], b"")
    assert data == (b"GET /v1/health/service/web?index=7&wait=10000ms HTTP/1.1\r\n"
                    b"Host: 127.0.0.1:8500\r\nX-Consul-Token: t\r\n\r\n")
    assert request_bytes("PUT", b"/x", [(b"Host", b"h")], b"{}") \
        == b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"
    assert request_bytes("PUT", b"/x", [(b"Content-Length", b"2")], b"{}") \
        == b"PUT /x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
    assert request_bytes("PUT", b"/x", [(b"Transfer-Encoding", b"chunked")], b"{}") \
        == b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"


@pytest.mark.parametrize(("method", "target", "headers"), [
    ("GET", b"/x HTTP/1.1\r\nInjected: 1\r\n\r\nGET /", []),
    ("GET", b"/a b", []),
    ("G ET", b"/", []),
    ("GET", b"/", [(b"X-Consul-Token", b"t\r\nInjected: 1")]),
    ("GET", b"/", [(b"Bad Name", b"v")]),
    ("GET", b"/", [(b"X", b"a\x00")]),
])
def test_a_request_that_could_be_split_is_refused(
        method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(ProtocolError):
        request_bytes(method, target, headers, b"")
