"""Fixtures for the Kubernetes driver tests.

Real-server tests are marked ``integration`` and run against a real
``kube-apiserver`` (v1.37.2, on a real etcd 3.7) from :mod:`compose.kubernetes`:
one shared server for the session (``kube``), a fresh namespace per test
(``namespace``; there is no controller-manager to finish deleting one, and
nothing else writes there), and a server of their own for tests that restart,
kill or compact (``own_kube``).  If the binaries are missing these fixtures FAIL,
saying how to install them; they never fall back to a fake.  The scripted
server of ``test_scripted.py`` covers the answers a real server gives only
rarely (a 410 on a continued page, a broken line).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kitsd import sd
from kitsd.compose.kubernetes import KubeAdmin, KubeAPIServer, KubeNotInstalled
from kitsd.sd.k8s import ClusterConfig, StaticToken


def start_kube(**kwargs: object) -> KubeAPIServer:
    """A started :class:`KubeAPIServer`, failing the test (not skipping it) with the
    install hint if the binaries are missing."""
    try:
        return KubeAPIServer(**kwargs)  # type: ignore[arg-type]
    except KubeNotInstalled as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeAPIServer]:
    """One kube-apiserver (and its etcd) for the whole session."""
    server = start_kube()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_kube() -> Iterator[KubeAPIServer]:
    """A kube-apiserver of the test's own (to restart, kill or compact)."""
    server = start_kube()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def admin(kube: KubeAPIServer) -> Iterator[KubeAdmin]:
    """An admin client of the shared server."""
    with kube.admin() as client:
        yield client


@pytest.fixture
def namespace(admin: KubeAdmin) -> str:
    """A fresh namespace on the shared server."""
    name = f"kitsd-{uuid.uuid4().hex[:10]}"
    admin.create_namespace(name)
    return name


def config_for(kube: KubeAPIServer, user: str = "reader", *, namespace: str = "default",
               token: str | None = None) -> ClusterConfig:
    """A :class:`ClusterConfig` for ``user``'s static token (or ``token``)."""
    return ClusterConfig(server=kube.server, ca=kube.ca_file.read_text(),
                         token=StaticToken(token if token is not None else kube.token(user)),
                         namespace=namespace, source=f"test config for {user}")


@pytest.fixture
def reader(kube: KubeAPIServer, admin: KubeAdmin, namespace: str) -> ClusterConfig:
    """The ``reader`` user, allowed to list and watch EndpointSlices in ``namespace``."""
    admin.grant(namespace, "reader")
    return config_for(kube, "reader", namespace=namespace)


class Recorder:
    """Collects the events an instancer delivers; waits for one that matches."""

    def __init__(self) -> None:
        self.events: list[sd.Event] = []
        self._changed = threading.Condition()

    def __call__(self, event: sd.Event) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    @property
    def last(self) -> sd.Event:
        with self._changed:
            return self.events[-1]

    def wait(self, predicate: Callable[[sd.Event], bool], timeout: float = 15.0,
             what: str = "an event") -> sd.Event:
        """The first event (already seen or coming) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} in {timeout}s; saw {self.events[-5:]}")
                self._changed.wait(left)

    def wait_instances(self, instances: set[str], timeout: float = 15.0) -> sd.Event:
        """The first error-free event whose instances are exactly ``instances``."""
        return self.wait(lambda e: e.error is None and set(e.instances) == instances, timeout,
                         f"instances {sorted(instances)}")


@pytest.fixture
def recorder() -> Recorder:
    """A fresh :class:`Recorder`."""
    return Recorder()


@pytest.fixture
def kubeconfig_dir(tmp_path: Path) -> Path:
    """A directory for kubeconfig and token files."""
    return tmp_path
