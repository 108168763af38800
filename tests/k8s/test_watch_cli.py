"""``kitsd watch k8s://...`` shows live changes from a real kube-apiserver."""

from __future__ import annotations

from pathlib import Path

import pytest

from kitsd.compose.kubernetes import KubeAdmin, KubeAPIServer, endpoint
from tests.helpers import WatchProcess

pytestmark = pytest.mark.integration


def test_watch_prints_changes_from_kubernetes(
        kube: KubeAPIServer, admin: KubeAdmin, namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    admin.grant(namespace, "reader")
    admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1")])
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(tmp_path / "config", user="reader")))
    watch = WatchProcess(f"k8s://{namespace}/web:http")
    try:
        watch.wait_line(lambda line: "1 instance: 10.0.0.1:8080" in line)
        admin.put_slice(namespace, "web-2", "web", [endpoint("10.0.0.2")])
        watch.wait_line(lambda line: "2 instances: 10.0.0.1:8080, 10.0.0.2:8080" in line)
        admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1", terminating=True)])
        watch.wait_line(lambda line: "1 instance: 10.0.0.2:8080" in line)
    finally:
        watch.close()
    assert watch.process.returncode == 130  # interrupted (SIGINT), as kitsd's CLI documents
    assert kube.token("reader") not in "".join(watch.lines)


def test_watch_prints_a_permission_error_naming_the_verb(
        kube: KubeAPIServer, namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(tmp_path / "config", user="nobody")))
    watch = WatchProcess(f"k8s://{namespace}/web")
    try:
        line = watch.wait_line(lambda line: "error" in line)
        assert "cannot list endpointslices.discovery.k8s.io" in line
        assert kube.token("nobody") not in line
    finally:
        watch.close()
