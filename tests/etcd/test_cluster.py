"""sd.etcd against a real three-member etcd cluster: member death, failover, leader change.

Measured figures are printed with a ``FIGURE`` prefix (see them with ``-s``).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kitsd import sd
from kitsd.compose.etcd import EtcdCluster, EtcdMember
from kitsd.sd.event import Event
from tests.etcd.conftest import require_etcd_binary
from tests.helpers import wait_for

pytest.importorskip("pyetcd")

pytestmark = pytest.mark.integration


def instance(index: int) -> str:
    return f"10.{index // 250}.{index % 250}.1:80"


def current_endpoint(client: Any) -> str | None:
    """The member the client talks to now (the vendor's public ``endpoint_in_use``)."""
    return client.vendor.endpoint_in_use.netloc  # type: ignore[no-any-return]


def member_at(cluster: EtcdCluster, endpoint: str | None) -> EtcdMember:
    for member in cluster.members:
        if member.endpoint == endpoint:
            return member
    raise AssertionError(f"no member at {endpoint!r}")


def retrying(call: Callable[[], object], client: Any, deadline: float) -> None:
    """Run ``call`` until it succeeds (puts and deletes are idempotent), up to ``deadline``."""
    while True:
        try:
            call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            client.recover(None)
            time.sleep(0.02)  # a retry pause for the writer, not synchronisation
        else:
            return


@pytest.fixture
def clients(etcd_cluster: EtcdCluster) -> Iterator[list[Any]]:
    """Clients built in the test, closed afterwards."""
    made: list[Any] = []
    yield made
    for client in made:
        sd.etcd.close_client(client)


def _process_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"etcd" in cmdline


def test_compose_restarts_on_the_same_ports_and_data_and_leaves_nothing_behind() -> None:
    require_etcd_binary()
    with EtcdCluster(1) as cluster:
        member = cluster.members[0]
        workdir = cluster.workdir
        client = sd.etcd.connect(member.host, member.client_port)

        def value() -> bytes | None:
            client.recover(None)
            try:
                found, _ = client.vendor.get("/compose/k")
            except Exception:
                return None
            return found  # type: ignore[no-any-return]

        try:
            client.put("/compose/k", "v")
            endpoint, first_pid = member.endpoint, member.pid
            cluster.restart()
            assert member.endpoint == endpoint
            assert member.pid not in (None, first_pid)
            assert cluster.leader() is member
            wait_for(lambda: value() == b"v", 10, "the data to survive the restart")
            member.kill()
            assert not member.running
            assert member.log_tail(1000).count("kitsd: starting m0") == 2
        finally:
            sd.etcd.close_client(client)
        cluster.heal()
        pid = member.pid
        assert pid is not None
    assert not _process_alive(pid)
    assert not workdir.exists()


def test_killing_the_watched_member_during_a_stream_of_puts_loses_no_change(
    etcd_cluster: EtcdCluster, clients: list[Any]
) -> None:
    prefix = "/kitsd-test/failover/"
    watcher = sd.etcd.connect(endpoints=etcd_cluster.endpoints)
    clients.append(watcher)
    events: list[Event] = []
    lock = threading.Lock()

    def record(event: Event) -> None:
        with lock:
            events.append(event)

    with sd.etcd.EtcdInstancer(watcher, prefix) as instancer:
        instancer.subscribe(record)
        watcher.put(f"{prefix}probe", instance(9999))
        wait_for(lambda: instancer.state.instances == (instance(9999),), 5, "the watch to run")
        watcher.delete(f"{prefix}probe")
        wait_for(lambda: instancer.state.instances == (), 5, "the probe to go")
        victim = member_at(etcd_cluster, current_endpoint(watcher))
        others = [member.endpoint for member in etcd_cluster.members if member is not victim]
        writer = sd.etcd.connect(endpoints=others)
        clients.append(writer)

        # The writer's history: every state it produced, in order (all distinct).
        states: list[tuple[str, ...]] = [()]
        live: set[str] = set()
        halfway = threading.Event()
        done = threading.Event()
        failures: list[BaseException] = []
        total = 120

        def write() -> None:
            deadline = time.monotonic() + 40
            try:
                for index in range(total):
                    key, value = f"{prefix}{index:04d}", instance(index)
                    retrying(functools.partial(writer.put, key, value), writer, deadline)
                    live.add(value)
                    states.append(tuple(sorted(live)))
                    if index >= 5:
                        old = index - 5
                        delete = functools.partial(writer.delete, f"{prefix}{old:04d}")
                        retrying(delete, writer, deadline)
                        live.discard(instance(old))
                        states.append(tuple(sorted(live)))
                    if index == total // 3:
                        halfway.set()
            except BaseException as error:
                failures.append(error)
            finally:
                halfway.set()
                done.set()

        with lock:
            first_event = len(events)  # what came before is the probe
        thread = threading.Thread(target=write, name="test-writer")
        thread.start()
        assert halfway.wait(30)
        killed_at = time.monotonic()
        victim.kill()
        wait_for(lambda: current_endpoint(watcher) != victim.endpoint
                 and instancer.state.error is None, 15, "the watch to fail over")
        failover = time.monotonic() - killed_at
        assert done.wait(60)
        thread.join(5)
        assert not failures, failures
        final = states[-1]
        wait_for(lambda: instancer.state.instances == final and instancer.state.error is None,
                 10, "the instancer to converge on the final state")
        print(f"FIGURE watch failover after killing its member: {failover:.2f} s;"
              f" {len(states) - 1} changes")

    with lock:
        seen = [event.instances for event in events[first_event:]]
    assert seen, "no event after the writer started"
    position = {state: index for index, state in enumerate(states)}
    unknown = [snapshot for snapshot in seen if snapshot not in position]
    assert not unknown, f"snapshots that never existed (a lost change): {unknown[:3]}"
    order = [position[snapshot] for snapshot in seen]
    assert order == sorted(order), "snapshots went backwards (a change applied twice or late)"
    assert seen[-1] == final


def test_registration_survives_a_leader_change(
    etcd_cluster: EtcdCluster, clients: list[Any]
) -> None:
    registrar_client = sd.etcd.connect(endpoints=etcd_cluster.endpoints)
    clients.append(registrar_client)
    key = "/kitsd-test/leader-change/a"
    leader = etcd_cluster.leader()
    with sd.etcd.EtcdRegistrar(registrar_client, key, "10.0.0.1:80", ttl=3) as registrar:
        lease = registrar.lease_id
        others = [member for member in etcd_cluster.members if member is not leader]
        reader = sd.etcd.connect(endpoints=[member.endpoint for member in others])
        clients.append(reader)
        granted = reader.vendor.get_lease_info(lease).grantedTTL
        leader.kill()
        new_leader = etcd_cluster.leader()
        assert new_leader is not leader
        print(f"FIGURE leader change: {leader.name} -> {new_leader.name}")
        # Past the TTL after the change, the key is there on the same, refreshed lease.
        deadline = time.monotonic() + granted + 1.0
        while time.monotonic() < deadline:
            value, meta = reader.vendor.get(key)
            assert value == b"10.0.0.1:80", "the registration disappeared"
            assert meta.lease_id == lease
            time.sleep(0.1)  # an invariant checked over time, not a wait
        assert registrar.lease_id == lease
        assert registrar.registrations == 1, "the lease was lost and had to be re-created"
        assert reader.vendor.get_lease_info(lease).TTL > 0
    value, _ = reader.vendor.get(key)
    assert value is None, "deregister() must delete the key"
