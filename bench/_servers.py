"""Local HTTP instances for the issue-21 benchmarks, served by a child process, and a
light asyncio HTTP client endpoint.

The instances run in their own process (so the client's event loop and theirs do
not share a GIL), on one asyncio loop, as a minimal HTTP/1.1 server with
keep-alive.  Each answers ``GET <path>`` with its port after its *delay*; what
the delay is, and whether it listens at all, is steered from the parent over the
child's stdin, one command per line, each acknowledged by ``ok``:

* ``cold I SECONDS FACTOR`` — instance I starts now: for SECONDS it is FACTOR
  times slower (a cold start);
* ``down I`` / ``up I`` — stop listening and cut every open connection / listen again;
* ``delay I SECONDS`` — its service time;
* ``capacity I N`` — at most N requests served at once, the others queue (a fixed
  capacity); 0: unlimited;
* ``health I STATUS`` — what ``/health`` answers;
* ``stats`` — a JSON line: requests served and connections accepted, per instance.

The client side (:class:`RawEndpoint`) speaks the same minimal HTTP over pooled
asyncio streams: a few tens of microseconds per call, so a benchmark at a
thousand calls per second measures the balancing, not an HTTP library.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["Instances", "RawEndpoint", "percentile"]


class Refused(ConnectionRefusedError):
    """A bench endpoint could not connect (a ``ConnectionError``, so a connection
    failure: ejection applies)."""


class StatusFailure(Exception):
    """A bench endpoint got a status >= 500 (counted by ``consecutive_errors``)."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank); nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Instances:
    """``count`` instances in a child process; ``addresses`` in order; ``command(...)``
    steers them (see the module docstring).  A context manager."""

    def __init__(self, count: int, delay: float = 0.005) -> None:
        # our own interpreter and module, numbers we formatted: no untrusted input
        self._child = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bench._servers", str(count), str(delay)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._child.stdout is not None
        self.addresses: list[str] = self._child.stdout.readline().split()

    def command(self, *words: object) -> str:
        assert self._child.stdin is not None
        assert self._child.stdout is not None
        self._child.stdin.write(" ".join(str(word) for word in words) + "\n")
        self._child.stdin.flush()
        return self._child.stdout.readline().strip()

    def stats(self) -> dict[str, dict[str, int]]:
        answer: dict[str, dict[str, int]] = json.loads(self.command("stats"))
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self._child.stdin is not None
            self._child.stdin.close()
        try:
            self._child.wait(10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait(10)

    def __enter__(self) -> Instances:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RawEndpoint:
    """An async endpoint: ``GET /`` on one instance over pooled keep-alive streams;
    returns the body.  Refused connections raise :class:`Refused` (a connection
    failure), statuses >= 500 :class:`StatusFailure`."""

    def __init__(self, instance: str, path: str = "/") -> None:
        host, _, port = instance.rpartition(":")
        self._host, self._port = host, int(port)
        self._request = f"GET {path} HTTP/1.1\r\nHost: {instance}\r\n\r\n".encode()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def __call__(self, request: Any) -> str:
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            try:
                reader, writer = await asyncio.open_connection(self._host, self._port)
            except OSError as error:
                raise Refused(str(error)) from error
        try:
            writer.write(self._request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.append((reader, writer))
        if status >= 500:
            raise StatusFailure(status)
        return body.decode()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()


# --- the child process ------------------------------------------------------------------


class _Instance:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.cold_until = 0.0
        self.cold_factor = 1.0
        self.health = 200
        self.capacity: asyncio.Semaphore | None = None
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.served = 0
        self.accepted = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path == b"/health":
                    status, body = self.health, b"health"
                else:
                    delay = self.delay
                    if time.monotonic() < self.cold_until:
                        delay *= self.cold_factor
                    if self.capacity is not None:
                        async with self.capacity:
                            await asyncio.sleep(delay)
                    else:
                        await asyncio.sleep(delay)
                    self.served += 1
                    status, body = 200, str(self.port).encode()
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s"
                             % (status, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
                asyncio.CancelledError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


async def _serve(count: int, delay: float) -> None:
    instances = [_Instance(delay) for _ in range(count)]
    for instance in instances:
        instance.server = await asyncio.start_server(instance.handle, "127.0.0.1", 0)
        instance.port = instance.server.sockets[0].getsockname()[1]
    print(" ".join(f"127.0.0.1:{instance.port}" for instance in instances), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        verb, *args = line
        if verb == "stats":
            answer = json.dumps({f"127.0.0.1:{each.port}": {
                "served": each.served, "accepted": each.accepted} for each in instances})
            print(answer, flush=True)
            continue
        instance = instances[int(args[0])]
        if verb == "cold":
            instance.cold_until = time.monotonic() + float(args[1])
            instance.cold_factor = float(args[2])
        elif verb == "down" and instance.server is not None:
            instance.server.close()
            instance.server = None
            for writer in list(instance.writers):
                writer.transport.abort()
        elif verb == "up" and instance.server is None:
            instance.server = await asyncio.start_server(
                instance.handle, "127.0.0.1", instance.port, reuse_address=True)
        elif verb == "delay":
            instance.delay = float(args[1])
        elif verb == "capacity":
            size = int(args[1])
            instance.capacity = asyncio.Semaphore(size) if size else None
        elif verb == "health":
            instance.health = int(args[1])
        print("ok", flush=True)
    for instance in instances:  # stdin closed: the parent is done
        if instance.server is not None:
            instance.server.close()
        for writer in list(instance.writers):
            writer.transport.abort()


def main(argv: list[str]) -> None:
    asyncio.run(_serve(int(argv[0]), float(argv[1])))


@contextlib.contextmanager
def served(count: int, delay: float = 0.005) -> Iterator[Instances]:
    with Instances(count, delay) as instances:
        yield instances


if __name__ == "__main__":
    main(sys.argv[1:])
