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
        watch.wait_line(lambda line: "1 instance: 10.0.0.1:80" in line)
        client.put(f"{prefix}b", "10.0.0.2:80")
        watch.wait_line(lambda line: "2 instances: 10.0.0.1:80, 10.0.0.2:80" in line)
        client.delete(f"{prefix}a")
        watch.wait_line(lambda line: "1 instance: 10.0.0.2:80" in line)
    finally:
        watch.close()
    assert watch.process.returncode == WatchProcess.INTERRUPTED


@pytest.mark.integration
def test_watch_count_1_prints_the_prefix_as_read_not_an_empty_set(
    etcd_member: EtcdMember | ExternalEtcd, client: Any, prefix: str
) -> None:
    """Issue 15.4: the first line was "0 instances" while the key existed."""
    import subprocess
    import sys

    client.put(f"{prefix}a", "10.0.0.1:80")
    done = subprocess.run(
        [sys.executable, "-m", "kitsd", "watch", f"etcd://{etcd_member.endpoint}{prefix}",
         "--count", "1"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    assert lines[0].endswith("1 instance: 10.0.0.1:80"), done.stdout
