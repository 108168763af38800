"""``EtcdRegistrar`` puts back a key deleted or overwritten behind its back while its
lease lives, within one refresh interval (a third of the granted TTL), and never
after ``deregister()``.  Against a real etcd; figures print with ``FIGURE`` (``-s``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from kitsd import sd
from tests.helpers import wait_for

pyetcd = pytest.importorskip("pyetcd")

pytestmark = pytest.mark.integration

#: Room for the round's keep-alive, read and put on a loaded two-core machine,
#: on top of the documented bound (one refresh interval).
SLACK = 2.0


def vendor(client: Any) -> Any:
    return getattr(client, "vendor", client)


def value_of(client: Any, key: str) -> bytes | None:
    value, _ = vendor(client).get(key)
    return value  # type: ignore[no-any-return]


def lease_of(client: Any, key: str) -> int | None:
    _, meta = vendor(client).get(key)
    return None if meta is None else int(meta.lease_id)


def bound_of(client: Any, registrar: sd.etcd.EtcdRegistrar) -> float:
    """The documented bound: one refresh interval, a third of the granted TTL."""
    granted = int(vendor(client).get_lease_info(registrar.lease_id).grantedTTL)
    return granted / 3.0


def assert_stays(predicate: Any, seconds: float, what: str) -> None:
    """Check ``predicate`` every 50 ms for ``seconds``: an invariant over time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what} stopped holding"
        time.sleep(0.05)


def test_a_key_deleted_behind_its_back_is_put_back_under_its_lease(
    client: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"{prefix}deleted"
    caplog.set_level(logging.WARNING, logger="kitsd.sd.etcd.registrar")
    with sd.etcd.EtcdRegistrar(client, key, "10.0.1.1:80", ttl=2) as registrar:
        lease = registrar.lease_id
        bound = bound_of(client, registrar)
        vendor(client).delete(key)  # an operator's `etcdctl del`
        started = time.monotonic()
        assert value_of(client, key) is None
        wait_for(lambda: value_of(client, key) == b"10.0.1.1:80", bound + SLACK,
                 "the deleted key to be put back")
        took = time.monotonic() - started
        print(f"FIGURE deleted key put back after {took:.2f} s (bound {bound:.2f} s + calls)")
        # under the same, still living lease: a crash still removes it
        assert lease_of(client, key) == lease == registrar.lease_id
        wait_for(lambda: registrar.registrations == 2, 2.0, "the restoration to be counted")
        restored = [r for r in caplog.records if "put it back" in r.getMessage()]
        assert len(restored) == 1, [r.getMessage() for r in caplog.records]
        assert "deleted" in restored[0].getMessage()
        # intact from now on: no more restorations
        assert_stays(lambda: registrar.registrations == 2, 3 * bound, "one restoration")
    assert value_of(client, key) is None
    assert_stays(lambda: value_of(client, key) is None, 3 * bound + 0.5,
                 "the key gone after deregister()")


def test_an_overwritten_key_is_put_back_with_its_value_and_lease(
    client: Any, prefix: str
) -> None:
    key = f"{prefix}overwritten"
    with sd.etcd.EtcdRegistrar(client, key, "10.0.1.2:80", ttl=2) as registrar:
        lease = registrar.lease_id
        bound = bound_of(client, registrar)
        vendor(client).put(key, "10.9.9.9:80")  # another value, and no lease at all
        started = time.monotonic()
        wait_for(lambda: value_of(client, key) == b"10.0.1.2:80"
                 and lease_of(client, key) == lease, bound + SLACK,
                 "the overwritten key to be put back")
        print(f"FIGURE overwritten key put back after {time.monotonic() - started:.2f} s")
        # the same value without our lease is also not ours: a crash would not remove it
        vendor(client).put(key, "10.0.1.2:80")
        assert lease_of(client, key) == 0
        wait_for(lambda: lease_of(client, key) == lease, bound + SLACK,
                 "the key to be put back under the lease")
        assert value_of(client, key) == b"10.0.1.2:80"
    assert value_of(client, key) is None


def test_deregister_right_after_a_deletion_is_not_undone(client: Any, prefix: str) -> None:
    """A restoration in flight never brings the key back after ``deregister()``."""
    key = f"{prefix}race"
    registrar = sd.etcd.EtcdRegistrar(client, key, "10.0.1.3:80", ttl=2)
    registrar.register()
    bound = bound_of(client, registrar)
    for _ in range(3):
        registrar.register()
        vendor(client).delete(key)
        # let the thread notice (or be about to), then deregister at once
        time.sleep(bound * 0.9)  # places the deregister near the round, not a sync
        registrar.deregister()
        assert not registrar.registered
        assert_stays(lambda: value_of(client, key) is None, bound + 1.0,
                     "the key gone after deregister()")
