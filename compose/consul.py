"""Real Consul agents on loopback: a dev agent, or a three-server cluster.

:class:`ConsulDevAgent` runs ``consul agent -dev`` (a single server that elects
itself at once, all state in memory) and :class:`ConsulCluster` runs ``size``
plain servers (``-server -bootstrap-expect N -retry-join ...``), each on its own
free ``127.0.0.1`` ports (HTTP, Serf LAN, Serf WAN, server RPC; DNS and gRPC
disabled) in one :class:`tempfile.TemporaryDirectory` holding data directories
and log files.  Starting waits until the agent (every server) knows the leader
and its own node is in the catalog.  Agents can be stopped (SIGTERM), killed
(SIGKILL) and restarted on the same ports.  Leaving the context manager (or
``close()``) kills every process still running and removes the temporary
directory: nothing is left behind.

A dev agent gets no ``-data-dir``: with one, Consul persists registered
services and restores them on start, and the restart tests need a restarted
dev agent to have forgotten everything, as a real agent that lost its disk.

``ConsulDevAgent(tls=True)`` also serves HTTPS with certificates it makes
(:func:`make_tls_files`, through ``consul tls ca/cert create``), requiring
client certificates there (``verify_incoming``, i.e. mTLS); its plain HTTP
port stays open for the readiness probe.  ``token=`` is sent with the
readiness probe, for agents whose ACLs deny anonymous reads.

Consul's logs stay in the temporary directory; :meth:`ConsulAgent.log_tail`
returns the end of one, and an agent that fails to start raises an error
carrying it, so logs are shown only when something went wrong.

The binary is ``/usr/local/bin/consul`` (``KITSD_CONSUL_BINARY`` overrides).
If it is missing, constructing an agent raises :class:`ConsulNotInstalled`,
whose message says how to install it (``kitsd servers install consul``).

Using an agent you already run
------------------------------
Set ``KITSD_CONSUL_HTTP_ADDR=host:port`` and :func:`dev_agent` returns an
:class:`ExternalConsul` for that agent instead of starting one.  We cannot
stop or restart an agent we did not start, so ``can_restart`` is ``False`` and
tests needing a restart skip.  Tests register services under unique names and
remove what they registered.

Not thread-safe: drive agents from one thread.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kitsd.compose.process import (
    LOOPBACK,
    ExternalServer,
    ServerGroup,
    ServerProcess,
    free_ports,
    wait_until,
)

__all__ = [
    "CONSUL_BINARY",
    "HTTP_ADDR_ENV",
    "ConsulAgent",
    "ConsulCluster",
    "ConsulDevAgent",
    "ConsulNotInstalled",
    "ExternalConsul",
    "TLSFiles",
    "dev_agent",
    "make_tls_files",
    "require_binary",
]

HTTP_ADDR_ENV = "KITSD_CONSUL_HTTP_ADDR"
"""Environment variable naming an existing agent (``host:port``) to use instead of starting one."""

CONSUL_BINARY = os.environ.get("KITSD_CONSUL_BINARY", "/usr/local/bin/consul")
_START_TIMEOUT = 30.0
_COMMON_FLAGS = (
    "-bind", LOOPBACK,
    "-client", LOOPBACK,
    "-dns-port", "-1",
    "-grpc-port", "-1",
    "-grpc-tls-port", "-1",
    "-https-port", "-1",
    "-log-level", "info",
    "-disable-host-node-id",
    "-hcl", "disable_update_check = true",
)


class ConsulNotInstalled(FileNotFoundError):
    """The Consul binary is missing; the message says how to install it."""


def require_binary() -> str:
    """The Consul binary's path; raises :class:`ConsulNotInstalled` if there is none."""
    if Path(CONSUL_BINARY).is_file() or shutil.which(CONSUL_BINARY) is not None:
        return CONSUL_BINARY
    from kitsd.compose.install import hint

    raise ConsulNotInstalled(
        f"Consul binary not found at {CONSUL_BINARY} (KITSD_CONSUL_BINARY names another): "
        + hint("consul")
    )


def _get_json(url: str, timeout: float = 1.0, token: str | None = None) -> object:
    request = urllib.request.Request(url, headers={"X-Consul-Token": token} if token else {})  # noqa: S310 - our own http:// URL
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - ditto
        return json.loads(answer.read())


@dataclass(frozen=True)
class TLSFiles:
    """A CA and the server and client certificates it signed (PEM files)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path, dc: str = "dc1") -> TLSFiles:
    """Make a CA, a server certificate (valid for ``localhost`` and ``127.0.0.1``)
    and a client certificate in ``directory`` with ``consul tls``."""
    binary = require_binary()
    for args in (["ca", "create"], ["cert", "create", "-server", "-dc", dc],
                 ["cert", "create", "-client", "-dc", dc]):
        subprocess.run([binary, "tls", *args], cwd=directory, check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return TLSFiles(
        ca=directory / "consul-agent-ca.pem",
        server_cert=directory / f"{dc}-server-consul-0.pem",
        server_key=directory / f"{dc}-server-consul-0-key.pem",
        client_cert=directory / f"{dc}-client-consul-0.pem",
        client_key=directory / f"{dc}-client-consul-0-key.pem",
    )


class ConsulAgent(ServerProcess):
    """One ``consul agent`` process.

    ``http_addr`` is its ``host:port`` HTTP address; ``server_addr`` the
    ``host:port`` Raft knows it by.  :meth:`stop`, :meth:`kill` and
    :meth:`restart` keep the ports (and the data directory, if any).
    """

    kind = "Consul agent"
    start_timeout = _START_TIMEOUT

    def __init__(
        self,
        name: str,
        *,
        workdir: Path,
        ports: Sequence[int],
        mode_flags: Sequence[str],
        data_dir: Path | None = None,
        dns_port: int | None = None,
        https_port: int | None = None,
        token: str | None = None,
    ) -> None:
        super().__init__(name, workdir=workdir)
        self.http_port, self.serf_lan_port, self.serf_wan_port, self.server_port = ports
        self.https_port = https_port
        self.data_dir = data_dir
        self.dns_port = dns_port
        """The DNS interface's port (UDP and TCP), or ``None`` when it is disabled."""
        self.token = token
        self._mode_flags = tuple(mode_flags)

    @property
    def http_addr(self) -> str:
        """``host:port`` of the HTTP API."""
        return f"{self.host}:{self.http_port}"

    address = http_addr

    @property
    def http_url(self) -> str:
        """``http://host:port`` of the HTTP API."""
        return f"http://{self.http_addr}"

    @property
    def https_addr(self) -> str:
        """``host:port`` of the HTTPS API (only with ``https_port``)."""
        if self.https_port is None:
            raise AttributeError("this agent serves no HTTPS")
        return f"{self.host}:{self.https_port}"

    @property
    def serf_lan_addr(self) -> str:
        """``host:port`` other agents join."""
        return f"{self.host}:{self.serf_lan_port}"

    @property
    def server_addr(self) -> str:
        """``host:port`` of the server RPC port (how ``/v1/status/leader`` names it)."""
        return f"{self.host}:{self.server_port}"

    def command(self) -> list[str]:
        """The command line this agent runs."""
        data = ["-data-dir", str(self.data_dir)] if self.data_dir is not None else []
        common = list(_COMMON_FLAGS)
        if self.https_port is not None:
            common[common.index("-https-port") + 1] = str(self.https_port)
        return [
            require_binary(), "agent", *self._mode_flags, *common,
            "-node", self.name,
            "-http-port", str(self.http_port),
            "-serf-lan-port", str(self.serf_lan_port),
            "-serf-wan-port", str(self.serf_wan_port),
            "-server-port", str(self.server_port),
            *data,
            # after _COMMON_FLAGS' "-dns-port -1": the last occurrence of a flag wins
            *(["-dns-port", str(self.dns_port)] if self.dns_port is not None else []),
        ]

    def leader(self) -> str:
        """The leader's server address as this agent sees it (``""`` if none); raises if down."""
        answer = _get_json(f"{self.http_url}/v1/status/leader", token=self.token)
        return answer if isinstance(answer, str) else ""

    def ready(self) -> bool:
        """Whether the agent answers, knows a leader and its node is in the catalog."""
        if not self.running:
            return False
        try:
            if not self.leader():
                return False
            node = _get_json(f"{self.http_url}/v1/catalog/node/{self.name}", token=self.token)
        except (OSError, ValueError):
            return False
        return isinstance(node, dict) and isinstance(node.get("Node"), dict)


class _Agents(ServerGroup[ConsulAgent]):
    """Consul agents in a temporary directory (see :class:`ServerGroup`)."""

    def __init__(self, prefix: str, tmp_root: str | None) -> None:
        require_binary()
        super().__init__(prefix, tmp_root)

    @property
    def agents(self) -> list[ConsulAgent]:
        """The agents, in start order (the same list as :attr:`members`)."""
        return self.members


class ConsulDevAgent(_Agents):
    """``consul agent -dev`` on free loopback ports; starts on construction.

    ``http_addr`` is what clients connect to.  :meth:`restart` (or :meth:`stop`
    then :meth:`start`) brings it back on the same ports *without* its state.
    ``extra_args`` go to ``consul agent`` as they are (``-hcl`` fragments...).
    With ``dns=True`` the agent's DNS interface listens on a free loopback port
    (``dns_addr``; UDP and TCP); otherwise it is disabled.  Raises
    :class:`ConsulNotInstalled` without the binary and ``RuntimeError`` (with the
    log tail) if it does not become ready.
    """

    def __init__(self, *, name: str = "kitsd-dev", extra_args: Sequence[str] = (),
                 start: bool = True, tmp_root: str | None = None, tls: bool = False,
                 token: str | None = None, dns: bool = False) -> None:
        super().__init__("kitsd-consul-dev-", tmp_root)
        ports = free_ports(6)
        self.tls: TLSFiles | None = None
        args = list(extra_args)
        if tls:
            self.tls = make_tls_files(self.workdir)
            args += ["-hcl", (
                f'tls {{ defaults {{ ca_file = "{self.tls.ca}"\n'
                f' cert_file = "{self.tls.server_cert}"\n key_file = "{self.tls.server_key}" }}\n'
                ' https { verify_incoming = true } }'
            )]
        self.agent = ConsulAgent(name, workdir=self.workdir, ports=ports[:4],
                                 mode_flags=("-dev", *args),
                                 https_port=ports[4] if tls else None, token=token,
                                 dns_port=ports[5] if dns else None)
        self.members = [self.agent]
        if start:
            self._start_or_close()

    @property
    def http_addr(self) -> str:
        """``host:port`` of the HTTP API."""
        return self.agent.http_addr

    @property
    def https_addr(self) -> str:
        """``host:port`` of the HTTPS API (``tls=True`` only)."""
        return self.agent.https_addr

    @property
    def node_name(self) -> str:
        """The agent's node name (``Node.Node`` in health answers)."""
        return self.agent.name

    @property
    def dns_addr(self) -> str | None:
        """``host:port`` of the DNS interface (``dns=True``), else ``None``."""
        port = self.agent.dns_port
        return None if port is None else f"{self.agent.host}:{port}"

    @property
    def running(self) -> bool:
        """Whether the agent process is alive."""
        return self.agent.running

    def __repr__(self) -> str:
        return f"ConsulDevAgent({self.agent!r})"


class ConsulCluster(_Agents):
    """``size`` Consul servers (``-bootstrap-expect size``) joined over loopback.

    Starts on construction and waits until every server agrees on a leader;
    servers keep their data directories across :meth:`ConsulAgent.restart`.
    Raises :class:`ConsulNotInstalled` without the binary and ``RuntimeError``
    (with the log tails) if the cluster does not form.
    """

    def __init__(self, size: int = 3, *, start: bool = True, tmp_root: str | None = None) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one server, not {size}")
        super().__init__("kitsd-consul-cluster-", tmp_root)
        ports = free_ports(4 * size)
        serf = [ports[4 * index + 1] for index in range(size)]
        for index in range(size):
            joins = [flag for other in range(size) if other != index
                     for flag in ("-retry-join", f"{LOOPBACK}:{serf[other]}")]
            self.members.append(ConsulAgent(
                f"s{index}",
                workdir=self.workdir,
                ports=ports[4 * index: 4 * index + 4],
                data_dir=self.workdir / f"s{index}.data",
                mode_flags=(
                    "-server", "-bootstrap-expect", str(size),
                    "-advertise", LOOPBACK,
                    "-retry-interval", "1s",
                    "-hcl", "performance { raft_multiplier = 1 }",
                    *joins,
                ),
            ))
        if start:
            self._start_or_close()

    def start(self) -> None:
        """Start every server (together: bootstrap needs all of them) and wait for a leader."""
        super().start()
        self.leader()

    def leader(self, timeout: float = 20.0) -> ConsulAgent:
        """The leader every running server agrees on, waiting up to ``timeout`` seconds."""
        found: list[ConsulAgent] = []

        def agreed() -> bool:
            views = set()
            for agent in self.agents:
                if not agent.running:
                    continue
                try:
                    views.add(agent.leader())
                except (OSError, ValueError):
                    return False  # a running server that does not answer yet
            by_addr = {agent.server_addr: agent for agent in self.agents if agent.running}
            if len(views) != 1:
                return False
            leader = by_addr.get(views.pop())
            if leader is None:
                return False
            found[:] = [leader]
            return True

        try:
            wait_until(agreed, timeout, "a Consul leader all servers agree on")
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n{self.log_tails()}") from error
        return found[0]

    def followers(self) -> list[ConsulAgent]:
        """The running servers that are not the leader."""
        leader = self.leader()
        return [agent for agent in self.agents if agent.running and agent is not leader]


class ExternalConsul(ExternalServer):
    """An agent someone else runs (``KITSD_CONSUL_HTTP_ADDR``): address only, no process control."""

    kind = "Consul agent"

    def __init__(self, http_addr: str) -> None:
        super().__init__(http_addr, HTTP_ADDR_ENV)
        self.http_addr = self.address
        self.node_name = self._node_name()

    def _node_name(self) -> str:
        try:
            answer = _get_json(f"http://{self.http_addr}/v1/agent/self", timeout=5.0)
        except (OSError, ValueError) as error:
            raise RuntimeError(f"no Consul agent answers at {self.http_addr} "
                               f"({HTTP_ADDR_ENV}): {error}") from error
        config = answer.get("Config") if isinstance(answer, dict) else None
        name = config.get("NodeName") if isinstance(config, dict) else None
        return name if isinstance(name, str) else ""


def dev_agent(*, name: str = "kitsd-dev") -> ConsulDevAgent | ExternalConsul:
    """A started :class:`ConsulDevAgent`, or an :class:`ExternalConsul` if
    ``KITSD_CONSUL_HTTP_ADDR`` is set."""
    external = os.environ.get(HTTP_ADDR_ENV, "").strip()
    if external:
        return ExternalConsul(external)
    return ConsulDevAgent(name=name)
