"""A scripted DNS server on loopback (UDP and TCP, one port), for odd answers on demand.

``ScriptedDNS(handler)`` answers each query with ``handler(query)``: a
``dns.message.Message`` to send, or ``None`` to stay silent (a timeout).  It
speaks real DNS over real sockets, so the whole resolver path is exercised;
``transports`` records which transport each query came over.  With
``concurrent=True`` each TCP connection is served by a thread of its own,
``most_connections`` is the largest number open at once and ``most_in_flight`` the
largest number of queries waiting for their answer at once (a client's fan-out).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Handler = Callable[[dns.message.Message], dns.message.Message | None]


class ScriptedDNS:
    """A UDP DNS server on ``127.0.0.1:port`` answering with ``handler``; ``close()`` stops it."""

    def __init__(self, handler: Handler, *, concurrent: bool = False) -> None:
        self.handler = handler
        self.queries: list[tuple[str, str]] = []
        self.query_times: list[float] = []
        self.transports: list[str] = []
        self.concurrent = concurrent
        self.open_connections = 0
        self.most_connections = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._count_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._sock, self._listener = _udp_and_tcp_on_one_port()
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self._listener.listen(1024 if concurrent else 16)
        self._listener.settimeout(0.05)
        self._connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="scripted-dns", daemon=True)
        self._thread.start()
        self._tcp_thread = threading.Thread(target=self._serve_tcp, name="scripted-dns-tcp",
                                            daemon=True)
        self._tcp_thread.start()

    @property
    def threads(self) -> set[threading.Thread]:
        """The server's own threads (for leak checks that must not count them)."""
        return {self._thread, self._tcp_thread}

    def _answer(self, data: bytes, transport: str) -> bytes | None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        self.query_times.append(time.monotonic())
        self.queries.append((question.name.to_text(), dns.rdatatype.to_text(question.rdtype)))
        self.transports.append(transport)
        with self._count_lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            answer = self.handler(query)
        finally:
            with self._count_lock:
                self.in_flight -= 1
        return None if answer is None else answer.to_wire()

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.concurrent:
                worker = threading.Thread(target=self._serve_connection, args=(connection,),
                                          name="scripted-dns-conn", daemon=True)
                self._workers.append(worker)
                worker.start()
            else:
                self._serve_connection(connection)

    def _serve_connection(self, connection: socket.socket) -> None:
        with self._count_lock:
            self.open_connections += 1
            self.most_connections = max(self.most_connections, self.open_connections)
        try:
            connection.settimeout(5)
            held = False
            try:
                while True:
                    header = connection.recv(2)
                    if len(header) < 2:
                        break
                    size = int.from_bytes(header, "big")
                    data = b""
                    while len(data) < size:
                        chunk = connection.recv(size - len(data))
                        if not chunk:
                            break
                        data += chunk
                    wire = self._answer(data, "tcp")
                    if wire is None:  # silent: hold the connection open, answer nothing
                        self._connections.append(connection)
                        held = True
                        break
                    connection.sendall(len(wire).to_bytes(2, "big") + wire)
            except OSError:
                pass
            finally:
                if not held:
                    connection.close()
        finally:
            with self._count_lock:
                self.open_connections -= 1

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            wire = self._answer(data, "udp")
            if wire is not None:
                self._sock.sendto(wire, peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._tcp_thread.join(5)
        for worker in self._workers:
            worker.join(5)
        for connection in self._connections:
            connection.close()
        self._sock.close()
        self._listener.close()

    def __enter__(self) -> ScriptedDNS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def srv_answer(
    query: dns.message.Message, records: list[str], *, ttl: int = 30,
    additional: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
) -> dns.message.Message:
    """An answer to ``query`` with SRV ``records`` (``"prio weight port target"``) and
    ``additional`` ``(name, "A"|"AAAA", address)`` glue."""
    response = dns.message.make_response(query)
    if records:
        response.answer.append(dns.rrset.from_text_list(
            query.question[0].name, ttl, dns.rdataclass.IN, dns.rdatatype.SRV, records))
    for name, rdtype, address in additional:
        response.additional.append(dns.rrset.from_text(name, ttl, "IN", rdtype, address))
    return response


def address_answer(query: dns.message.Message, addresses: list[str], *, ttl: int = 30
                   ) -> dns.message.Message:
    """An A/AAAA answer with ``addresses`` (empty: NOERROR without records)."""
    response = dns.message.make_response(query)
    question = query.question[0]
    if addresses:
        response.answer.append(dns.rrset.from_text_list(
            question.name, ttl, dns.rdataclass.IN, question.rdtype, addresses))
    return response


def rcode_answer(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    """An empty answer with ``rcode`` (NXDOMAIN, SERVFAIL, REFUSED...)."""
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    return response


def _udp_and_tcp_on_one_port() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same free loopback port (another process may
    hold the TCP side of the port the kernel gave the UDP socket: then try another)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            tcp.close()
            udp.close()
            continue
        return udp, tcp
    raise OSError("no loopback port free for both UDP and TCP")
