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
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from compose.process import free_ports, stop_process, wait_until

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
_HOST = "127.0.0.1"
_START_TIMEOUT = 20.0


class EtcdMember:
    """One etcd process of an :class:`EtcdCluster`.

    ``endpoint`` is its ``host:port`` client address.  :meth:`stop`,
    :meth:`kill` and :meth:`restart` keep the ports and the data directory.
    """

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
        self.name = name
        self.host = _HOST
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = workdir / f"{name}.data"
        self.log_path = workdir / f"{name}.log"
        self._initial_cluster = initial_cluster
        self._cluster_token = cluster_token
        self._extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    can_restart = True
    """A member we started can be stopped, killed and restarted."""

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client listener."""
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        """``http://host:port`` of the client listener."""
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        """``http://host:port`` of the peer listener."""
        return f"http://{self.host}:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        """The process id while running, else ``None``."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def _command(self) -> list[str]:
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

    def start(self) -> None:
        """Spawn the process (does not wait for health); a no-op while running."""
        if self.running:
            return
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        self._log.write(f"\n==== kitsd: starting {self.name} ====\n".encode())
        self._log.flush()
        self._process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the test terminal must not reach etcd first
        )

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

    def wait_healthy(self, timeout: float = _START_TIMEOUT) -> None:
        """Block until healthy; raise ``RuntimeError`` with the log tail if it is not."""
        try:
            wait_until(self._healthy_or_dead, timeout, f"etcd member {self.name} to be healthy")
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n--- {self.log_path} ---\n{self.log_tail()}") from error
        if not self.running:
            raise RuntimeError(
                f"etcd member {self.name} exited with {self._exit_code()}\n"
                f"--- {self.log_path} ---\n{self.log_tail()}"
            )

    def _healthy_or_dead(self) -> bool:
        return not self.running or self.healthy()

    def _exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

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

    def stop(self) -> None:
        """Stop with SIGTERM and reap; idempotent."""
        if self._process is not None:
            stop_process(self._process)

    def kill(self) -> None:
        """Kill with SIGKILL (a crash) and reap; idempotent."""
        if self._process is not None:
            stop_process(self._process, kill=True)

    def restart(self, *, wait: bool = True) -> None:
        """Stop (if running) and start again on the same ports and data directory."""
        self.stop()
        self.start()
        if wait:
            self.wait_healthy()

    def close(self) -> None:
        """Kill the process and close the log file."""
        self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of this member's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EtcdMember({self.name!r}, {self.endpoint}, {state})"


class EtcdCluster:
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
        self._tmp = tempfile.TemporaryDirectory(prefix="kitsd-etcd-", dir=tmp_root)
        workdir = Path(self._tmp.name)
        ports = free_ports(2 * size)
        names = [f"m{index}" for index in range(size)]
        initial = ",".join(
            f"{name}=http://{_HOST}:{ports[2 * index + 1]}" for index, name in enumerate(names)
        )
        token = f"kitsd-{os.getpid()}-{time.monotonic_ns()}"
        self.members = [
            EtcdMember(
                name,
                client_port=ports[2 * index],
                peer_port=ports[2 * index + 1],
                workdir=workdir,
                initial_cluster=initial,
                cluster_token=token,
                extra_args=extra_args,
            )
            for index, name in enumerate(names)
        ]
        self._closed = False
        if start:
            self.start()

    @property
    def workdir(self) -> Path:
        """The temporary directory holding data directories and logs."""
        return Path(self._tmp.name)

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` of every member's client listener."""
        return [member.endpoint for member in self.members]

    @property
    def endpoint(self) -> str:
        """The first member's ``host:port``."""
        return self.members[0].endpoint

    can_restart = True
    """Members of a cluster we started can be stopped, killed and restarted."""

    def start(self) -> None:
        """Start every member (together: static bootstrap needs a quorum) and wait for health."""
        try:
            for member in self.members:
                member.start()
            for member in self.members:
                member.wait_healthy()
        except BaseException:
            self.close()
            raise

    def heal(self) -> None:
        """Start any member that is not running and wait until all are healthy."""
        for member in self.members:
            if not member.running:
                member.start()
        for member in self.members:
            member.wait_healthy()

    def stop(self) -> None:
        """Stop every member with SIGTERM (data directories stay for :meth:`restart`)."""
        for member in self.members:
            member.stop()

    def kill(self) -> None:
        """Kill every member with SIGKILL (data directories stay for :meth:`restart`)."""
        for member in self.members:
            member.kill()

    def restart(self) -> None:
        """Stop every member, start them again on the same ports and data, wait for health."""
        self.stop()
        self.heal()

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

    def log_tails(self, lines: int = 40) -> str:
        """The end of every member's log, for a failure message."""
        return "\n".join(
            f"--- {member.name} ({member.log_path}) ---\n{member.log_tail(lines)}"
            for member in self.members
        )

    def close(self) -> None:
        """Kill every member and remove the temporary directory; idempotent."""
        if self._closed:
            return
        self._closed = True
        for member in self.members:
            member.close()
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EtcdCluster({self.members!r})"


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
