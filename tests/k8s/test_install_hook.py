"""The test run installs kube-apiserver when tests under tests/k8s are selected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kitsd.compose.install import SERVERS, missing, status
from tests.conftest import servers_needed

ROOT = Path(__file__).resolve().parents[2]


class _Item:
    def __init__(self, path: Path, integration: bool = True) -> None:
        self.path = path
        self._integration = integration

    def get_closest_marker(self, name: str) -> object | None:
        return object() if self._integration and name == "integration" else None

    def iter_markers(self, name: str) -> list[object]:
        return []


def test_k8s_integration_tests_need_the_kube_apiserver() -> None:
    items = [_Item(ROOT / "tests" / "k8s" / "test_instancer.py"),
             _Item(ROOT / "tests" / "kitsd" / "test_chaos_k8s.py"),
             _Item(ROOT / "tests" / "k8s" / "test_slices.py", integration=False)]
    assert servers_needed(items) == {"kube-apiserver"}  # type: ignore[arg-type]


def test_the_install_row_names_an_executable_script(monkeypatch: pytest.MonkeyPatch) -> None:
    server = SERVERS["kube-apiserver"]
    script = server.installer
    assert script.is_file()
    assert os.access(script, os.X_OK)
    assert "K8S_VERSION=\"1.37.2\"" in script.read_text()
    assert not server.external()  # no external server option: the tests restart theirs
    monkeypatch.setenv(server.binary_env, "/nonexistent/kube-apiserver")
    assert not server.installed()


def test_a_missing_kube_etcd_means_not_installed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The installer puts two binaries in place and the launcher needs both: a present
    kube-apiserver with kube-etcd gone must be installed again, not reported as there."""
    server = SERVERS["kube-apiserver"]
    apiserver = tmp_path / "kube-apiserver"
    etcd = tmp_path / "kube-etcd"
    apiserver.write_text("#!/bin/sh\n")
    monkeypatch.setenv(server.binary_env, str(apiserver))
    monkeypatch.setenv("KITSD_KUBE_ETCD_BINARY", str(etcd))
    assert not server.installed()
    assert server.absent == [str(etcd)]
    assert str(etcd) in status(server)
    assert missing(["kube-apiserver"]) == [server]
    etcd.write_text("#!/bin/sh\n")
    assert server.installed()
    assert missing(["kube-apiserver"]) == []


def test_the_launcher_and_the_install_row_agree_on_kube_etcd() -> None:
    from kitsd.compose import kubernetes

    companions = dict(SERVERS["kube-apiserver"].companions)
    assert companions["KITSD_KUBE_ETCD_BINARY"] == "/usr/local/bin/kube-etcd"
    assert "KITSD_KUBE_ETCD_BINARY" in Path(kubernetes.__file__).read_text()
