"""A rolling restart under load, against a real registry: the proof of :mod:`kitsd.serve`.

``python -m kitsd.serve.rolling instance --registry URL --service S --port P --mode M``
runs one instance: a small raw ASGI app under uvicorn (``GET /work``, ``POST /order``
logging each order id it handles, ``/healthz``), registered in Consul
(``consul://host:port``), etcd (``etcd://host:port``) or ZooKeeper (``zk://host:port``).
``--mode drain`` serves it through :func:`kitsd.serve.asgi` (register when ready,
drain on SIGTERM); ``--mode naive`` is what a hand-written service does: the
registrar entered in the app's lifespan, so it deregisters as the server stops.

:func:`rolling_restart` starts ``instances`` of them, calls them through
``kitsd.Transport`` from ``clients`` threads (GETs, and POSTs that are never
retried once sent), measures a steady period, then restarts every instance in turn
(SIGTERM -- or SIGKILL -- then a new one on a new port, registered) and reports
failed calls, POSTs handled twice, p99 during the restart against steady state, and
seconds per instance restart.  Needs the ``serve`` extra (uvicorn).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kitsd.core import observe

__all__ = ["RollingReport", "rolling_restart"]

MODES = ("drain", "naive")


# -- the instance ---------------------------------------------------------------------------


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _registrar(registry: str, service: str, host: str, port: int,
               healthz: str | None) -> tuple[Any, Callable[[], None]]:
    """The registrar for ``registry`` (a URL naming the scheme and address) and a closer."""
    url = urllib.parse.urlsplit(registry)
    instance = f"{host}:{port}"
    if url.scheme == "consul":
        from kitsd.sd import consul
        client = consul.connect(url.netloc)
        registrar = consul.ConsulRegistrar(
            client, service, host, port, ttl=10.0, http=healthz,
            http_interval=1.0, http_timeout=1.0)
        return registrar, client.close
    if url.scheme == "etcd":
        from kitsd.sd import etcd
        etcd_client = etcd.connect(*_split(url.netloc))
        return (etcd.EtcdRegistrar(etcd_client, f"/kitsd-rolling/{service}/{instance}",
                                   instance, ttl=5.0),
                lambda: etcd.close_client(etcd_client))
    if url.scheme == "zk":
        from kitsd.sd import zk
        zk_client = zk.connect(url.netloc)
        return (zk.ZKRegistrar(zk_client, f"/kitsd-rolling/{service}", instance),
                lambda: zk.close_client(zk_client))
    raise SystemExit(f"unknown registry {registry!r} (consul://, etcd:// or zk://)")


def discovery(registry: str, service: str) -> str:
    """The ``kitsd.Transport`` discovery URL for instances registered by this module."""
    url = urllib.parse.urlsplit(registry)
    if url.scheme == "consul":
        return f"consul://{url.netloc}/{{service}}?passing=1"
    if url.scheme == "etcd":
        return f"etcd://{url.netloc}/kitsd-rolling/{{service}}/"
    return f"zk://{url.netloc}/kitsd-rolling/{{service}}"


class _App:
    """``GET /work`` and ``POST /order`` (the order id logged), each ``delay`` seconds long."""

    def __init__(self, instance: str, orders: Path, delay: float) -> None:
        self.instance = instance
        self.delay = delay
        self._orders = orders.open("a", buffering=1, encoding="utf-8")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rpartition(".")[2]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    self._orders.close()
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await asyncio.sleep(self.delay)
        if scope["method"] == "POST":
            self._orders.write(body.decode() + "\n")
        answer = json.dumps({"instance": self.instance}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})


class _Naive:
    """The hand-written way: the registrar entered around the app's lifespan."""

    def __init__(self, app: _App, registrar: Any) -> None:
        self.app = app
        self.registrar = registrar

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        await receive()
        await asyncio.to_thread(self.registrar.register)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await asyncio.to_thread(self.registrar.deregister)
        await send({"type": "lifespan.shutdown.complete"})


def instance_main(argv: Sequence[str] | None = None) -> int:
    """Run one instance until signalled (see the module docstring)."""
    import uvicorn

    import kitsd.serve

    parser = argparse.ArgumentParser(prog="python -m kitsd.serve.rolling instance")
    parser.add_argument("--registry", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="drain")
    parser.add_argument("--orders", required=True, help="file each handled order id goes to")
    parser.add_argument("--delay", type=float, default=0.01)
    parser.add_argument("--drain", type=float, default=10.0)
    parser.add_argument("--margin", type=float, default=1.0)
    args = parser.parse_args(argv)
    host = "127.0.0.1"
    instance = f"{host}:{args.port}"
    healthz = f"http://{instance}/healthz" if args.mode == "drain" else None
    registrar, close = _registrar(args.registry, args.service, host, args.port, healthz)
    app: Any = _App(instance, Path(args.orders), args.delay)
    if args.mode == "drain":
        app = kitsd.serve.asgi(app, registrar, drain=args.drain, margin=args.margin)
    else:
        app = _Naive(app, registrar)
    try:
        uvicorn.run(app, host=host, port=args.port, log_level="warning", lifespan="on",
                    timeout_graceful_shutdown=10)
    finally:
        close()
    return 0


# -- the harness ----------------------------------------------------------------------------


@dataclass
class RollingReport:
    """One rolling restart's figures (seconds for times)."""

    registry: str
    mode: str
    kill: str
    gets: int = 0
    posts: int = 0
    failed_gets: int = 0
    failed_posts: int = 0
    duplicated_posts: int = 0
    failed_attempts: int = 0
    ejections: int = 0
    truncated_gets: int = 0  # of failed_gets: the response began, its body was cut off
    p99_steady: float | None = None
    p99_restart: float | None = None
    restart_seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Calls that failed, GET and POST."""
        return self.failed_gets + self.failed_posts

    def to_json(self) -> dict[str, Any]:
        """A plain dict (for ``--json`` and logs)."""
        return asdict(self)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class _Instance:
    def __init__(self, registry: str, service: str, mode: str, orders: Path,
                 drain: float, margin: float) -> None:
        self.port = _free_port()
        self.instance = f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen(  # noqa: S603 - our own module, by design
            [sys.executable, "-m", "kitsd.serve.rolling", "instance", "--registry", registry,
             "--service", service, "--port", str(self.port), "--mode", mode,
             "--orders", str(orders / f"{self.port}.log"), "--drain", str(drain),
             "--margin", str(margin)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self, sig: signal.Signals, timeout: float = 60.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


class _Load:
    """Client threads calling the service through ``kitsd.Transport``: GETs and POSTs."""

    def __init__(self, discover: str, service: str, clients: int, pause: float) -> None:
        import kitsd

        self.transport = kitsd.Transport(discover)
        self.client = httpx.Client(transport=self.transport, base_url=f"http://{service}",
                                   timeout=5.0)
        self.service = service
        self.pause = pause
        self.ids = itertools.count()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (end time, latency)
        self.gets = self.posts = self.failed_gets = self.failed_posts = 0
        self.errors: list[str] = []
        self.failed_attempts = self.ejections = self.truncated_gets = 0
        self.threads = [threading.Thread(target=self._work, args=(n,), daemon=True,
                                         name=f"rolling-load-{n}") for n in range(clients)]

    def start(self) -> None:
        # Calls first, alone, until one succeeds: they set up the service's watch and
        # balancer.  (A zk:// transport's first calls sometimes see no endpoints for a
        # while though the registry lists them: a cold-start race outside serving.)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.client.get("/work").status_code == 200:
                    break
            except Exception:  # noqa: BLE001, S110 - not yet: try again
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the service never answered through kitsd.Transport")
            time.sleep(0.05)
        observe.add_observer(self._observe)
        for thread in self.threads:
            thread.start()

    def _observe(self, observation: object) -> None:
        if isinstance(observation, observe.AttemptFinished):
            if observation.outcome != observe.SUCCESS:
                with self.lock:
                    self.failed_attempts += 1
        elif isinstance(observation, observe.InstanceEjected):
            with self.lock:
                self.ejections += 1

    def _work(self, number: int) -> None:
        post = number % 2 == 1
        while not self.stopping.is_set():
            start = time.monotonic()
            try:
                if post:
                    with self.lock:
                        order = f"{os.getpid()}-{next(self.ids)}"
                    response = self.client.post("/order", content=order.encode())
                else:
                    response = self.client.get("/work")
                ok = response.status_code == 200
                error = f"HTTP {response.status_code}"
            except Exception as failure:  # noqa: BLE001 - counted and reported
                ok, error = False, f"{type(failure).__name__}: {failure}"
                if not post and _truncated(failure):
                    with self.lock:
                        self.truncated_gets += 1
            end = time.monotonic()
            with self.lock:
                if post:
                    self.posts += 1
                    self.failed_posts += not ok
                else:
                    self.gets += 1
                    self.failed_gets += not ok
                if ok:
                    self.samples.append((end, end - start))
                elif len(self.errors) < 20:
                    self.errors.append(("POST " if post else "GET ") + error[:200])
            self.stopping.wait(self.pause)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()
        observe.remove_observer(self._observe)
        self.client.close()

    def latencies(self, start: float, end: float) -> list[float]:
        with self.lock:
            return [latency for when, latency in self.samples if start <= when < end]


def _truncated(error: BaseException) -> bool:
    """Whether ``error`` cut off a response whose headers had arrived (the transport had
    handed it over: nothing can resend it)."""
    return isinstance(error, httpx.RemoteProtocolError) and "complete message body" in str(error)


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def _watching(discover: str, service: str) -> Iterator[Callable[[], set[str]]]:
    from kitsd import sd

    current: set[str] = set()
    instancer = sd.instancer_from_url(discover.replace("{service}", service))

    def on_event(event: Any) -> None:
        current.clear()
        current.update(event.instances)

    instancer.subscribe(on_event)
    try:
        yield lambda: set(current)
    finally:
        instancer.unsubscribe(on_event)
        instancer.stop()


def rolling_restart(
    registry: str, *, mode: str = "drain", kill: str = "SIGTERM", instances: int = 3,
    clients: int = 8, pause: float = 0.0, steady: float = 2.0, drain: float = 10.0,
    margin: float = 1.0, service: str | None = None, say: Callable[[str], None] = lambda _: None,
) -> RollingReport:
    """Run ``instances`` instances registered in ``registry``, load them, restart each in
    turn with ``kill`` (``"SIGTERM"`` or ``"SIGKILL"``); the figures."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    sig = signal.Signals[kill]
    service = service or f"rolling-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    discover = discovery(registry, service)
    report = RollingReport(registry=urllib.parse.urlsplit(registry).scheme, mode=mode, kill=kill)
    with tempfile.TemporaryDirectory(prefix="kitsd-rolling-") as tmp, \
            _watching(discover, service) as view:
        orders = Path(tmp)
        running: list[_Instance] = []
        load: _Load | None = None
        try:
            running.extend(_Instance(registry, service, mode, orders, drain, margin)
                           for _ in range(instances))
            _wait(lambda: view() == {i.instance for i in running}, 60, "instances registered")
            say(f"{instances} instances registered; load for {steady:g}s")
            load = _Load(discover, service, clients, pause)
            load.start()
            time.sleep(steady)
            restart_start = time.monotonic()
            for index in range(instances):
                old = running[index]
                began = time.monotonic()
                old.stop(sig)
                running[index] = new = _Instance(registry, service, mode, orders, drain, margin)
                _wait(lambda new=new: new.instance in view(), 60,  # type: ignore[misc]
                      f"{new.instance} registered")
                report.restart_seconds.append(round(time.monotonic() - began, 3))
                say(f"restarted {old.instance} -> {new.instance} in "
                    f"{report.restart_seconds[-1]:.2f}s")
            restart_end = time.monotonic()
            time.sleep(0.5)
        finally:
            if load is not None:
                load.stop()
            for member in running:
                member.stop(signal.SIGTERM)
        if load is not None:
            report.gets, report.posts = load.gets, load.posts
            report.failed_gets, report.failed_posts = load.failed_gets, load.failed_posts
            report.errors = load.errors
            report.failed_attempts, report.ejections = load.failed_attempts, load.ejections
            report.truncated_gets = load.truncated_gets
            report.p99_steady = _percentile(load.latencies(0, restart_start), 99)
            report.p99_restart = _percentile(load.latencies(restart_start, restart_end), 99)
        seen: Counter[str] = Counter()
        for log in orders.glob("*.log"):
            seen.update(line for line in log.read_text().splitlines() if line)
        report.duplicated_posts = sum(1 for count in seen.values() if count > 1)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``instance ...`` runs one instance; ``run REGISTRY [--mode] [--kill]`` one rolling
    restart, printed as JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["instance"]:
        return instance_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m kitsd.serve.rolling run")
    parser.add_argument("registry")
    parser.add_argument("--mode", choices=MODES, default="drain")
    parser.add_argument("--kill", choices=("SIGTERM", "SIGKILL"), default="SIGTERM")
    parser.add_argument("--instances", type=int, default=3)
    args = parser.parse_args(argv[1:] if argv[:1] == ["run"] else argv)
    report = rolling_restart(args.registry, mode=args.mode, kill=args.kill,
                             instances=args.instances, say=lambda line: print(line, flush=True))
    print(json.dumps(report.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
