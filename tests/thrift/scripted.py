"""A scripted Thrift peer for the failure cases a well-behaved server never shows:
garbage, oversized frames, wrong sequence ids, truncated replies, trickling,
hanging, hanging up.  It answers ``echo`` (and any method, as ``echo``) of the
Store service according to its ``mode``:

=============  ===============================================================
``echo``       a correct reply
``http``       ``HTTP/1.1 400 Bad Request`` (a server of another protocol)
``random``     64 random bytes
``huge``       a frame header announcing 2 GB (framed only)
``seqid``      a correct reply with another sequence id
``method``     a correct reply to another method
``truncated``  half of a correct reply, then the connection closes
``extra``      a correct reply followed by bytes nobody asked for
``close``      reads the request, then closes
``hang``       reads the request, never answers
``trickle``    a correct reply, one byte every 50 ms
=============  ===============================================================

In process (``ScriptedServer(mode)``, threads stopped by ``close()``) or as a
process of its own, so a test can count its own file descriptors alone::

    python -m tests.thrift.scripted MODE [framed|buffered] [binary|compact]
"""

from __future__ import annotations

import os
import random
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import thriftpy2
from thriftpy2.protocol import TBinaryProtocol, TCompactProtocol
from thriftpy2.thrift import TMessageType
from thriftpy2.transport import TMemoryBuffer

IDL = Path(__file__).resolve().parent / "goserver" / "store.thrift"
MODES = ("echo", "http", "random", "huge", "seqid", "method", "truncated", "extra", "close",
         "hang", "trickle")


def _store() -> Any:
    return thriftpy2.load(str(IDL), module_name="store_thrift")


class ScriptedServer:
    """Serves ``mode`` on a free loopback port (``.address``); ``.connections``
    counts accepted connections, ``.requests`` whole requests read."""

    def __init__(self, mode: str, *, transport: str = "framed", protocol: str = "binary") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.framed = transport == "framed"
        self.protocol = TBinaryProtocol if protocol == "binary" else TCompactProtocol
        self.store = _store()
        self.connections = 0
        self.requests = 0
        self._random = random.Random(7)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="scripted-thrift",
                                          daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._threads = [each for each in self._threads if each.is_alive()]
                thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                self._threads.append(thread)
            thread.start()

    def _read_request(self, conn: socket.socket) -> tuple[str, int] | None:
        data = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
            body = data[4:] if self.framed else data
            if self.framed and (len(data) < 4 or len(body) < struct.unpack("!i", data[:4])[0]):
                continue
            try:
                name, _, seqid = self.protocol(TMemoryBuffer(body)).read_message_begin()
            except Exception:  # noqa: S112 - not all of it yet
                continue
            with self._lock:
                self.requests += 1
            return name, seqid
        return None

    def reply(self, seqid: int, *, name: str = "echo", text: str = "scripted") -> bytes:
        buffer = TMemoryBuffer()
        proto = self.protocol(buffer)
        proto.write_message_begin(name, TMessageType.REPLY, seqid)
        proto.write_struct(self.store.Store.echo_result(success=text))
        proto.write_message_end()
        data: bytes = buffer.getvalue()
        return struct.pack("!i", len(data)) + data if self.framed else data

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        try:
            while not self._stop.is_set():
                request = self._read_request(conn)
                if request is None:
                    return
                if not self._answer(conn, *request):
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, name: str, seqid: int) -> bool:
        """Answer one request; whether to keep serving the connection."""
        mode = self.mode
        conn.settimeout(None)
        if mode == "echo":
            conn.sendall(self.reply(seqid, name=name))
        elif mode == "http":
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        elif mode == "random":
            conn.sendall(bytes(self._random.getrandbits(8) for _ in range(64)))
        elif mode == "huge":
            conn.sendall(b"\x7f\xff\xff\xff" + b"\x00" * 60)
        elif mode == "seqid":
            conn.sendall(self.reply(seqid + 1, name=name))
        elif mode == "method":
            conn.sendall(self.reply(seqid, name="whoami"))
        elif mode == "truncated":
            whole = self.reply(seqid, name=name)
            conn.sendall(whole[:len(whole) // 2])
            return False
        elif mode == "extra":
            conn.sendall(self.reply(seqid, name=name) + b"\x00junk")
        elif mode == "close":
            return False
        elif mode == "hang":
            self._stop.wait()
            return False
        elif mode == "trickle":
            for byte in self.reply(seqid, name=name):
                if self._stop.wait(0.05):
                    return False
                conn.sendall(bytes([byte]))
        conn.settimeout(0.05)
        return True

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accepter.join(5)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def main(argv: list[str]) -> None:
    mode = argv[0]
    transport = argv[1] if len(argv) > 1 else "framed"
    protocol = argv[2] if len(argv) > 2 else "binary"
    with ScriptedServer(mode, transport=transport, protocol=protocol) as server:
        print(f"listening {server.address}", flush=True)
        try:
            while True:  # until the test kills it (or its stdin closes)
                if not os.read(sys.stdin.fileno(), 1):
                    break
        except KeyboardInterrupt:
            pass
        time.sleep(0)


if __name__ == "__main__":
    main(sys.argv[1:])
