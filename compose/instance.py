"""Demo service instances as processes of their own: :class:`InstanceProcess`.

Each runs ``python -m kitsd.chaos_instance`` (see :mod:`kitsd.chaos_instance`) on a
fixed free loopback port, so a restart comes back at the same ``host:port``, and
registers itself with etcd or Consul.  Being processes, they can be killed
(SIGKILL), hung (:meth:`~compose.process.ServerProcess.pause`, SIGSTOP) and resumed,
and slowed (:meth:`InstanceProcess.slow`, SIGUSR1/SIGUSR2).  ``compose/demo.yaml``
runs the same command in containers.

Not thread-safe: drive instances from one thread.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from kitsd.compose.process import ServerProcess

__all__ = ["INSTANCE_MODULE", "InstanceProcess", "instance_args"]

INSTANCE_MODULE = "kitsd.chaos_instance"
"""The module every instance runs (``python -m``)."""


def instance_args(
    *,
    port: int,
    etcd: Sequence[str] = (),
    prefix: str | None = None,
    consul: str | None = None,
    service: str | None = None,
    ttl: float = 2.0,
    host: str = "127.0.0.1",
    advertise: str | None = None,
) -> list[str]:
    """The arguments of ``python -m kitsd.chaos_instance`` for one instance."""
    args = ["--host", host, "--port", str(port), "--ttl", f"{ttl:g}"]
    if advertise is not None:
        args += ["--advertise", advertise]
    if etcd:
        args += ["--etcd", ",".join(etcd), "--prefix", prefix or "/"]
    if consul is not None:
        args += ["--consul", consul, "--service", service or "demo"]
    return args



def _package_root() -> Path:
    """The directory holding the ``kitsd`` package this module was imported from (the
    checkout or ``site-packages``), found from this module's own path: one level up
    per dot of its name, symlinks left as they are (``kitsd/compose`` links to the
    checkout's ``compose/``), and without importing anything above this package."""
    return Path(__file__).parents[__name__.count(".")]

class InstanceProcess(ServerProcess):
    """One demo instance process; ready once it answers ``/health`` registered."""

    kind = "demo instance"
    start_timeout = 20.0

    def __init__(self, name: str, *, workdir: Path, args: Sequence[str], port: int) -> None:
        super().__init__(name, workdir=workdir)
        self.port = port
        self._args = tuple(args)

    @property
    def address(self) -> str:
        """``host:port`` the instance serves (and registers)."""
        return f"{self.host}:{self.port}"

    instance = address

    def command(self) -> list[str]:
        """The command line this instance runs."""
        return [sys.executable, "-m", INSTANCE_MODULE, *self._args]

    def env(self) -> dict[str, str]:
        """Ours, with the directory this ``kitsd`` was imported from first on
        ``PYTHONPATH``, so the instance runs the same code (a checkout, too)."""
        root = str(_package_root())
        path = os.environ.get("PYTHONPATH", "")
        return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, path) if p)}

    def ready(self) -> bool:
        """Whether it answers ``/health`` and has registered."""
        if not self.running:
            return False
        url = f"http://{self.address}/health"
        with urllib.request.urlopen(url, timeout=1.0) as answer:
            body = json.loads(answer.read())
        return bool(body.get("registered"))

    def slow(self, on: bool = True) -> None:
        """Make every answer late (SIGUSR1), or fast again with ``on=False`` (SIGUSR2)."""
        self.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)
