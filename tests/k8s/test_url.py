"""``k8s://[namespace/]service[:port]`` URLs."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from kitsd import sd
from kitsd.compose.kubernetes import KubeAdmin, KubeAPIServer, endpoint
from kitsd.core.errors import MisuseError
from kitsd.sd.k8s.url import K8sURL, parse_url


def parse(url: str) -> K8sURL:
    return parse_url(urllib.parse.urlsplit(url))


@pytest.mark.parametrize(("url", "expected"), [
    ("k8s://web", K8sURL("web")),
    ("k8s://web:http", K8sURL("web", port="http")),
    ("k8s://web:8080", K8sURL("web", port=8080)),
    ("k8s://shop/web", K8sURL("web", namespace="shop")),
    ("k8s://shop/web:grpc", K8sURL("web", namespace="shop", port="grpc")),
    ("k8s://shop/web:8080", K8sURL("web", namespace="shop", port=8080)),
    ("K8S://shop/web:http?context=prod", K8sURL("web", "shop", "http", context="prod")),
    ("k8s://web?kubeconfig=/etc/kube/config",
     K8sURL("web", kubeconfig="/etc/kube/config")),
])
def test_the_url_form(url: str, expected: K8sURL) -> None:
    assert parse(url) == expected


@pytest.mark.parametrize(("url", "words"), [
    ("k8s://", "names a Service"),
    ("k8s://shop/", "names a Service"),
    ("k8s://a/b/c", "k8s://[namespace/]service[:port]"),
    ("k8s:///web", "k8s://[namespace/]service[:port]"),
    ("k8s://web:", "empty port"),
    ("k8s://web:0", "1-65535"),
    ("k8s://web:99999", "1-65535"),
    ("k8s://web:Not_A_Name", "port name"),
    ("k8s://web#frag", "fragment"),
    ("k8s://web?context=a&context=b", "at most once"),
    ("k8s://web?context=", "at most once"),
])
def test_bad_urls_say_what_is_wrong(url: str, words: str) -> None:
    with pytest.raises(MisuseError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse(url)


def test_credentials_are_refused_and_never_echoed() -> None:
    with pytest.raises(MisuseError, match="credentials do not belong") as raised:
        parse("k8s://admin:hunter2@shop/web")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(MisuseError, match="tokens come from the kubeconfig") as raised:
        parse("k8s://shop/web?token=hunter2")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(MisuseError) as raised:
        sd.instancer_from_url("k8s://shop/Web?token=hunter2")
    assert "hunter2" not in str(raised.value)


def test_an_unknown_scheme_lists_k8s() -> None:
    with pytest.raises(MisuseError, match="k8s://"):
        sd.instancer_from_url("kube://web")


@pytest.mark.integration
def test_instancer_from_url_reads_kubeconfig_and_namespace(
        kube: KubeAPIServer, admin: KubeAdmin, namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    admin.grant(namespace, "reader")
    admin.put_slice(namespace, "web-1", "web", [endpoint("10.0.0.1")],
                    ports=[{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}])
    path = kube.kubeconfig(tmp_path / "config", user="reader", namespace=namespace)
    monkeypatch.setenv("KUBECONFIG", str(path))
    with sd.instancer_from_url(f"k8s://{namespace}/web:grpc") as instancer:
        assert instancer.state == sd.Event(("10.0.0.1:9090",))
    with sd.instancer_from_url("k8s://web:8080") as instancer:  # the context's namespace
        assert instancer.state == sd.Event(("10.0.0.1:8080",))
    with sd.instancer_from_url("k8s://web") as instancer:  # two ports: which one?
        assert isinstance(instancer.state.error, MisuseError)
        assert "name one" in str(instancer.state.error)
    monkeypatch.delenv("KUBECONFIG")
    with sd.instancer_from_url(
            f"k8s://web:http?kubeconfig={urllib.parse.quote(str(path))}&context=kitsd") as inst:
        assert inst.state == sd.Event(("10.0.0.1:8080",))
    with pytest.raises(MisuseError, match="no context 'nope'"):
        sd.instancer_from_url(f"k8s://web?kubeconfig={path}&context=nope")
