"""Tests for sd.etcd.registrar against a real etcd (and its argument checks without one).

Measured figures are printed with a ``FIGURE`` prefix (see them with ``-s``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kitsd import sd
from kitsd.compose.etcd import EtcdMember, ExternalEtcd
from kitsd.core.errors import InvalidInstanceError, MisuseError, RegistryUnavailableError
from kitsd.sd import backoff
from tests.etcd.conftest import require_restartable
from tests.helpers import wait_for

pyetcd = pytest.importorskip("pyetcd")

ROOT = Path(__file__).resolve().parents[2]


def vendor(client: Any) -> Any:
    """The pyetcd client (``connect()`` returns kitsd's adapter; a user's client is one)."""
    return getattr(client, "vendor", client)


def value_of(client: Any, key: str) -> bytes | None:
    value, _ = vendor(client).get(key)
    return value  # type: ignore[no-any-return]


def assert_holds(predicate: Any, seconds: float, what: str) -> None:
    """Check ``predicate`` every 50 ms for ``seconds``: an invariant over time, not a wait."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what} stopped holding"
        time.sleep(0.05)


def lease_of(client: Any, key: str) -> int | None:
    _, meta = vendor(client).get(key)
    return None if meta is None else int(meta.lease_id)


# ---------------------------------------------------------------------------
# argument checks, no server needed


@pytest.mark.parametrize(
    ("key", "value", "ttl", "error"),
    [
        ("", "10.0.0.1:80", 10.0, MisuseError),
        ("/svc/a", "", 10.0, MisuseError),
        ("/svc/a", "   ", 10.0, MisuseError),
        ("/svc/a", "10.0.0.1", 10.0, InvalidInstanceError),
        ("/svc/a", "host:http", 10.0, InvalidInstanceError),
        ("/svc/a", "10.0.0.1:80", 0, MisuseError),
        ("/svc/a", "10.0.0.1:80", -1.0, MisuseError),
        ("/svc/a", "10.0.0.1:80", float("inf"), MisuseError),
    ],
)
def test_bad_arguments_raise_value_error(key: str, value: str, ttl: float, error: type) -> None:
    with pytest.raises(error) as raised:
        sd.etcd.EtcdRegistrar(object(), key, value, ttl=ttl)
    assert isinstance(raised.value, ValueError)
    if error is InvalidInstanceError:
        # the value is named, but a port that is not a number is not shown (it may be a
        # password typed in the wrong place: kitsd.core.redact)
        assert value.partition(":")[0] in str(raised.value)
        assert "http" not in str(raised.value)


def test_a_client_that_is_not_one_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not an etcd client"):
        sd.etcd.EtcdRegistrar(object(), "/svc/a", "10.0.0.1:80")


def test_is_a_registrar_without_touching_etcd() -> None:
    from kitsd.compose.process import free_ports

    client = pyetcd.client("127.0.0.1", free_ports(1)[0])  # never called by the constructor
    try:
        registrar = sd.etcd.EtcdRegistrar(client, "/svc/a", "LOCALHOST:80")
        assert isinstance(registrar, sd.Registrar)
        assert registrar.value == "localhost:80"
        assert registrar.lease_id is None
        assert not registrar.registered
        registrar.deregister()  # idempotent even before register()
        assert "localhost:80" in repr(registrar)
    finally:
        client.close()


def test_register_against_unreachable_etcd_raises_registry_unavailable(
    no_thread_leaks: None,
) -> None:
    from kitsd.compose.process import free_ports

    client = pyetcd.client("127.0.0.1", free_ports(1)[0])
    try:
        registrar = sd.etcd.EtcdRegistrar(client, "/svc/a", "10.0.0.1:80", ttl=2)
        # The default retry_for=10 s rides out a leader election; the testing switch makes
        # that bounded retry immediate, so the test does not sit out ten seconds.
        with backoff.testing(attempts=2), pytest.raises(RegistryUnavailableError) as raised:
            registrar.register()
        assert raised.value.__cause__ is not None
        assert not registrar.registered
    finally:
        client.close()


# ---------------------------------------------------------------------------
# against a real etcd


@pytest.mark.integration
def test_register_is_visible_to_the_instancer_and_deregister_removes_it(
    no_thread_leaks: None, client: Any, prefix: str
) -> None:
    key = f"{prefix}one"
    with sd.etcd.EtcdInstancer(client, prefix) as instancer:
        registrar = sd.etcd.EtcdRegistrar(client, key, "10.0.0.1:8080", ttl=3)
        registrar.register()
        registrar.register()  # idempotent: no second lease
        lease = registrar.lease_id
        assert lease is not None
        assert registrar.registrations == 1
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:8080",), 5, "registration")
        assert lease_of(client, key) == lease, "the key must hang on the lease"
        registrar.deregister()
        registrar.deregister()  # idempotent
        wait_for(lambda: instancer.state.instances == (), 5, "deregistration")
        assert value_of(client, key) is None
        assert vendor(client).get_lease_info(lease).TTL == -1, "the lease must be revoked"
        assert not [t for t in threading.enumerate() if t.name.startswith("kitsd-etcd-lease")]
        # Registering again after deregistering works.
        registrar.register()
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:8080",), 5, "re-registration")
        assert registrar.lease_id != lease
        registrar.deregister()


@pytest.mark.integration
def test_context_manager_registers_and_deregisters(client: Any, prefix: str) -> None:
    key = f"{prefix}ctx"
    with sd.etcd.EtcdRegistrar(client, key, "10.0.0.2:80", ttl=3) as registrar:
        assert registrar.registered
        assert value_of(client, key) == b"10.0.0.2:80"
    assert not registrar.registered
    assert value_of(client, key) is None


@pytest.mark.integration
def test_the_lease_is_kept_alive_beyond_its_ttl(client: Any, prefix: str) -> None:
    key = f"{prefix}alive"
    with sd.etcd.EtcdRegistrar(client, key, "10.0.0.3:80", ttl=2) as registrar:
        lease = registrar.lease_id
        granted = vendor(client).get_lease_info(lease).grantedTTL
        # Past the TTL, the key never disappears and the lease is never replaced.
        assert_holds(lambda: value_of(client, key) == b"10.0.0.3:80", granted + 1.0, "the key")
        assert registrar.lease_id == lease
        assert registrar.registrations == 1
        assert vendor(client).get_lease_info(lease).TTL > 0


@pytest.mark.integration
def test_a_lease_revoked_behind_its_back_is_recreated(client: Any, prefix: str) -> None:
    key = f"{prefix}revoked"
    with sd.etcd.EtcdRegistrar(client, key, "10.0.0.4:80", ttl=2) as registrar:
        old = registrar.lease_id
        assert old is not None
        started = time.monotonic()
        client.revoke(old)
        assert value_of(client, key) is None, "revoking the lease deletes the key"
        # the key becomes visible a moment before the registrar records the new lease
        wait_for(lambda: value_of(client, key) == b"10.0.0.4:80"
                 and registrar.registrations == 2, 5, "the key to be re-put")
        print(f"FIGURE key re-put after its lease was revoked: {time.monotonic() - started:.2f} s")
        assert registrar.lease_id not in (None, old)
        assert lease_of(client, key) == registrar.lease_id
        assert registrar.registrations == 2


@pytest.mark.integration
def test_a_registrar_killed_with_sigkill_leaves_after_the_lease_ttl(
    etcd_member: EtcdMember | ExternalEtcd, client: Any, prefix: str
) -> None:
    key = f"{prefix}crashed"
    script = textwrap.dedent(
        f"""
        import sys
        import kitsd.sd.etcd
        from kitsd import sd
        client = sd.etcd.connect({etcd_member.host!r}, {etcd_member.client_port})
        sd.etcd.EtcdRegistrar(client, {key!r}, "10.0.0.5:80", ttl=1).register()
        print("registered", flush=True)
        sys.stdin.read()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with sd.etcd.EtcdInstancer(client, prefix) as instancer:
        process = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        try:
            wait_for(lambda: instancer.state.instances == ("10.0.0.5:80",), 20, "registration")
            granted = vendor(client).get_lease_info(lease_of(client, key)).grantedTTL
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            killed_at = time.monotonic()
            wait_for(lambda: instancer.state.instances == (), granted + 5, "the lease to expire")
            gone_after = time.monotonic() - killed_at
            print(f"FIGURE SIGKILLed registrar gone after {gone_after:.2f} s"
                  f" (lease TTL {granted} s)")
            assert gone_after <= granted + 2
            assert instancer.state.error is None
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            for stream in (process.stdout, process.stdin):
                if stream is not None:
                    stream.close()


@pytest.mark.integration
def test_registration_survives_a_member_restart_with_the_users_own_client(
    etcd_member: EtcdMember | ExternalEtcd, user_client: Any, client: Any, prefix: str
) -> None:
    require_restartable(etcd_member)
    assert isinstance(etcd_member, EtcdMember)
    key = f"{prefix}restart"
    with sd.etcd.EtcdRegistrar(user_client, key, "10.0.0.6:80", ttl=2) as registrar:
        etcd_member.kill()
        etcd_member.start()
        etcd_member.wait_healthy()
        # Well past the TTL: the key stays, on a lease that is being refreshed.
        granted = vendor(client).get_lease_info(registrar.lease_id).grantedTTL
        assert_holds(lambda: value_of(client, key) == b"10.0.0.6:80", granted + 1.0, "the key")
        assert vendor(client).get_lease_info(registrar.lease_id).TTL > 0
        assert lease_of(client, key) == registrar.lease_id
    assert value_of(client, key) is None
