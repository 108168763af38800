"""kitsd's pytest plugin: real etcd and Consul servers, a memory registry and fault helpers
for your own tests.

Installed with ``pip install 'kitsd[testing]'`` it is found through the ``pytest11``
entry point.  Importing it is cheap and starts nothing: a server starts the first
time a test asks for its fixture, and stops when the fixture's scope ends.

Fixtures
--------
``kitsd_etcd``            one etcd member (session), or ``KITSD_ETCD_ENDPOINT``'s server
``kitsd_etcd_cluster``    a 3-member etcd cluster (module), every member healthy at the
                          start of each test
``kitsd_consul``          a Consul ``-dev`` agent (session), or ``KITSD_CONSUL_HTTP_ADDR``'s
``kitsd_consul_cluster``  a 3-server Consul cluster (module), every server up and a
                          leader elected at the start of each test
``kitsd_kube``            a kube-apiserver on its own etcd (session): ``.server``,
                          ``.kubeconfig(path)``, ``.admin()`` to write namespaces,
                          EndpointSlices and RBAC grants, ``.apiserver`` to kill or
                          restart (``kitsd servers install kube-apiserver``)
``kitsd_memory_registry`` a fresh :class:`sd.MemoryRegistry`
``kitsd_faults``          :class:`Faults`: kill / restart a member, kill the leader,
                          partition the client from a server; undone after the test

Servers run on free loopback ports in a temporary directory (``compose``'s
launchers, shipped in the package); binaries default to ``/usr/bin/etcd`` and
``/usr/local/bin/consul`` (``KITSD_ETCD_BINARY`` / ``KITSD_CONSUL_BINARY``).  A
fixture that needs a binary that is missing fails, saying how to get one
(``kitsd servers install etcd|consul|zookeeper|kube-apiserver``, from the wheel too).
No server outlives the test run, even one killed with SIGTERM or SIGKILL
(:mod:`kitsd.compose.reaper`).  The
cluster fixtures always start their own servers (the ``*_ENDPOINT`` /
``*_HTTP_ADDR`` variables name single servers); a fault needs a server we
started (an external one has no ``kill()``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kitsd.compose.consul import ConsulCluster, ConsulDevAgent, ExternalConsul
    from kitsd.compose.etcd import EtcdCluster, EtcdMember, ExternalEtcd
    from kitsd.compose.kubernetes import KubeAPIServer
    from kitsd.compose.proxy import BlackHoleProxy
    from kitsd.sd.memory import MemoryRegistry

__all__ = ["Faults"]


def _fail_missing(error: BaseException) -> None:
    pytest.fail(f"kitsd: {error}", pytrace=False)


class Faults:
    """Fault helpers for one test; every fault is undone when the test ends.

    * :meth:`kill` / :meth:`restart` / :meth:`stop` a member (an :class:`EtcdMember`, a
      :class:`ConsulAgent`, anything with ``kill()``/``restart()``);
    * :meth:`kill_leader` kills a cluster's leader and returns it;
    * :meth:`rolling_restart` restarts members one after another (a rolling deploy);
    * :meth:`partition` gives a proxy address to connect a client through, which
      :meth:`BlackHoleProxy.stall` cuts off (connections stay open, bytes stop) and
      :meth:`BlackHoleProxy.resume` restores.

    Not thread-safe.
    """

    def __init__(self) -> None:
        self._hurt: list[Any] = []
        self._proxies: list[BlackHoleProxy] = []

    def kill(self, member: Any) -> Any:
        """SIGKILL ``member`` (a crash); it is restarted after the test if still down."""
        self._hurt.append(member)
        member.kill()
        return member

    def stop(self, member: Any) -> Any:
        """SIGTERM ``member``; restarted after the test if still down."""
        self._hurt.append(member)
        member.stop()
        return member

    def restart(self, member: Any) -> Any:
        """Restart ``member`` on its ports (and data) and wait until it serves."""
        member.restart()
        return member

    def rolling_restart(
        self, members: Sequence[Any], *, between: Callable[[Any], object] | None = None,
        kill: bool = False,
    ) -> list[float]:
        """Restart each of ``members`` in turn -- SIGTERM (``kill=True``: SIGKILL), wait for
        it to exit, start it again on its ports and wait until it serves -- calling
        ``between(member)`` after each (e.g. wait until your client sees it again).
        Returns the seconds each took; any member still down is restarted after the test."""
        took = []
        for member in members:
            self._hurt.append(member)
            began = time.monotonic()
            if kill:
                member.kill()
            else:
                member.stop()
            member.restart()
            if between is not None:
                between(member)
            took.append(time.monotonic() - began)
        return took

    def kill_leader(self, cluster: EtcdCluster | ConsulCluster) -> Any:
        """SIGKILL the cluster's current leader and return it."""
        return self.kill(cluster.leader())

    def partition(self, address: str) -> BlackHoleProxy:
        """A :class:`~compose.proxy.BlackHoleProxy` to ``address`` (``host:port``): connect
        the client to ``proxy.endpoint``; ``proxy.stall()`` partitions it."""
        from kitsd.compose.proxy import BlackHoleProxy

        host, _, port = address.rpartition(":")
        proxy = BlackHoleProxy(host.strip("[]"), int(port))
        self._proxies.append(proxy)
        return proxy

    def undo(self) -> None:
        """Close every proxy and restart every member still down."""
        for proxy in self._proxies:
            proxy.close()
        self._proxies.clear()
        for member in self._hurt:
            if not member.running:
                member.restart()
        self._hurt.clear()


@pytest.fixture(scope="session")
def kitsd_etcd() -> Iterator[EtcdMember | ExternalEtcd]:
    """One etcd member for the session (``.endpoint``, ``.host``, ``.client_port``), or
    the server named by ``KITSD_ETCD_ENDPOINT``."""
    from kitsd.compose.etcd import EtcdCluster, single_member

    try:
        server = single_member()
    except FileNotFoundError as error:
        _fail_missing(error)
        raise
    try:
        yield server.members[0] if isinstance(server, EtcdCluster) else server
    finally:
        server.close()


@pytest.fixture(scope="module")
def _kitsd_etcd_cluster() -> Iterator[EtcdCluster]:
    from kitsd.compose.etcd import EtcdCluster

    try:
        cluster = EtcdCluster(3)
    except FileNotFoundError as error:
        _fail_missing(error)
        raise
    with cluster:
        yield cluster


@pytest.fixture
def kitsd_etcd_cluster(_kitsd_etcd_cluster: EtcdCluster) -> EtcdCluster:
    """A 3-member etcd cluster (``.endpoints``, ``.members``, ``.leader()``), shared by the
    test module, with every member running and a leader elected."""
    _kitsd_etcd_cluster.heal()
    _kitsd_etcd_cluster.leader()
    return _kitsd_etcd_cluster


@pytest.fixture(scope="session")
def kitsd_consul() -> Iterator[ConsulDevAgent | ExternalConsul]:
    """A Consul ``-dev`` agent for the session (``.http_addr``), or the agent named by
    ``KITSD_CONSUL_HTTP_ADDR``."""
    from kitsd.compose.consul import dev_agent

    try:
        agent = dev_agent(name="kitsd-plugin")
    except FileNotFoundError as error:
        _fail_missing(error)
        raise
    with agent:
        yield agent


@pytest.fixture(scope="module")
def _kitsd_consul_cluster() -> Iterator[ConsulCluster]:
    from kitsd.compose.consul import ConsulCluster

    try:
        cluster = ConsulCluster(3)
    except FileNotFoundError as error:
        _fail_missing(error)
        raise
    with cluster:
        yield cluster


@pytest.fixture
def kitsd_consul_cluster(_kitsd_consul_cluster: ConsulCluster) -> ConsulCluster:
    """A 3-server Consul cluster (``.agents``, ``.leader()``, ``.followers()``; each agent's
    ``.http_addr``), shared by the test module, every server up and a leader elected."""
    _kitsd_consul_cluster.start()
    _kitsd_consul_cluster.leader(timeout=30)
    return _kitsd_consul_cluster


@pytest.fixture(scope="session")
def kitsd_kube() -> Iterator[KubeAPIServer]:
    """A kube-apiserver (v1.37.2, on an etcd of its own) for the session: ``.server``,
    ``.ca_file``, ``.token(user)``, ``.kubeconfig(path, user=...)``, ``.admin()`` (a
    client that writes namespaces, EndpointSlices and RBAC grants), ``.apiserver`` to
    kill or restart.  There is no controller-manager: tests write their EndpointSlices."""
    from kitsd.compose.kubernetes import KubeAPIServer

    try:
        server = KubeAPIServer()
    except FileNotFoundError as error:
        _fail_missing(error)
        raise
    with server:
        yield server


@pytest.fixture
def kitsd_memory_registry() -> MemoryRegistry:
    """A fresh in-process :class:`sd.MemoryRegistry`."""
    from kitsd import sd
    return sd.MemoryRegistry()


@pytest.fixture
def kitsd_faults() -> Iterator[Faults]:
    """:class:`Faults` for this test, undone after it."""
    faults = Faults()
    try:
        yield faults
    finally:
        faults.undo()
