"""The test run installs kube-apiserver when tests under tests/k8s are selected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kitsd.compose.install import SERVERS
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
