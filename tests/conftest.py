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


#: Test directories and file-name words -> the server (a row of kitsd.compose.install's
#: SERVERS) their integration tests start.
SERVER_WORDS = {"etcd": "etcd", "consul": "consul", "zk": "zookeeper", "dns": "consul",
                "k8s": "kube-apiserver"}


def servers_needed(items: list[pytest.Item]) -> set[str]:
    """The servers the selected integration tests start: tests under ``tests/etcd``
    need etcd, tests under ``tests/consul`` Consul, tests under ``tests/zk`` ZooKeeper
    and tests under ``tests/dns`` Consul (its DNS interface), tests under ``tests/k8s``
    kube-apiserver -- by directory, as the
    fixtures are defined there --, test files named for a server need it too
    (``test_chaos_etcd.py``), and so does a test marked ``kitsd_servers("etcd", ...)``
    (the README's examples)."""
    needed: set[str] = set()
    for item in items:
        for marker in item.iter_markers("kitsd_servers"):
            needed.update(marker.args)
        if item.get_closest_marker("integration") is None:
            continue
        parts = item.path.parts
        stem_words = item.path.stem.split("_")
        needed.update(server for word, server in SERVER_WORDS.items()
                      if word in parts or word in stem_words)
    return needed


def pytest_collection_finish(session: pytest.Session) -> None:
    """Before the first test: install the servers the selected tests need and that are
    missing (see :mod:`kitsd.compose.install`).  Collecting alone (``--collect-only``)
    never installs anything."""
    if session.config.option.collectonly:
        return
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
