"""A three-server Consul cluster losing its leader (``integration``).

The registrar and the instancer talk to two different surviving servers'
agents; the leader is killed with SIGKILL.  Both must carry on: the registrar's
agent keeps its registration and syncs new ones once a leader is elected, and
the instancer (whose queries its agent forwards to the leader) reports errors
while there is none and then converges on the right set.
"""

from __future__ import annotations

import time
import uuid

import pytest

from kitsd.compose.consul import ConsulCluster
from kitsd.sd.consul import ConsulInstancer, ConsulRegistrar, connect
from kitsd.sd.event import Event
from tests.chaos import run_chaos
from tests.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_thread_leaks")]


@pytest.fixture
def cluster(kitsd_consul_cluster: ConsulCluster) -> ConsulCluster:
    """The plugin's three-server cluster (shared by the module; every server up)."""
    return kitsd_consul_cluster


def test_killing_the_leader_still_converges(
    cluster: ConsulCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    service = f"kitsd-cluster-{uuid.uuid4().hex[:8]}"
    leader = cluster.leader()
    registrar_server, watcher_server = cluster.followers()
    with connect(registrar_server.http_addr) as registrar_client, \
            connect(watcher_server.http_addr) as watcher_client:
        first = ConsulRegistrar(registrar_client, service, "127.0.0.1", 19001, ttl=2)
        second = ConsulRegistrar(registrar_client, service, "127.0.0.1", 19002, ttl=2)
        with first, ConsulInstancer(watcher_client, service) as instancer:
            events: list[Event] = []
            instancer.subscribe(events.append)
            wait_for(lambda: instancer.state == Event(("127.0.0.1:19001",)), timeout=20,
                     what="the first instance")

            leader.kill()
            killed = time.monotonic()
            second.register()  # the agent takes it at once and syncs it once there is a leader
            new_leader = cluster.leader(timeout=30)
            elected = time.monotonic() - killed
            assert new_leader in (registrar_server, watcher_server)
            wait_for(lambda: instancer.state == Event(("127.0.0.1:19001", "127.0.0.1:19002")),
                     timeout=30, what="both instances after the leader change")
            converged = time.monotonic() - killed
            second.deregister()
            wait_for(lambda: instancer.state == Event(("127.0.0.1:19001",)), timeout=20,
                     what="the removal under the new leader")
    errors = sorted({str(event.error) for event in events if event.error is not None})
    with capsys.disabled():
        print(f"\n[consul] cluster: leader killed; new leader after {elected:.2f}s; instancer "
              f"converged {converged:.2f}s after the kill; distinct errors seen: {errors}")


def test_no_call_fails_through_instance_and_leader_failures(cluster: ConsulCluster) -> None:
    """Chaos: the whole client stack over a ConsulInstancer keeps every call succeeding
    while an instance crashes, a new one arrives, and the Consul leader is killed."""
    cluster.start()  # bring back a server an earlier test killed
    leader = cluster.leader(timeout=30)
    registrar_server, watcher_server = cluster.followers()
    service = f"kitsd-chaos-{uuid.uuid4().hex[:8]}"
    with connect(registrar_server.http_addr) as registrar_client, \
            connect(watcher_server.http_addr) as watcher_client:

        def register(instance: str) -> ConsulRegistrar:
            host, port = instance.rsplit(":", 1)
            registrar = ConsulRegistrar(registrar_client, service, host, int(port), ttl=2)
            registrar.register()
            return registrar

        run_chaos(
            register=register,
            open_instancer=lambda: ConsulInstancer(watcher_client, service),
            kill_leader=leader.kill,
            after_leader_killed=lambda: cluster.leader(timeout=30),
        )
