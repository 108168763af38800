"""Shared fixtures, and installing the servers the selected integration tests need."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from kitsd.compose.install import InstallError, ensure
from tests.helpers import assert_no_new_threads


def pytest_configure(config: pytest.Config) -> None:
    """kitsd's own suite runs on its pytest plugin (:mod:`kitsd.pytest_plugin`): found
    through its ``pytest11`` entry point once installed, registered here otherwise (a
    checkout whose installed metadata predates the entry point)."""
    import kitsd.pytest_plugin

    manager = config.pluginmanager
    if not manager.has_plugin("kitsd") and not manager.is_registered(kitsd.pytest_plugin):
        manager.register(kitsd.pytest_plugin, "kitsd")


def servers_needed(items: list[pytest.Item]) -> set[str]:
    """The servers the selected integration tests start: tests under ``tests/etcd``
    need etcd, tests under ``tests/consul`` Consul, tests under ``tests/zk`` ZooKeeper
    and tests under ``tests/dns`` Consul (its DNS interface), tests under ``tests/k8s``
    kube-apiserver -- by directory, as the
    fixtures are defined there -- and test files named for a server need it too
    (``test_chaos_etcd.py``)."""
    needed: set[str] = set()
    for item in items:
        if item.get_closest_marker("integration") is None:
            continue
        parts = item.path.parts
        stem_words = item.path.stem.split("_")
        needed.update(name for name in ("etcd", "consul", "zk")
                      if name in parts or name in stem_words)
        if "dns" in parts:
            needed.add("consul")
        if "k8s" in parts or "k8s" in stem_words:
            needed.add("kube-apiserver")
    return needed


def pytest_collection_finish(session: pytest.Session) -> None:
    """Before the first test: install etcd / Consul when selected tests need them and
    they are missing (see :mod:`compose.install`)."""
    needed = servers_needed(session.items)
    if not needed:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    try:
        ensure(needed, say)
    except InstallError as error:
        raise pytest.UsageError(f"could not install the test servers: {error}") from error


@pytest.fixture
def no_thread_leaks() -> Iterator[None]:
    """Fail the test if it leaves a thread running."""
    before = set(threading.enumerate())
    yield
    assert_no_new_threads(before)
