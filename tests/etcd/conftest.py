"""Fixtures for the etcd tests: real etcd servers, never a fake.

* ``etcd_member`` -- one etcd member started by :mod:`compose.etcd` for the
  test module (or the server named by ``KITSD_ETCD_ENDPOINT``), checked healthy
  before each test; tests keep apart by writing under their own ``prefix``.
* ``etcd_cluster`` -- a three-member cluster for the module, healed (every
  member running and healthy) before each test.
* ``client`` -- a client built by :func:`sd.etcd.connect`; ``user_client`` -- a
  plain ``pyetcd.client()`` with the vendor's defaults (``time_retry=300``), the
  kind a user brings.  Both are closed after the test.

When a test fails, the tail of every member's log is printed (pytest shows it
with the failure).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kitsd import sd
from kitsd.compose.etcd import (
    ENDPOINT_ENV,
    ETCD_BINARY,
    EtcdCluster,
    EtcdMember,
    ExternalEtcd,
    single_member,
)

_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


def _print_logs_on_failure(
    request: pytest.FixtureRequest, server: EtcdCluster | ExternalEtcd
) -> None:
    if request.node.stash.get(_FAILED, False):
        print(f"\n==== etcd logs for {request.node.nodeid} ====\n{server.log_tails()}")


def require_restartable(server: object) -> None:
    """Skip, loudly, when the server is one we did not start (``KITSD_ETCD_ENDPOINT``)."""
    if not getattr(server, "can_restart", False):
        pytest.skip(
            "SKIPPED LOUDLY: KITSD_ETCD_ENDPOINT points at an external etcd, which this test"
            " would have to stop, kill or restart; unset it to run this test"
        )


def require_etcd_binary() -> None:
    """Fail, loudly, a test that must start its own etcd when there is no etcd binary:
    a missing server is a missing install step, never a reason to pass quietly."""
    if not Path(ETCD_BINARY).exists():
        pytest.fail(f"no etcd binary at {ETCD_BINARY}: install it with "
                    f"`kitsd servers install etcd`, set {ENDPOINT_ENV}=host:port, "
                    "or deselect with -m 'not integration'")


def _require_etcd() -> None:
    if not os.environ.get(ENDPOINT_ENV):
        require_etcd_binary()


@pytest.fixture(scope="module")
def _etcd_server() -> Iterator[EtcdCluster | ExternalEtcd]:
    _require_etcd()
    server = single_member()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def etcd_member(
    _etcd_server: EtcdCluster | ExternalEtcd, request: pytest.FixtureRequest
) -> Iterator[EtcdMember | ExternalEtcd]:
    """The module's etcd member (running and healthy), or the external server."""
    if isinstance(_etcd_server, EtcdCluster):
        _etcd_server.heal()
        yield _etcd_server.members[0]
    else:
        yield _etcd_server
    _print_logs_on_failure(request, _etcd_server)


@pytest.fixture
def etcd_cluster(
    kitsd_etcd_cluster: EtcdCluster, request: pytest.FixtureRequest
) -> Iterator[EtcdCluster]:
    """The module's three-member cluster (the plugin's ``kitsd_etcd_cluster``), every
    member running and healthy."""
    yield kitsd_etcd_cluster
    _print_logs_on_failure(request, kitsd_etcd_cluster)


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"/kitsd-test/{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def client(etcd_member: EtcdMember | ExternalEtcd) -> Iterator[Any]:
    """A client from :func:`sd.etcd.connect` on ``etcd_member``; closed afterwards."""
    made = sd.etcd.connect(etcd_member.host, etcd_member.client_port)
    yield made
    sd.etcd.close_client(made)


@pytest.fixture
def user_client(etcd_member: EtcdMember | ExternalEtcd) -> Iterator[Any]:
    """A plain ``pyetcd.client()`` with vendor defaults (no kitsd tuning); closed afterwards."""
    pyetcd = pytest.importorskip("pyetcd")
    made = pyetcd.client(etcd_member.host, etcd_member.client_port)
    yield made
    made.close()
