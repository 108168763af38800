"""``kitsd watch etcd://...`` shows live changes from a real etcd."""

from __future__ import annotations

from typing import Any

import pytest

from kitsd.compose.etcd import EtcdMember, ExternalEtcd
from tests.helpers import WatchProcess


@pytest.mark.integration
def test_watch_prints_changes_from_etcd(
    etcd_member: EtcdMember | ExternalEtcd, client: Any, prefix: str
) -> None:
    client.put(f"{prefix}a", "10.0.0.1:80")
    watch = WatchProcess(f"etcd://{etcd_member.endpoint}{prefix}")
    try:
        watch.wait_line(lambda line: "1 instances: 10.0.0.1:80" in line)
        client.put(f"{prefix}b", "10.0.0.2:80")
        watch.wait_line(lambda line: "2 instances: 10.0.0.1:80, 10.0.0.2:80" in line)
        client.delete(f"{prefix}a")
        watch.wait_line(lambda line: "1 instances: 10.0.0.2:80" in line)
    finally:
        watch.close()
    assert watch.process.returncode == WatchProcess.INTERRUPTED
