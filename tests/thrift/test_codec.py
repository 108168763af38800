"""The I/O-free call: requests to argument structs, messages to bytes, frames, and
what a reply means (sd/thrift/_codec.py)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from thriftpy2.protocol import TBinaryProtocol, TCompactProtocol
from thriftpy2.thrift import TApplicationException, TMessageType
from thriftpy2.transport import TMemoryBuffer

from kitsd.core.errors import MisuseError
from kitsd.sd.thrift import ThriftApplicationError
from kitsd.sd.thrift._codec import BadReply, Call, FrameReader, describe_start


def _call(store: Any, method: str = "add", **options: Any) -> Call:
    settings: dict[str, Any] = {"protocol": "binary", "transport": "framed",
                                "max_frame_size": 1024, **options}
    return Call(store.Store, method, **settings)


def _reply(store: Any, method: str, seqid: int, *, protocol: str = "binary",
           kind: int = TMessageType.REPLY, name: str | None = None, **result: Any) -> bytes:
    """A reply as a server writes it (thriftpy2's pure-Python protocols)."""
    buffer = TMemoryBuffer()
    proto = (TBinaryProtocol if protocol == "binary" else TCompactProtocol)(buffer)
    proto.write_message_begin(name or method, kind, seqid)
    if kind == TMessageType.EXCEPTION:
        proto.write_struct(TApplicationException(result["type"], result["message"]))
    else:
        proto.write_struct(getattr(store.Store, f"{method}_result")(**result))
    proto.write_message_end()
    data: bytes = buffer.getvalue()
    return data


# -- requests -----------------------------------------------------------------------

def test_request_forms(store: Any) -> None:
    call = _call(store)
    for request in ({"a": 1, "b": 2}, (1, 2), [1, 2], store.Store.add_args(a=1, b=2)):
        arguments = call.arguments(request)
        assert (arguments.a, arguments.b) == (1, 2)
    assert _call(store, "whoami").arguments(None) == store.Store.whoami_args()
    given = store.Store.add_args(a=5, b=6)
    assert call.arguments(given) is given


def test_bad_requests_name_the_argument_not_the_value(store: Any) -> None:
    call = _call(store)
    with pytest.raises(MisuseError, match=r"Store\.add has no argument 'password'") as caught:
        call.arguments({"a": 1, "password": "hunter2"})
    assert "hunter2" not in str(caught.value)
    with pytest.raises(MisuseError, match="takes 2 arguments, got 3"):
        call.arguments((1, 2, 3))
    with pytest.raises(TypeError, match="a mapping of argument names"):
        call.arguments("text")
    with pytest.raises(MisuseError, match=r"cannot encode the arguments of Store\.add") as caught:
        call.encode(call.arguments({"a": "secret-text", "b": 2}), 1)
    assert "secret-text" not in str(caught.value)


def test_construction_checks(store: Any) -> None:
    with pytest.raises(TypeError, match="thriftpy2 service"):
        Call(object(), "add", protocol="binary", transport="framed", max_frame_size=10)
    with pytest.raises(MisuseError, match="method must be one of Store's methods"):
        _call(store, "nope")
    with pytest.raises(MisuseError, match="protocol must be"):
        _call(store, protocol="json")
    with pytest.raises(MisuseError, match="transport must be"):
        _call(store, transport="http")
    for bad in (0, -1, 2**31, True, 1.5):
        with pytest.raises(MisuseError, match="max_frame_size"):
            _call(store, max_frame_size=bad)


# -- encoding -------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["binary", "compact"])
@pytest.mark.parametrize("transport", ["framed", "buffered"])
def test_encode_is_what_a_server_reads(store: Any, protocol: str, transport: str) -> None:
    call = _call(store, protocol=protocol, transport=transport)
    data = call.encode(call.arguments({"a": 7, "b": 8}), 42)
    if transport == "framed":
        (size,) = struct.unpack("!i", data[:4])
        assert size == len(data) - 4
        data = data[4:]
    proto = (TBinaryProtocol if protocol == "binary" else TCompactProtocol)(TMemoryBuffer(data))
    assert proto.read_message_begin() == ("add", TMessageType.CALL, 42)
    arguments = store.Store.add_args()
    proto.read_struct(arguments)
    assert (arguments.a, arguments.b) == (7, 8)


def test_oneway_is_sent_as_oneway(store: Any) -> None:
    call = _call(store, "note", transport="buffered")
    assert call.oneway
    proto = TBinaryProtocol(TMemoryBuffer(call.encode(call.arguments({"text": "x"}), 3)))
    assert proto.read_message_begin() == ("note", TMessageType.ONEWAY, 3)


# -- frames ---------------------------------------------------------------------------

def test_frame_reader_collects_a_frame_fed_byte_by_byte() -> None:
    reader = FrameReader(100)
    assert reader.missing == 4
    message = struct.pack("!i", 5) + b"hello"
    for index, byte in enumerate(message[:-1]):
        assert reader.feed(bytes([byte])) is None
        fed = index + 1  # the header first, then the payload it announces
        assert reader.missing == (4 - fed if fed < 4 else len(message) - fed)
    assert reader.feed(message[-1:]) == b"hello"


@pytest.mark.parametrize(("header", "message"), [
    (struct.pack("!i", 101), "a frame of 101 bytes (max_frame_size is 100)"),
    (struct.pack("!i", 0), "an empty frame"),
    (struct.pack("!i", -5), "a frame of -5 bytes"),
    (b"HTTP", "an HTTP or TLS server"),
    (b"\x80\x01\x00\x02", "is the server's transport 'buffered'?"),
])
def test_frame_reader_refuses_bad_lengths_before_reading_them(header: bytes,
                                                               message: str) -> None:
    with pytest.raises(BadReply, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("?", r"\?")):
        FrameReader(100).feed(header)


def test_bytes_after_the_frame_are_refused() -> None:
    with pytest.raises(BadReply, match="3 bytes after the reply's frame"):
        FrameReader(100).feed(struct.pack("!i", 2) + b"okxyz")


def test_describe_start() -> None:
    assert describe_start(b"\x00\x00\x00\x10") == ""
    assert "compact" in describe_start(b"\x82\x21")


# -- replies --------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["binary", "compact"])
def test_decode_success_declared_and_application(store: Any, protocol: str) -> None:
    call = _call(store, "get", protocol=protocol)
    item = store.Item(key="k", value=b"v", version=3)
    assert call.decode(_reply(store, "get", 9, protocol=protocol, success=item), 9).value == item
    outcome = call.decode(
        _reply(store, "get", 9, protocol=protocol, notFound=store.NotFound(key="k")), 9)
    assert isinstance(outcome.declared, store.NotFound)
    with pytest.raises(store.NotFound) as caught:
        call.unwrap(outcome, "10.0.0.1:9090")
    assert caught.value is outcome.declared  # untouched: the very object
    assert caught.value.__cause__ is None
    outcome = call.decode(_reply(store, "get", 9, protocol=protocol, kind=TMessageType.EXCEPTION,
                                 type=TApplicationException.UNKNOWN_METHOD, message="no get"), 9)
    with pytest.raises(ThriftApplicationError) as error:
        call.unwrap(outcome, "10.0.0.1:9090")
    assert str(error.value) == ("Thrift Store.get on 10.0.0.1:9090: application error "
                                "UNKNOWN_METHOD: no get")
    assert error.value.type_name == "UNKNOWN_METHOD"
    assert isinstance(error.value.__cause__, TApplicationException)


def test_void_and_missing_results(store: Any) -> None:
    assert _call(store, "put").unwrap(_call(store, "put").decode(_reply(store, "put", 1), 1),
                                      "h:1") is None
    call = _call(store, "echo")
    with pytest.raises(ThriftApplicationError, match="MISSING_RESULT"):
        call.unwrap(call.decode(_reply(store, "echo", 1), 1), "h:1")


def test_reply_header_must_match(store: Any) -> None:
    call = _call(store, "echo")
    with pytest.raises(BadReply, match="sequence id 8, expected 9"):
        call.decode(_reply(store, "echo", 8, success="x"), 9)
    with pytest.raises(BadReply, match="a reply to 'whoami'"):
        call.decode(_reply(store, "echo", 9, name="whoami", success="x"), 9)
    with pytest.raises(BadReply, match="a message of type 1"):
        call.decode(_reply(store, "echo", 9, kind=TMessageType.CALL, success="x"), 9)


@pytest.mark.parametrize("protocol", ["binary", "compact"])
def test_truncated_and_garbage_payloads_are_bad_replies(store: Any, protocol: str) -> None:
    call = _call(store, "echo", protocol=protocol)
    whole = _reply(store, "echo", 1, protocol=protocol, success="x" * 50)
    for cut in (1, 5, 12, len(whole) - 1):
        with pytest.raises(BadReply, match="undecodable reply"):
            call.decode(whole[:cut], 1)
    # a string claiming 2 GB in a 12-byte payload: refused, nothing read past the end
    with pytest.raises(BadReply):
        _call(store, "echo").decode(b"\x80\x01\x00\x02\x7f\xff\xff\xff" + b"\x00" * 4, 1)
