"""ClusterConfig: kubeconfig loading and merging, in-cluster, token sources, redaction."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from kitsd.core.errors import MisuseError, PermissionDeniedError
from kitsd.sd.k8s import ClusterConfig, ExecToken, StaticToken, TokenFile
from kitsd.sd.k8s.config import SERVICE_ACCOUNT_DIR

SECRET = "s3cr3t-token-value"  # noqa: S105 - a test value that must never be shown


def write_kubeconfig(path: Path, *, current: str | None = "dev", **overrides: Any) -> Path:
    document: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c1", "cluster": {"server": "https://10.0.0.1:6443"}},
                     {"name": "c2", "cluster": {"server": "https://10.0.0.2:6443",
                                                "insecure-skip-tls-verify": True,
                                                "tls-server-name": "kubernetes",
                                                "proxy-url": "http://proxy:3128"}}],
        "users": [{"name": "u1", "user": {"token": SECRET}},
                  {"name": "u2", "user": {"tokenFile": "token.txt"}}],
        "contexts": [{"name": "dev", "context": {"cluster": "c1", "user": "u1",
                                                 "namespace": "shop"}},
                     {"name": "prod", "context": {"cluster": "c2", "user": "u2"}}],
    }
    if current is not None:
        document["current-context"] = current
    document.update(overrides)
    path.write_text(json.dumps(document))
    return path


def test_current_context_and_a_named_one(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config")
    (tmp_path / "token.txt").write_text("file-token\n")
    dev = ClusterConfig.from_kubeconfig(path)
    assert dev.server == "https://10.0.0.1:6443"
    assert dev.namespace == "shop"
    assert dev.token == StaticToken(SECRET)
    assert dev.verify
    prod = ClusterConfig.from_kubeconfig(path, context="prod")
    assert prod.namespace == "default"
    assert not prod.verify
    assert prod.tls_server_name == "kubernetes"
    assert prod.proxy == "http://proxy:3128"
    assert isinstance(prod.token, TokenFile)
    assert prod.token.path == tmp_path / "token.txt"  # relative to the kubeconfig's directory
    assert prod.token.token() == "file-token"


def test_kubeconfig_env_lists_files_merged_first_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_kubeconfig(tmp_path / "a", current=None,
                             clusters=[{"name": "c1", "cluster": {"server": "https://first:1"}}])
    second = write_kubeconfig(tmp_path / "b", current="dev")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(first), str(tmp_path / "missing"),
                                                      str(second)]))
    config = ClusterConfig.load()
    assert config.server == "https://first:1"  # c1 from the first file
    assert config.token == StaticToken(SECRET)  # u1 from the second
    assert "context dev" in config.source


def test_load_prefers_kubeconfig_then_in_cluster_then_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    if Path(SERVICE_ACCOUNT_DIR, "token").exists():
        pytest.skip("SKIPPED ON PURPOSE: this machine is a pod; the fallback order differs")
    with pytest.raises(MisuseError, match="no Kubernetes configuration"):
        ClusterConfig.load()
    (tmp_path / ".kube").mkdir()
    write_kubeconfig(tmp_path / ".kube" / "config")
    assert ClusterConfig.load().server == "https://10.0.0.1:6443"
    assert ClusterConfig.load(context="prod").server == "https://10.0.0.2:6443"


def test_bad_kubeconfigs_are_refused_saying_why(tmp_path: Path) -> None:
    with pytest.raises(MisuseError, match="no kubeconfig file"):
        ClusterConfig.from_kubeconfig(tmp_path / "nope")
    path = write_kubeconfig(tmp_path / "config", current=None)
    with pytest.raises(MisuseError, match="no current-context"):
        ClusterConfig.from_kubeconfig(path)
    with pytest.raises(MisuseError, match="no context 'staging'"):
        ClusterConfig.from_kubeconfig(path, context="staging")
    bad = tmp_path / "bad"
    bad.write_text("clusters: [unclosed")
    with pytest.raises(MisuseError, match="not YAML"):
        ClusterConfig.from_kubeconfig(bad)
    bad.write_text("- a list")
    with pytest.raises(MisuseError, match="not a mapping"):
        ClusterConfig.from_kubeconfig(bad)
    for user, words in (
        ({"auth-provider": {"name": "gcp"}}, "auth-provider"),
        ({"username": "u", "password": SECRET}, "basic auth"),
        ({"client-certificate-data": "bm9wZQ=="}, "needs its key"),
        ({"client-certificate-data": "!!!", "client-key-data": "!!!"}, "not base64"),
    ):
        path = write_kubeconfig(tmp_path / "config", users=[{"name": "u1", "user": user}])
        with pytest.raises(MisuseError, match=words) as raised:
            ClusterConfig.from_kubeconfig(path)
        assert SECRET not in str(raised.value)
    path = write_kubeconfig(tmp_path / "config", contexts=[
        {"name": "dev", "context": {"cluster": "gone", "user": "u1"}}])
    with pytest.raises(MisuseError, match="names cluster 'gone'"):
        ClusterConfig.from_kubeconfig(path)


def test_certificate_authority_data_and_files(tmp_path: Path) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"
    (tmp_path / "ca.pem").write_text(pem)
    path = write_kubeconfig(tmp_path / "config", clusters=[
        {"name": "c1", "cluster": {"server": "https://h:1", "certificate-authority": "ca.pem"}}])
    assert ClusterConfig.from_kubeconfig(path).ca == pem
    path = write_kubeconfig(tmp_path / "config", clusters=[
        {"name": "c1", "cluster": {"server": "https://h:1", "certificate-authority-data":
                                   base64.b64encode(pem.encode()).decode()}}])
    config = ClusterConfig.from_kubeconfig(path)
    assert config.ca == pem
    with pytest.raises(MisuseError, match="cluster CA"):
        _ = config.ssl_context  # not a real certificate


def test_in_cluster(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(SECRET)
    (tmp_path / "namespace").write_text("payments\n")
    config = ClusterConfig.in_cluster(root=tmp_path, environ={
        "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    assert config.server == "https://10.96.0.1:443"
    assert config.namespace == "payments"
    assert config.ca is None
    assert config.token == TokenFile(tmp_path / "token")
    v6 = ClusterConfig.in_cluster(root=tmp_path, environ={"KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert v6.server == "https://[fd00::1]:443"
    with pytest.raises(MisuseError, match="KUBERNETES_SERVICE_HOST"):
        ClusterConfig.in_cluster(root=tmp_path, environ={})
    with pytest.raises(MisuseError, match="no service account token"):
        ClusterConfig.in_cluster(root=tmp_path / "nope",
                                 environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"})


def test_a_token_file_is_read_again_when_it_changes_or_on_refresh(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    source = TokenFile(path)
    assert source.token() == "one"
    staged = tmp_path / "staged"
    staged.write_text("two")
    staged.replace(path)  # a new inode, as the kubelet's symlink swap
    assert source.token() == "two"
    os.utime(path, ns=(0, 0))
    path.write_text("333")
    os.utime(path, ns=(0, 0))  # same size and time: only a refresh notices
    assert source.token(refresh=True) == "333"
    path.write_text("")
    with pytest.raises(PermissionDeniedError, match="empty"):
        source.token(refresh=True)
    path.unlink()
    with pytest.raises(PermissionDeniedError, match="cannot read"):
        source.token()


def test_exec_plugin_tokens_are_cached_until_expiry_or_refresh(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os, sys, pathlib\n"
        f"runs = pathlib.Path({str(counter)!r})\n"
        "n = int(runs.read_text()) + 1 if runs.exists() else 1\n"
        "runs.write_text(str(n))\n"
        "expiry = sys.argv[1]\n"
        "status = {'token': f'token-{n}'}\n"
        "if expiry != 'none': status['expirationTimestamp'] = expiry\n"
        "print(json.dumps({'kind': 'ExecCredential', 'status': status}))\n")
    lasting = ExecToken(sys.executable, [str(plugin), "2999-01-01T00:00:00Z"])
    assert lasting.token() == "token-1"
    assert lasting.token() == "token-1"  # cached
    assert lasting.token(refresh=True) == "token-2"
    expired = ExecToken(sys.executable, [str(plugin), "2000-01-01T00:00:00Z"])
    assert expired.token() == "token-3"
    assert expired.token() == "token-4"  # expired: run again each time
    assert "token" not in repr(lasting).replace("ExecToken", "")


def test_exec_plugin_failures_name_the_command_not_its_output(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(f"import sys\nprint({SECRET!r})\nsys.exit(3)\n")
    with pytest.raises(PermissionDeniedError, match="exited with status 3") as raised:
        ExecToken(sys.executable, [str(plugin)]).token()
    assert SECRET not in str(raised.value)
    plugin.write_text(f"print({SECRET!r})\n")  # not an ExecCredential
    with pytest.raises(PermissionDeniedError, match="no ExecCredential") as raised:
        ExecToken(sys.executable, [str(plugin)]).token()
    assert SECRET not in str(raised.value)
    with pytest.raises(PermissionDeniedError, match="could not run"):
        ExecToken(str(tmp_path / "missing-plugin")).token()


def test_exec_users_in_a_kubeconfig(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", users=[{"name": "u1", "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "./bin/get-token",
        "args": ["--cluster", "c1"], "env": [{"name": "REGION", "value": "eu"}]}}}])
    token = ClusterConfig.from_kubeconfig(path).token
    assert isinstance(token, ExecToken)
    assert token.command == str(tmp_path / "bin" / "get-token")
    assert token.args == ("--cluster", "c1")
    assert token.env == {"REGION": "eu"}
    assert token.api_version == "client.authentication.k8s.io/v1beta1"


def test_secrets_are_never_shown(tmp_path: Path) -> None:
    config = ClusterConfig(server="https://h:1", token=StaticToken(SECRET),
                           client_cert="CERT", client_key=f"KEY {SECRET}")
    assert SECRET not in repr(config)
    assert "KEY" not in repr(config)
    assert SECRET not in repr(config.token)
    with pytest.raises(PermissionDeniedError):
        StaticToken("two\nlines")


def test_bad_fields_are_refused_naming_them() -> None:
    cases: tuple[tuple[dict[str, Any], str], ...] = (
        ({"server": "h:1"}, "server"), ({"server": "https://user:pw@h:1"}, "server"),
        ({"server": "https://h:1/prefix"}, "server"),
        ({"server": "https://h:1", "namespace": "Bad_NS"}, "namespace"),
        ({"server": "https://h:1", "client_cert": "x"}, "client_cert and client_key"),
    )
    for kwargs, words in cases:
        with pytest.raises(MisuseError, match=words):
            ClusterConfig(**kwargs)
    with pytest.raises(TypeError, match="token"):
        ClusterConfig(server="https://h:1", token=SECRET)  # type: ignore[arg-type]
    assert ClusterConfig(server="https://h:1/").server == "https://h:1"


def test_equal_configs_are_equal_and_hashable(tmp_path: Path) -> None:
    one = ClusterConfig(server="https://h:1", token=TokenFile(tmp_path / "t"))
    two = ClusterConfig(server="https://h:1", token=TokenFile(tmp_path / "t"))
    assert one == two
    assert hash(one) == hash(two)
    assert one != ClusterConfig(server="https://h:1", token=StaticToken("x"))
