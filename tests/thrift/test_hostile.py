"""sd.thrift attacked with replies built to hurt: millions of tiny values that decode
without ever waiting on the socket, strings of 2 GB, nesting deeper than any stack;
timeouts no timer can hold; Ctrl-C in the middle of a write.  Each test failed before
its fix, or pins down what held (the README's reliability table)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest

from kitsd.core.errors import MisuseError
from kitsd.sd import thrift
from kitsd.sd.thrift import _sync

pytestmark = pytest.mark.usefixtures("no_thread_leaks")


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def begin(name: bytes = b"echo", seqid: int = 1) -> bytes:
    """A binary-protocol REPLY header (strict) to ``name`` with ``seqid``."""
    return struct.pack("!Ii", 0x80010002, len(name)) + name + struct.pack("!i", seqid)


def many_structs() -> bytes:
    # field 5 of echo's result (unknown: skipped) is a list of 2**31-1 empty structs,
    # each one byte (STOP): 15 MB of them fit under max_frame_size
    return begin() + b"\x0f\x00\x05\x0c" + struct.pack("!i", 0x7FFFFFFF) + b"\x00" * 15_000_000


def big_string() -> bytes:
    return begin() + b"\x0b\x00\x00" + struct.pack("!i", 0x7FFFFFF0) + b"abc"


def deep() -> bytes:
    return begin() + b"\x0c\x00\x05" * 200_000 + b"\x00" * 10


class CraftedPeer:
    """Answers every request with ``reply()`` (framed when asked), then holds the
    connection open until closed."""

    def __init__(self, reply: Callable[[], bytes], *, framed: bool = False) -> None:
        self._reply = reply
        self._framed = framed
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.instance = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            sock.recv(65536)
            payload = self._reply()
            if self._framed:
                payload = struct.pack("!i", len(payload)) + payload
            sock.sendall(payload)
            self._stop.wait()
        except OSError:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self._stop.set()
        for sock in (self._listener, *self._socks):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepter.join(5)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def crafted() -> Iterator[Callable[..., CraftedPeer]]:
    peers: list[CraftedPeer] = []

    def start(reply: Callable[[], bytes], **options: bool) -> CraftedPeer:
        peer = CraftedPeer(reply, **options)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.close()


async def test_an_async_reply_of_millions_of_values_keeps_the_deadline_and_the_loop(
        store: Any, crafted: Callable[..., CraftedPeer]) -> None:
    peer = crafted(many_structs)
    endpoint = thrift.async_factory(store.Store, "echo", timeout=1.0)(peer.instance)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    running = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        with pytest.raises(thrift.ThriftTimeout):
            await endpoint({"text": "x"})
        took = time.monotonic() - started
    finally:
        running.cancel()
        endpoint.close()
    # before: 32 s with timeout=1, the loop frozen all along (buffered bytes never wait)
    assert took < 3
    assert ticks >= 20


@pytest.mark.parametrize("framed", [False, True], ids=["buffered", "framed"])
@pytest.mark.parametrize("reply", [big_string, deep], ids=["2GB-string", "deep-nesting"])
def test_replies_built_to_exhaust_memory_or_stack_are_protocol_errors(
        store: Any, crafted: Callable[..., CraftedPeer], reply: Callable[[], bytes],
        framed: bool) -> None:
    # held: thriftpy2 refuses them, kitsd names them; nothing is allocated or overflowed
    before = fds()
    peer = crafted(reply, framed=framed)
    transport: Literal["framed", "buffered"] = "framed" if framed else "buffered"
    with thrift.factory(store.Store, "echo", transport=transport, timeout=5)(
            peer.instance) as endpoint, pytest.raises(thrift.ThriftProtocolError) as raised:
        endpoint({"text": "x"})
    message = str(raised.value)
    assert "undecodable" in message
    # before: a framed reply that failed to decode was said to be "without a frame"
    assert "without a frame" not in message
    peer.close()
    assert fds() == before


@pytest.mark.parametrize("name", ["timeout", "connect_timeout", "idle_timeout"])
def test_timeouts_no_timer_can_hold_are_refused(store: Any, name: str) -> None:
    # before: accepted, then OverflowError ("timestamp out of range") at the first call
    with pytest.raises(MisuseError, match=name):
        thrift.factory(store.Store, "echo", **{name: 1e300})  # type: ignore[arg-type]
    with pytest.raises(MisuseError, match=name):
        thrift.async_factory(store.Store, "echo", **{name: 1e300})  # type: ignore[arg-type]


def test_ctrl_c_during_the_write_closes_the_connection(
        store: Any, crafted: Callable[..., CraftedPeer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = fds()
    peer = crafted(lambda: b"")
    endpoint = thrift.factory(store.Store, "echo", timeout=5)(peer.instance)

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_sync, "_send", interrupted)
    with pytest.raises(KeyboardInterrupt) as raised:
        endpoint({"text": "x"})
    peer.close()
    # the traceback (kept alive here, as a crash report or a debugger keeps it) holds the
    # call's frames: only an explicit close() ends the socket, not the garbage collector
    assert raised.traceback
    assert fds() == before  # before: the socket was left open (closed by GC, some day)
    endpoint.close()
