"""One chaos instance: a local HTTP server that registers itself with kitsd.

``python -m kitsd.chaos_instance --port P [--etcd h:p,... --prefix /p/ | --consul h:p
--service NAME]`` serves ``GET /chaos`` (``{"instance": "host:port"}``) and
``GET /health``, and keeps itself registered with an :class:`sd.etcd.EtcdRegistrar`
or :class:`sd.consul.ConsulRegistrar` (``--ttl`` seconds) while it lives.  It runs
as a process of its own so ``kitsd chaos`` can SIGKILL it (a crash), SIGSTOP it (a
hang: it keeps its sockets but neither answers nor heartbeats) and SIGCONT it.
SIGUSR1 makes every answer ``--slow`` seconds late, SIGUSR2 fast again; SIGTERM
deregisters and exits -- with ``--drain SECONDS`` through :class:`kitsd.serve.Service`
(deregister, keep serving until the registry shows it gone plus a margin, ``/health``
answering 503 meanwhile, then exit; a second SIGTERM exits at once).  The compose
files run the same command in containers (``--advertise`` names the address others
reach it at).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

__all__ = ["main"]


class _State:
    def __init__(self, instance: str, slow: float) -> None:
        self.instance = instance
        self.slow = slow
        self.slow_now = False
        self.registered = False
        self.service: Any = None  # the kitsd.serve.Service with --drain


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restart binds the same port at once
    state: _State


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        status = 200
        if self.path.startswith("/health"):
            registered = state.registered
            if state.service is not None:
                registered = state.service.registered and not state.service.draining
                status = 503 if state.service.draining else 200
            body = json.dumps({"instance": state.instance, "registered": registered})
        else:
            if state.slow_now:
                time.sleep(state.slow)
            body = json.dumps({"instance": state.instance, "path": self.path})
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the chaos run prints its own report."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kitsd.chaos_instance")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--advertise", default=None,
                        help="host others reach this instance at (default: --host; 'auto': "
                             "this machine's address, as in a container)")
    parser.add_argument("--etcd", default=None, help="etcd endpoints host:port,host:port")
    parser.add_argument("--prefix", default=None, help="etcd key prefix of the service")
    parser.add_argument("--consul", default=None, help="Consul agent host:port")
    parser.add_argument("--service", default=None, help="Consul service name")
    parser.add_argument("--ttl", type=float, default=2.0, help="registration TTL seconds")
    parser.add_argument("--slow", type=float, default=0.25,
                        help="seconds each answer takes after SIGUSR1")
    parser.add_argument("--drain", type=float, default=0.0,
                        help="drain on SIGTERM for at most this many seconds (kitsd.serve)")
    return parser


class _Unregistered:
    """The registrar of an instance registered by someone else (the memory registry's
    health checks): nothing to do."""

    def __init__(self, instance: str) -> None:
        self.instance = instance

    def register(self) -> None:
        """Nothing: the chaos run's health check registers it."""

    def deregister(self) -> None:
        """Nothing: the health route's 503 deregisters it."""


def _drained(args: argparse.Namespace, state: _State, registrar: Any,
             stopping: threading.Event) -> None:
    """Register through :class:`kitsd.serve.Service` and serve until the drain is over."""
    import asyncio

    import kitsd.serve

    async def run() -> None:
        async with kitsd.serve.Service(
                registrar if registrar is not None else _Unregistered(state.instance),
                drain=args.drain, margin=min(1.0, args.drain / 2), self_check=False,
                health_path=None) as service:
            state.service = service
            service.ready()
            # set by SIGINT, or by SIGTERM handed on once the drain is over
            await asyncio.to_thread(stopping.wait)

    asyncio.run(run())


def _registrar(args: argparse.Namespace, host: str, instance: str) -> tuple[Any, Any]:
    """The registrar for the chosen registry and the client to close after it."""
    if args.etcd:
        from kitsd import sd
        if not args.prefix:
            raise SystemExit("--etcd needs --prefix")
        client = sd.etcd.connect(endpoints=args.etcd.split(","))
        etcd_registrar = sd.etcd.EtcdRegistrar(client, f"{args.prefix}{instance}", instance,
                                               ttl=args.ttl)
        return etcd_registrar, lambda: sd.etcd.close_client(client)
    if args.consul:
        from kitsd import sd
        if not args.service:
            raise SystemExit("--consul needs --service")
        consul_client = sd.consul.connect(args.consul)
        registrar = sd.consul.ConsulRegistrar(
            consul_client, args.service, host, args.port, ttl=args.ttl,
            deregister_critical_after=60.0)
        return registrar, consul_client.close
    return None, lambda: None


def main(argv: Sequence[str] | None = None) -> int:
    """Serve, register, and run until SIGTERM/SIGINT; returns the exit code."""
    args = _parser().parse_args(argv)
    host = args.advertise or args.host
    if host == "auto":
        host = socket.gethostbyname(socket.gethostname())
    instance = f"{host}:{args.port}"
    state = _State(instance, args.slow)
    server = _Server((args.host, args.port), _Handler)
    server.state = state
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGUSR1:
            state.slow_now = True
        elif signum == signal.SIGUSR2:
            state.slow_now = False
        else:
            stopping.set()

    for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    thread = threading.Thread(target=server.serve_forever, name="chaos-instance", daemon=True)
    thread.start()
    registrar, close_client = _registrar(args, host, instance)
    try:
        if args.drain > 0:
            print(f"serving {instance}", flush=True)
            _drained(args, state, registrar, stopping)
            return 0
        if registrar is not None:
            registrar.register()
        state.registered = True
        print(f"ready {instance}", flush=True)
        while not stopping.wait(1.0):
            pass
    finally:
        if registrar is not None:
            registrar.deregister()
        close_client()
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
