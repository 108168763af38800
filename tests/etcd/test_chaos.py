"""Chaos against a real 3-member etcd cluster: the client stack loses no call while an
instance crashes, a new one arrives, and the etcd leader is killed and restarted."""

from __future__ import annotations

import pytest

from kitsd import sd
from kitsd.compose.etcd import EtcdCluster
from tests.chaos import run_chaos


@pytest.mark.integration
def test_no_call_fails_through_instance_and_leader_failures(
    etcd_cluster: EtcdCluster, prefix: str, no_thread_leaks: None
) -> None:
    registrar_client = sd.etcd.connect(endpoints=etcd_cluster.endpoints)
    watch_client = sd.etcd.connect(endpoints=etcd_cluster.endpoints)
    leader = etcd_cluster.leader()

    def register(instance: str) -> sd.Registrar:
        registrar = sd.etcd.EtcdRegistrar(registrar_client, f"{prefix}{instance}", instance, ttl=3)
        registrar.register()
        return registrar

    try:
        run_chaos(
            register=register,
            open_instancer=lambda: sd.etcd.EtcdInstancer(watch_client, prefix),
            kill_leader=leader.kill,
            after_leader_killed=leader.restart,
        )
    finally:
        sd.etcd.close_client(registrar_client)
        sd.etcd.close_client(watch_client)
