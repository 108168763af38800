"""EndpointSliceInstancer against a real kube-apiserver: changes, conditions, slices
moving, 410 Gone, restarts, RBAC, token rotation, configuration."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from kitsd import sd
from kitsd.compose.kubernetes import KubeAdmin, KubeAPIServer, endpoint
from kitsd.core.errors import MisuseError, PermissionDeniedError, RegistryUnavailableError
from kitsd.sd.k8s import (
    AsyncEndpointSliceInstancer,
    ClusterConfig,
    EndpointSliceInstancer,
    TokenFile,
)
from kitsd.sd.k8s.instancer import _WATCHES
from tests.helpers import assert_no_new_threads, async_wait_for, wait_for
from tests.k8s.conftest import Recorder, config_for, start_kube

pytestmark = pytest.mark.integration


def test_add_remove_and_ready_flips_follow_the_slices(
        admin: KubeAdmin, namespace: str, reader: ClusterConfig, recorder: Recorder) -> None:
    before = set(threading.enumerate())
    admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1")])
    admin.put_slice(namespace, "api-1", "api", [endpoint("10.9.9.9")])  # another Service
    with EndpointSliceInstancer("web", namespace=namespace, port="http",
                                config=reader) as instancer:
        instancer.subscribe(recorder)
        # the constructor waited for the first list: the first event is real data
        assert recorder.events[0] == sd.Event(("10.0.0.1:8080",))
        admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1"), endpoint("10.0.0.2")])
        recorder.wait_instances({"10.0.0.1:8080", "10.0.0.2:8080"})
        admin.put_slice(namespace, "web-1", "web",
                        [endpoint("10.0.0.1"), endpoint("10.0.0.2", ready=False)])
        recorder.wait_instances({"10.0.0.1:8080"})
        admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1"), endpoint("10.0.0.2")])
        recorder.wait_instances({"10.0.0.1:8080", "10.0.0.2:8080"})
        admin.put_slice(namespace, "web-2", "web", [endpoint("10.0.0.3")])
        recorder.wait_instances({"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"})
        admin.delete_slice(namespace, "web-1")
        recorder.wait_instances({"10.0.0.3:8080"})
        admin.delete_slice(namespace, "web-2")
        recorder.wait_instances(set())
        assert all(event.error is None for event in recorder.events)
        assert not any("10.9.9.9:8080" in event.instances for event in recorder.events)
        assert instancer.stats.lists == 1
    assert_no_new_threads(before)


def test_zone_node_and_pod_reach_instance_info(
        admin: KubeAdmin, namespace: str, reader: ClusterConfig, recorder: Recorder) -> None:
    admin.put_slice(namespace, "web-1", "web", [
        endpoint("10.0.0.1", zone="eu-west-1a", node="node-7", pod="web-5d9f"),
        endpoint("10.0.0.2", for_zones=["eu-west-1b"]),
    ])
    with EndpointSliceInstancer("web", namespace=namespace, config=reader) as instancer:
        info = instancer.state.info
        assert dict(info["10.0.0.1:8080"].meta) == {
            "zone": "eu-west-1a", "node": "node-7", "pod": "web-5d9f"}
        assert dict(info["10.0.0.2:8080"].meta) == {"zone": "eu-west-1b",
                                                   "for-zones": "eu-west-1b"}


def test_a_terminating_endpoint_leaves_at_once_and_serving_ones_are_the_fallback(
        admin: KubeAdmin, namespace: str, reader: ClusterConfig, recorder: Recorder) -> None:
    admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1"), endpoint("10.0.0.2")])
    with EndpointSliceInstancer("web", namespace=namespace, config=reader) as instancer:
        instancer.subscribe(recorder)
        admin.put_slice(namespace, "web-1", "web", [
            endpoint("10.0.0.1"),
            endpoint("10.0.0.2", ready=True, serving=True, terminating=True)])
        recorder.wait_instances({"10.0.0.1:8080"})
        # the last ready one goes: the serving terminating ones are used rather than none
        admin.put_slice(namespace, "web-1", "web", [
            endpoint("10.0.0.1", ready=False, serving=True, terminating=True),
            endpoint("10.0.0.2", ready=False, serving=False, terminating=True)])
        recorder.wait_instances({"10.0.0.1:8080"})
        assert instancer.state.instances == ("10.0.0.1:8080",)
        admin.put_slice(namespace, "web-2", "web", [endpoint("10.0.0.3")])
        recorder.wait_instances({"10.0.0.3:8080"})


def test_100_endpoints_moving_between_slices_never_flap(
        admin: KubeAdmin, namespace: str, reader: ClusterConfig, recorder: Recorder) -> None:
    """Split one slice of 100 endpoints into two, then merge them back, in the order
    the EndpointSlice controller writes (create and update before delete): no snapshot
    may lose an endpoint, and no endpoint may come back after leaving."""
    addresses = [f"10.1.0.{i}" for i in range(100)]
    everyone = {f"{a}:8080" for a in addresses}
    admin.put_slice(namespace, "web-a", "web", [endpoint(a) for a in addresses])
    with EndpointSliceInstancer("web", namespace=namespace, config=reader) as instancer:
        assert set(instancer.state.instances) == everyone
        instancer.subscribe(recorder)
        admin.put_slice(namespace, "web-b", "web", [endpoint(a) for a in addresses[50:]])
        admin.put_slice(namespace, "web-a", "web", [endpoint(a) for a in addresses[:50]])
        admin.put_slice(namespace, "web-a", "web", [endpoint(a) for a in addresses])
        admin.delete_slice(namespace, "web-b")
        # a marker after the moves: when it shows up, every move before it was seen
        admin.put_slice(namespace, "web-c", "web", [endpoint("10.1.1.1")])
        recorder.wait_instances(everyone | {"10.1.1.1:8080"})
        for event in recorder.events:
            assert event.error is None
            assert everyone <= set(event.instances), "an endpoint flapped out"
        assert instancer.stats.errors == 0


def test_forced_410_gone_lists_again_and_misses_nothing() -> None:
    """The watched API server goes away; meanwhile, through a second API server on the
    same etcd, a slice is deleted and one added, and etcd is compacted; the first
    comes back with a watch cache that starts after our resource version: it answers
    410 and the instancer lists again.  The deletion made while we were away is seen
    (a watch restarted without a resource version would miss it)."""
    kube = start_kube(apiservers=2)
    recorder = Recorder()
    try:
        with kube.admin(1) as admin:
            admin.create_namespace("shop")
            admin.put_slice("shop", "web-1", "web", [endpoint("10.0.0.1")])
            admin.put_slice("shop", "web-2", "web", [endpoint("10.0.0.2")])
            config = config_for(kube, token=kube.token("admin"))
            with EndpointSliceInstancer("web", namespace="shop", config=config) as instancer:
                instancer.subscribe(recorder)
                kube.apiserver.kill()
                recorder.wait(lambda e: e.error is not None, what="an error event")
                admin.delete_slice("shop", "web-1")
                admin.put_slice("shop", "web-3", "web", [endpoint("10.0.0.3")])
                for i in range(5):  # more history, all compacted away
                    admin.put_slice("shop", f"db-{i}", "db", [endpoint(f"10.0.1.{i}")])
                kube.compact()
                kube.apiserver.restart()
                recorder.wait_instances({"10.0.0.2:8080", "10.0.0.3:8080"}, timeout=30)
                assert instancer.stats.relists == 1
                assert instancer.stats.lists == 2
                # never the stale state announced as current once the server went away
                killed = next(i for i, e in enumerate(recorder.events) if e.error is not None)
                for event in recorder.events[killed:-1]:
                    assert event.error is not None
                # and it goes on watching
                admin.put_slice("shop", "web-4", "web", [endpoint("10.0.0.4")])
                recorder.wait_instances({"10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080"})
    finally:
        kube.close()


def test_api_server_restart_keeps_the_instances_and_resumes(own_kube: KubeAPIServer) -> None:
    recorder = Recorder()
    with own_kube.admin() as admin:
        admin.create_namespace("shop")
        admin.put_slice("shop", "web-1", "web", [endpoint("10.0.0.1"), endpoint("10.0.0.2")])
        config = config_for(own_kube, token=own_kube.token("admin"))
        with EndpointSliceInstancer("web", namespace="shop", config=config) as instancer:
            instancer.subscribe(recorder)
            own_kube.apiserver.stop()
            error_event = recorder.wait(lambda e: e.error is not None, what="an error event")
            assert isinstance(error_event.error, RegistryUnavailableError)
            assert error_event.instances == ("10.0.0.1:8080", "10.0.0.2:8080")  # kept
            own_kube.apiserver.start()
            own_kube.apiserver.wait_ready()
            recorder.wait(lambda e: e.error is None and len(recorder.events) > 2,
                          timeout=40, what="recovery")
            admin.put_slice("shop", "web-1", "web", [endpoint("10.0.0.1")])
            recorder.wait_instances({"10.0.0.1:8080"}, timeout=20)
            assert instancer.stats.errors >= 1


def test_rbac_denial_is_a_permission_error_naming_verb_and_resource(
        kube: KubeAPIServer, admin: KubeAdmin, namespace: str, recorder: Recorder) -> None:
    admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1")])
    nobody = config_for(kube, "nobody", namespace=namespace)
    with EndpointSliceInstancer("web", namespace=namespace, config=nobody) as instancer:
        error = instancer.state.error
        assert isinstance(error, PermissionDeniedError)
        assert "cannot list endpointslices.discovery.k8s.io" in str(error)
        assert f"namespace {namespace!r}" in str(error)
        assert "403 Forbidden" in str(error)
        assert kube.token("nobody") not in str(error)
        assert instancer.state.instances == ()
        # permission granted later: it recovers by itself (backoff, then a list)
        admin.grant(namespace, "nobody")
        instancer.subscribe(recorder)
        recorder.wait_instances({"10.0.0.1:8080"}, timeout=40)
    # allowed to list but not to watch: the list's instances stay, the error names watch
    admin.grant(namespace, "lister", verbs=("list",))
    lister = config_for(kube, "lister", namespace=namespace)
    with EndpointSliceInstancer("web", namespace=namespace, config=lister) as instancer:
        event = Recorder()
        instancer.subscribe(event)
        denied = event.wait(lambda e: e.error is not None, what="the watch refusal")
        assert isinstance(denied.error, PermissionDeniedError)
        assert "cannot watch endpointslices.discovery.k8s.io" in str(denied.error)
        assert denied.instances == ("10.0.0.1:8080",)
    # a token the server does not know: 401
    stranger = config_for(kube, token="not-a-token-the-server-knows")  # noqa: S106
    with EndpointSliceInstancer("web", namespace=namespace, config=stranger) as instancer:
        assert isinstance(instancer.state.error, PermissionDeniedError)
        assert "401 Unauthorized" in str(instancer.state.error)
        assert "not-a-token" not in str(instancer.state.error)
        assert "not-a-token" not in repr(instancer) + repr(stranger)


def test_a_rotated_service_account_token_is_used_without_an_error(
        kube: KubeAPIServer, admin: KubeAdmin, namespace: str, tmp_path: Path,
        recorder: Recorder) -> None:
    """A pod's projected token rotates: the kubelet writes a new one and the old one
    stops working (here: it was bound to a Secret that is deleted).  The instancer
    reads the file again and goes on without an error event."""
    admin.grant(namespace, "web-client", kind="ServiceAccount")
    first = admin.service_account_token(namespace, "web-client", bound_secret="bind-a")  # noqa: S106
    second = admin.service_account_token(namespace, "web-client", bound_secret="bind-b")  # noqa: S106
    token_file = tmp_path / "token"
    token_file.write_text(first)
    config = ClusterConfig(server=kube.server, ca=kube.ca_file.read_text(),
                           token=TokenFile(token_file), namespace=namespace)
    admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1")])
    # watches that end every 1-2 s, so that new requests (with the token) are made often
    with EndpointSliceInstancer("web", namespace=namespace, config=config,
                                watch_timeout=1) as instancer:
        instancer.subscribe(recorder)
        watches = instancer.stats.watches
        wait_for(lambda: instancer.stats.watches > watches + 1, 10, "a watch reopened")
        # rotate: the new token is written (atomically, as the kubelet does), the old revoked
        staged = tmp_path / "token.new"
        staged.write_text(second)
        staged.replace(token_file)
        admin.delete_secret(namespace, "bind-a")
        verify = ssl.create_default_context(cafile=str(kube.ca_file))
        with httpx.Client(verify=verify, trust_env=False) as client:
            def rejected() -> bool:
                answer = client.get(f"{kube.server}/apis/discovery.k8s.io/v1/namespaces/"
                                    f"{namespace}/endpointslices",
                                    headers={"Authorization": f"Bearer {first}"})
                return answer.status_code == 401
            wait_for(rejected, 10, "the old token to be rejected")
        watches = instancer.stats.watches
        wait_for(lambda: instancer.stats.watches > watches + 2, 15, "watches with the new token")
        admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.2")])
        recorder.wait_instances({"10.0.0.2:8080"})
        assert all(event.error is None for event in recorder.events), recorder.events


def test_in_cluster_configuration_against_the_real_server(
        kube: KubeAPIServer, admin: KubeAdmin, namespace: str, tmp_path: Path) -> None:
    admin.grant(namespace, "web-client", kind="ServiceAccount")
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(admin.service_account_token(namespace, "web-client"))
    (account / "ca.crt").write_text(kube.ca_file.read_text())
    (account / "namespace").write_text(namespace)
    host, port = kube.apiserver.address.rsplit(":", 1)
    config = ClusterConfig.in_cluster(root=account, environ={
        "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port})
    assert config.namespace == namespace
    assert isinstance(config.token, TokenFile)
    admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1")])
    # namespace=None: the pod's own namespace
    with EndpointSliceInstancer("web", namespace=None, config=config) as instancer:
        assert instancer.namespace == namespace
        assert instancer.state == sd.Event(("10.0.0.1:8080",))


def test_kubeconfig_with_a_client_certificate_and_with_an_exec_plugin(
        kube: KubeAPIServer, admin: KubeAdmin, namespace: str, tmp_path: Path) -> None:
    admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1")])
    admin.grant(namespace, "kitsd-client")  # the client certificate's common name
    path = kube.kubeconfig(tmp_path / "cert.kubeconfig", client_cert=True, namespace=namespace)
    config = ClusterConfig.from_kubeconfig(path)
    assert config.namespace == namespace
    with EndpointSliceInstancer("web", namespace=None, config=config) as instancer:
        assert instancer.state == sd.Event(("10.0.0.1:8080",))
    # an exec credential plugin printing the reader's token
    admin.grant(namespace, "reader")
    plugin = tmp_path / "plugin.py"
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": kube.token("reader"),
                             "expirationTimestamp": "2999-01-01T00:00:00Z"}}
    plugin.write_text(
        "import json, os\n"
        "assert json.loads(os.environ['KUBERNETES_EXEC_INFO'])['kind'] == 'ExecCredential'\n"
        f"print(json.dumps({credential!r}))\n")
    document = json.loads(kube.kubeconfig(tmp_path / "exec.kubeconfig", user=None).read_text())
    document["users"][0]["user"] = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
        "args": [str(plugin)], "interactiveMode": "Never"}}
    (tmp_path / "exec.kubeconfig").write_text(json.dumps(document))
    config = ClusterConfig.from_kubeconfig(tmp_path / "exec.kubeconfig")
    with EndpointSliceInstancer("web", namespace=namespace, config=config) as instancer:
        assert instancer.state == sd.Event(("10.0.0.1:8080",))


async def test_async_instancer_follows_changes_and_closes_cleanly(
        admin: KubeAdmin, namespace: str, reader: ClusterConfig) -> None:
    await asyncio.to_thread(admin.put_slice, namespace, "web-1", "web", [endpoint("10.0.0.1")])
    before = set(threading.enumerate())  # the loop's executor thread (ours) started above
    events: list[sd.Event] = []
    async with AsyncEndpointSliceInstancer("web", namespace=namespace, port="http",
                                           config=reader) as instancer:
        async with asyncio.timeout(10):
            await instancer.wait_answered()
        instancer.subscribe(events.append)
        assert events[0] == sd.Event(("10.0.0.1:8080",))
        await asyncio.to_thread(admin.put_slice, namespace, "web-1", "web",
                                [endpoint("10.0.0.1", terminating=True), endpoint("10.0.0.2")])
        await async_wait_for(lambda: events[-1].instances == ("10.0.0.2:8080",), 10,
                             "the terminating one to leave")
        task = instancer._task
    assert task.done()
    assert_no_new_threads(before)


def test_equal_instancers_share_one_watch_and_stop_it_with_the_last(
        admin: KubeAdmin, namespace: str, reader: ClusterConfig) -> None:
    before = set(threading.enumerate())
    admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1")])
    keys = len(_WATCHES.keys())
    first = EndpointSliceInstancer("web", namespace=namespace, config=reader)
    second = EndpointSliceInstancer("web", namespace=namespace, config=reader)
    assert len(_WATCHES.keys()) == keys + 1
    assert first.stats is second.stats
    first.stop()
    assert second.state.instances == ("10.0.0.1:8080",)
    started = time.monotonic()
    second.stop()
    assert time.monotonic() - started < 2.0  # prompt: the watch in flight is abandoned
    assert len(_WATCHES.keys()) == keys
    assert_no_new_threads(before)


def test_bad_arguments_raise_before_anything_starts(reader: ClusterConfig) -> None:
    before = set(threading.enumerate())
    for kwargs, kind in (
        ({"service": "Web"}, MisuseError), ({"service": "web/x"}, MisuseError),
        ({"service": "web", "namespace": "Shop"}, MisuseError),
        ({"service": "web", "port": 0}, MisuseError), ({"service": "web", "port": "no way"},
                                                      MisuseError),
        ({"service": "web", "port": 1.5}, TypeError), ({"service": "web", "port": True},
                                                      TypeError),
        ({"service": "web", "address_types": ["IPv5"]}, MisuseError),
        ({"service": "web", "address_types": "IPv4"}, TypeError),
        ({"service": "web", "liveness_timeout": 0}, MisuseError),
        ({"service": "web", "watch_timeout": 0.5}, MisuseError),
        ({"service": "web", "first_answer_timeout": -1}, MisuseError),
        ({"service": "web", "config": "https://x"}, TypeError),
    ):
        args = {"config": reader, **kwargs}
        with pytest.raises(kind):
            EndpointSliceInstancer(**args)  # type: ignore[arg-type]
    assert_no_new_threads(before)


def test_an_unloadable_ca_is_refused_at_construction(kube: KubeAPIServer) -> None:
    bad = ClusterConfig(server=kube.server, ca="-----BEGIN CERTIFICATE-----\nnope\n")
    with pytest.raises(MisuseError, match="cluster CA"):
        EndpointSliceInstancer("web", config=bad)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd (Linux)")
def test_starting_and_stopping_leaves_no_thread_and_no_file_descriptor(
        admin: KubeAdmin, namespace: str, reader: ClusterConfig) -> None:
    admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1")])
    before_threads = set(threading.enumerate())
    with EndpointSliceInstancer("web", namespace=namespace, config=reader):
        pass  # warm up: imports, the SSL context, the first loop
    before = _open_fds()
    for _ in range(10):
        with EndpointSliceInstancer("web", namespace=namespace, config=reader) as instancer:
            assert instancer.state.instances == ("10.0.0.1:8080",)

    async def twice() -> None:
        for _ in range(10):
            async with AsyncEndpointSliceInstancer("web", namespace=namespace,
                                                   config=reader) as instancer:
                await instancer.wait_answered()

    asyncio.run(twice())
    assert_no_new_threads(before_threads)
    wait_for(lambda: _open_fds() <= before, 5, f"file descriptors back to {before}")
