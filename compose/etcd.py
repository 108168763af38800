"""Real etcd servers on loopback: one member or a static three-member cluster.

:class:`EtcdCluster` starts ``/usr/bin/etcd`` (3.4) members on free
``127.0.0.1`` client and peer ports, each with its data directory and log file
inside one :class:`tempfile.TemporaryDirectory`, and waits until every member
answers ``/health``.  Members can be stopped (SIGTERM), killed (SIGKILL) and
restarted on the same ports with the same data directory, which is how the
integration tests simulate an etcd restart, a crash and a leader change.
Leaving the context manager (or calling :meth:`EtcdCluster.close`) kills every
member still running and removes the temporary directory: nothing is left
behind.

etcd's own logs stay in the temporary directory; :meth:`EtcdMember.log_tail`
returns the end of one, and a member that fails to start raises an error that
carries it, so logs are shown only when something went wrong.

Using a server you already run
------------------------------
Set ``KITSD_ETCD_ENDPOINT=host:port`` and :func:`single_member` returns an
:class:`ExternalEtcd` for that server instead of starting one.  An external
server cannot be stopped, killed or restarted by us, so tests that need that
must skip (``ExternalEtcd.can_restart`` is ``False``).  Tests write under unique
key prefixes and do not clean a shared server beyond their own keys, but the
compaction test compacts the server's history.

Not thread-safe: drive a cluster from one thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from compose.process import LOOPBACK, ServerGroup, ServerProcess, free_ports, wait_until

__all__ = [
    "ENDPOINT_ENV",
    "ETCD_BINARY",
    "EtcdCluster",
    "EtcdMember",
    "ExternalEtcd",
    "single_member",
]

ENDPOINT_ENV = "KITSD_ETCD_ENDPOINT"
"""Environment variable naming an existing etcd (``host:port``) to use instead of starting one."""

ETCD_BINARY = os.environ.get("KITSD_ETCD_BINARY", "/usr/bin/etcd")
"""The etcd server binary (``KITSD_ETCD_BINARY`` overrides ``/usr/bin/etcd``)."""
_START_TIMEOUT = 20.0


class EtcdMember(ServerProcess):
    """One etcd process of an :class:`EtcdCluster`.

    ``endpoint`` is its ``host:port`` client address.  :meth:`stop`,
    :meth:`kill` and :meth:`restart` keep the ports and the data directory.
    """

    kind = "etcd member"
    start_timeout = _START_TIMEOUT

    def __init__(
        self,
        name: str,
        *,
        client_port: int,
        peer_port: int,
        workdir: Path,
        initial_cluster: str,
        cluster_token: str,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(name, workdir=workdir)
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = workdir / f"{name}.data"
        self._initial_cluster = initial_cluster
        self._cluster_token = cluster_token
        self._extra_args = tuple(extra_args)

    can_restart = True
    """A member we started can be stopped, killed and restarted."""

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client listener."""
        return f"{self.host}:{self.client_port}"

    address = endpoint

    @property
    def client_url(self) -> str:
        """``http://host:port`` of the client listener."""
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        """``http://host:port`` of the peer listener."""
        return f"http://{self.host}:{self.peer_port}"

    def command(self) -> list[str]:
        """The command line this member runs."""
        return [
            ETCD_BINARY,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self._initial_cluster,
            "--initial-cluster-token", self._cluster_token,
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-outputs", "stderr",
            *self._extra_args,
        ]

    def healthy(self) -> bool:
        """Whether ``/health`` answers ``{"health": "true"}`` (needs a leader)."""
        if not self.running:
            return False
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1.0) as answer:  # noqa: S310 - our own http:// URL
                body = json.loads(answer.read())
        except (OSError, ValueError):
            return False
        return str(body.get("health")) == "true"

    ready = healthy

    def wait_healthy(self, timeout: float = _START_TIMEOUT) -> None:
        """Block until healthy; raise ``RuntimeError`` with the log tail if it is not."""
        self.wait_ready(timeout)

    def status(self) -> dict[str, object]:
        """The member's ``Maintenance.Status`` answer (JSON gateway); raises ``OSError`` if down."""
        request = urllib.request.Request(  # noqa: S310 - our own http:// URL
            f"{self.client_url}/v3/maintenance/status", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=2.0) as answer:  # noqa: S310 - our own http:// URL
            result: dict[str, object] = json.loads(answer.read())
        return result

    def member_id(self) -> str:
        """This member's id (decimal string), from its status."""
        header = self.status().get("header")
        if not isinstance(header, dict):
            raise TypeError(f"unexpected status answer from {self.endpoint}: {header!r}")
        return str(header["member_id"])


class EtcdCluster(ServerGroup[EtcdMember]):
    """``size`` etcd members bootstrapped statically (``--initial-cluster``).

    ``EtcdCluster(1)`` is a single member.  Starts on construction (or on
    ``__enter__``); raises ``RuntimeError`` carrying the log tails if a member
    does not become healthy.  ``close()`` leaves no process and no directory.
    """

    def __init__(
        self,
        size: int = 1,
        *,
        extra_args: Sequence[str] = (),
        start: bool = True,
        tmp_root: str | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one member, not {size}")
        if not Path(ETCD_BINARY).exists() and shutil.which(ETCD_BINARY) is None:
            raise FileNotFoundError(f"etcd binary not found at {ETCD_BINARY}")
        super().__init__("kitsd-etcd-", tmp_root)
        ports = free_ports(2 * size)
        names = [f"m{index}" for index in range(size)]
        initial = ",".join(
            f"{name}=http://{LOOPBACK}:{ports[2 * index + 1]}" for index, name in enumerate(names)
        )
        token = f"kitsd-{os.getpid()}-{time.monotonic_ns()}"
        self.members = [
            EtcdMember(
                name,
                client_port=ports[2 * index],
                peer_port=ports[2 * index + 1],
                workdir=self.workdir,
                initial_cluster=initial,
                cluster_token=token,
                extra_args=extra_args,
            )
            for index, name in enumerate(names)
        ]
        if start:
            self._start_or_close()

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` of every member's client listener."""
        return [member.endpoint for member in self.members]

    @property
    def endpoint(self) -> str:
        """The first member's ``host:port``."""
        return self.members[0].endpoint

    def heal(self) -> None:
        """Start any member that is not running and wait until all are healthy."""
        self.start()

    def leader(self, timeout: float = 10.0) -> EtcdMember:
        """The current leader, waiting up to ``timeout`` seconds for one to be elected."""
        found: list[EtcdMember] = []

        def probe() -> bool:
            by_id = {}
            leaders = set()
            for member in self.members:
                if not member.running:
                    continue
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    status = member.status()
                    by_id[member.member_id()] = member
                    if str(status.get("leader", "0")) != "0":
                        leaders.add(str(status["leader"]))
            if len(leaders) != 1:
                return False
            leader = by_id.get(leaders.pop())
            if leader is None:
                return False
            found[:] = [leader]
            return True

        try:
            wait_until(probe, timeout, "an etcd leader")
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n{self.log_tails()}") from error
        return found[0]


class ExternalEtcd:
    """An etcd someone else runs (``KITSD_ETCD_ENDPOINT``): address only, no process control."""

    can_restart = False
    """We cannot stop, kill or restart a server we did not start."""

    def __init__(self, endpoint: str) -> None:
        host, sep, port = endpoint.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{ENDPOINT_ENV} must be host:port, not {endpoint!r}")
        self.host = host
        self.client_port = int(port)

    @property
    def endpoint(self) -> str:
        """``host:port`` of the server."""
        return f"{self.host}:{self.client_port}"

    @property
    def endpoints(self) -> list[str]:
        """A one-element list with :attr:`endpoint`."""
        return [self.endpoint]

    def log_tails(self, lines: int = 40) -> str:
        """External servers' logs are not ours to read."""
        return f"(external etcd at {self.endpoint}: logs not available)"

    def close(self) -> None:
        """Nothing to stop."""

    def __repr__(self) -> str:
        return f"ExternalEtcd({self.endpoint!r})"


def single_member(*, extra_args: Sequence[str] = ()) -> EtcdCluster | ExternalEtcd:
    """A one-member :class:`EtcdCluster`, or an :class:`ExternalEtcd` if ``KITSD_ETCD_ENDPOINT``
    is set."""
    external = os.environ.get(ENDPOINT_ENV, "").strip()
    if external:
        return ExternalEtcd(external)
    return EtcdCluster(1, extra_args=extra_args)
