"""The one-line client on Kubernetes: ``kitsd.Transport("k8s://default/{service}:http")``
against a real kube-apiserver, with "pods" that are local HTTP processes the test
registers in EndpointSlices (as the EndpointSlice controller and the kubelet would):
0 failed calls while pods are killed, added and marked terminating; a terminating
pod's calls in flight finish and it gets no new ones."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import kitsd
from kitsd import sd
from kitsd.compose.instance import InstanceProcess, instance_args
from kitsd.compose.kubernetes import KubeAdmin, KubeAPIServer, endpoint, host_address
from kitsd.compose.process import free_ports

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pod_host() -> str:
    """The address the pods listen on: the API server refuses loopback endpoints."""
    address = host_address()
    if address is None:
        pytest.skip("SKIPPED ON PURPOSE: this machine has no non-loopback IPv4 address, and "
                    "kube-apiserver refuses EndpointSlice addresses in 127.0.0.0/8")
    return address


class Pods:
    """Local HTTP processes ("pods") of one Service, each in an EndpointSlice of its own
    (as the controller does for pods whose named port resolves to different numbers)."""

    def __init__(self, admin: KubeAdmin, namespace: str, service: str, host: str,
                 workdir: Path, slow: float | None = None) -> None:
        self.admin, self.namespace, self.service, self.host = admin, namespace, service, host
        self.workdir = workdir
        self.slow = slow
        self.processes: dict[str, InstanceProcess] = {}

    def start(self, name: str, *, ready: bool = True) -> str:
        """Start pod ``name`` and register it; returns its instance."""
        port = free_ports(1, self.host)[0]
        args = instance_args(port=port, host=self.host)
        if self.slow is not None:
            args += ["--slow", str(self.slow)]
        process = InstanceProcess(name, workdir=self.workdir, args=args, port=port)
        process.host = self.host
        process.start()
        process.wait_ready()
        if self.slow is not None:
            process.slow(True)
        self.processes[name] = process
        self.register(name, ready=ready)
        return process.address

    def register(self, name: str, *, ready: bool | None = True, terminating: bool | None = None,
                 serving: bool | None = None) -> None:
        process = self.processes[name]
        self.admin.put_slice(self.namespace, f"{self.service}-{name}", self.service,
                             [endpoint(self.host, ready=ready, terminating=terminating,
                                       serving=serving, pod=name)], port=process.port)

    def remove(self, name: str) -> None:
        self.admin.delete_slice(self.namespace, f"{self.service}-{name}")

    def instance(self, name: str) -> str:
        return self.processes[name].address

    def close(self) -> None:
        for process in self.processes.values():
            process.close()


@pytest.fixture
def default_namespace_reader(kube: KubeAPIServer, admin: KubeAdmin, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> Path:
    """KUBECONFIG for ``reader``, allowed to list and watch EndpointSlices in ``default``."""
    try:
        admin.grant("default", "reader")
    except httpx.HTTPStatusError as error:
        if error.response.status_code != 409:  # granted by an earlier test
            raise
    path = kube.kubeconfig(tmp_path / "kubeconfig", user="reader")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@dataclass
class Call:
    seq: int
    instance: str | None
    error: str | None


class Load:
    """``threads`` threads calling ``http://{service}/chaos`` through one client."""

    def __init__(self, client: httpx.Client, service: str, threads: int = 4) -> None:
        self._client = client
        self._service = service
        self._counter = itertools.count(1)
        self._last = 0
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"load-{i}")
                         for i in range(threads)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def seq(self) -> int:
        """The sequence number of the last call started."""
        with self._lock:
            return self._last

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                seq = self._last = next(self._counter)
            try:
                answer = self._client.get(f"http://{self._service}/chaos")
                answer.raise_for_status()
                call = Call(seq, answer.json()["instance"], None)
            except Exception as error:
                call = Call(seq, None, f"{type(error).__name__}: {error}")
            with self._lock:
                self.calls.append(call)

    def served(self, instance: str, after: int = 0) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.instance == instance and c.seq > after)

    def wait_served(self, instance: str, count: int = 3, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.served(instance) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{instance} served {self.served(instance)} calls in "
                                     f"{timeout}s")
            time.sleep(0.02)

    def stop(self) -> list[Call]:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self.calls


@pytest.fixture
def service() -> str:
    return f"web-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pods(admin: KubeAdmin, service: str, pod_host: str, tmp_path: Path) -> Iterator[Pods]:
    group = Pods(admin, "default", service, pod_host, tmp_path)
    try:
        yield group
    finally:
        group.close()


def removal_seq(instancer: sd.Instancer, instance: str, load: Load) -> threading.Event:
    """Subscribe to the transport's (shared) watch: when ``instance`` leaves, note the
    sequence number of the last call started then (``event.seq``)."""
    gone = threading.Event()

    def on_event(event: sd.Event) -> None:
        if instance not in event.instances and not gone.is_set():
            gone.seq = load.seq()  # type: ignore[attr-defined]
            gone.set()

    instancer.subscribe(on_event)
    return gone


def test_zero_failed_calls_while_pods_are_killed_added_and_terminating(
        default_namespace_reader: Path, pods: Pods, service: str) -> None:
    a, b, c = (pods.start(name) for name in ("a", "b", "c"))
    url = "k8s://default/{service}:http"
    transport = kitsd.Transport(url, max_attempts=3)
    with httpx.Client(transport=transport, timeout=10) as client, \
            sd.instancer_from_url(url.replace("{service}", service)) as shared:
        load = Load(client, service).start()
        try:
            for instance in (a, b, c):
                load.wait_served(instance)
            # a crash: the process dies, the endpoint stays ready until the kubelet's
            # probe notices (retries and ejection hide it), then it goes not ready, then away
            a_gone = removal_seq(shared, a, load)
            pods.processes["a"].kill()
            time.sleep(0.5)
            pods.register("a", ready=False)
            assert a_gone.wait(10)
            pods.remove("a")
            # scale up: a new pod, ready
            d = pods.start("d")
            load.wait_served(d)
            # a graceful termination: terminating first, the process stops a second later
            b_gone = removal_seq(shared, b, load)
            pods.register("b", ready=False, serving=True, terminating=True)
            assert b_gone.wait(10)
            time.sleep(1.0)
            pods.processes["b"].stop()
            pods.remove("b")
            load.wait_served(d, count=20)
        finally:
            calls = load.stop()
    failed = [call for call in calls if call.error is not None]
    assert not failed, failed[:5]
    assert len(calls) > 50
    for instance, gone in ((a, a_gone), (b, b_gone)):
        after = [call for call in calls if call.instance == instance
                 and call.seq > gone.seq]  # type: ignore[attr-defined]
        assert not after, f"{instance} got calls started after it left"
    assert load.served(c) > 0


def test_a_terminating_pod_finishes_its_calls_in_flight_and_gets_no_new_ones(
        default_namespace_reader: Path, admin: KubeAdmin, service: str, pod_host: str,
        tmp_path: Path) -> None:
    slow_pods = Pods(admin, "default", service, pod_host, tmp_path, slow=0.5)
    try:
        a, b = slow_pods.start("a"), slow_pods.start("b")
        url = "k8s://default/{service}:http"
        with httpx.Client(transport=kitsd.Transport(url, max_attempts=1), timeout=10) as client, \
                sd.instancer_from_url(url.replace("{service}", service)) as shared:
            load = Load(client, service, threads=6).start()
            try:
                load.wait_served(b, count=4)
                b_gone = removal_seq(shared, b, load)
                slow_pods.register("b", ready=False, serving=True, terminating=True)
                assert b_gone.wait(10)
                time.sleep(1.5)  # the calls in flight at b finish (each takes 0.5 s)
                slow_pods.processes["b"].stop()
                load.wait_served(a, count=load.served(a) + 6)
            finally:
                calls = load.stop()
    finally:
        slow_pods.close()
    seq = b_gone.seq  # type: ignore[attr-defined]
    assert not [call for call in calls if call.error is not None]  # none failed
    in_flight = [call for call in calls if call.instance == b and call.seq <= seq]
    assert in_flight, "no call was served by b before it began terminating"
    assert not [call for call in calls if call.instance == b and call.seq > seq]  # none new
