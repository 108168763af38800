"""Chaos against a real 3-member etcd cluster: the client stack loses no call while an
instance crashes, a new one arrives, and the etcd leader is killed and restarted."""

from __future__ import annotations

import pytest

import sd.etcd
from compose.etcd import EtcdCluster
from tests.chaos import Caller, run_instances, wait_instances


@pytest.mark.integration
def test_no_call_fails_through_instance_and_leader_failures(
    etcd_cluster: EtcdCluster, prefix: str, no_thread_leaks: None
) -> None:
    registrar_client = sd.etcd.connect(endpoints=etcd_cluster.endpoints)
    watch_client = sd.etcd.connect(endpoints=etcd_cluster.endpoints)
    servers = run_instances(3)
    registrars = {}

    def register(instance: str) -> None:
        registrar = sd.etcd.EtcdRegistrar(registrar_client, f"{prefix}{instance}", instance, ttl=3)
        registrar.register()
        registrars[instance] = registrar

    def alive() -> set[str]:
        return {server.instance for server in servers if server.alive}

    try:
        for server in servers:
            register(server.instance)
        with sd.etcd.EtcdInstancer(watch_client, prefix) as instancer:
            wait_instances(instancer, alive)
            with Caller(instancer) as caller:
                caller.calls_after(100)
                victim = servers[0]
                victim.kill()  # crashes; the registry learns a moment later
                caller.calls_after(30)
                registrars[victim.instance].deregister()
                wait_instances(instancer, alive)

                leader = etcd_cluster.leader()
                leader.kill()
                newcomer = run_instances(1)[0]
                servers.append(newcomer)
                register(newcomer.instance)  # while the leader is dead
                wait_instances(instancer, alive)
                caller.calls_after(100)
                leader.restart()
                caller.calls_after(100)
            assert caller.log.failures == []
            assert caller.count(newcomer.instance) > 0
            assert caller.count(victim.instance) > 0
            assert set(caller.log.calls) == {server.instance for server in servers}
    finally:
        for registrar in registrars.values():
            registrar.deregister()
        for server in servers:
            server.kill()
        sd.etcd.close_client(registrar_client)
        sd.etcd.close_client(watch_client)
