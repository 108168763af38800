"""kitsd's pytest plugin: cheap to import, starts nothing until a fixture is used, and its
fixtures and fault helpers work in a user's test run (driven here with ``pytester``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest_plugins = ["pytester"]

# A user's conftest: the plugin comes from its pytest11 entry point once kitsd is installed;
# a checkout whose installed metadata predates the entry point registers it by hand.
CONFTEST = textwrap.dedent(
    """
    import kitsd.pytest_plugin

    def pytest_configure(config):
        manager = config.pluginmanager
        if not manager.has_plugin("kitsd") and not manager.is_registered(kitsd.pytest_plugin):
            manager.register(kitsd.pytest_plugin, "kitsd")
    """
)


@pytest.fixture(autouse=True)
def _this_checkout_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's run (a subprocess in a temporary directory) imports this checkout."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def test_import_starts_nothing_and_loads_no_launcher_or_driver() -> None:
    code = textwrap.dedent(
        """
        import json, os, sys, threading
        import pytest
        before = set(sys.modules)
        import kitsd.pytest_plugin
        loaded = sorted(set(sys.modules) - before)
        children = open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()
        print(json.dumps({"loaded": loaded, "threads": threading.active_count(),
                          "children": children}))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    data = json.loads(result.stdout)
    assert data["loaded"] == ["kitsd", "kitsd.pytest_plugin"]
    assert data["threads"] == 1
    assert data["children"] == []


def test_fixtures_are_offered(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    result = pytester.runpytest_subprocess("--fixtures", "-q")
    for name in ("kitsd_etcd", "kitsd_etcd_cluster", "kitsd_consul", "kitsd_consul_cluster",
                 "kitsd_kube", "kitsd_memory_registry", "kitsd_faults"):
        result.stdout.fnmatch_lines([f"{name}*"])


def test_memory_registry_and_a_partitioned_client(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        """
        import socket

        def test_memory(kitsd_memory_registry):
            events = []
            kitsd_memory_registry.instancer("svc").subscribe(events.append)
            kitsd_memory_registry.registrar("svc", "127.0.0.1:1").register()
            assert events[-1].instances == ("127.0.0.1:1",)

        def test_partition(kitsd_faults):
            server = socket.create_server(("127.0.0.1", 0))
            port = server.getsockname()[1]
            proxy = kitsd_faults.partition(f"127.0.0.1:{port}")
            client = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
            accepted, _ = server.accept()
            client.sendall(b"ping")
            assert accepted.recv(4) == b"ping"
            proxy.stall()
            client.sendall(b"lost")
            accepted.settimeout(0.3)
            try:
                accepted.recv(4)
            except TimeoutError:
                pass
            else:
                raise AssertionError("bytes crossed a partition")
            proxy.resume()
            accepted.settimeout(2)
            assert accepted.recv(4) == b"lost"
            for sock in (client, accepted, server):
                sock.close()
        """
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


@pytest.mark.integration
def test_killed_members_are_back_for_the_next_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        """
        import kitsd.sd.etcd
        from kitsd import sd
        def test_kill_leader(kitsd_etcd_cluster, kitsd_faults):
            leader = kitsd_faults.kill_leader(kitsd_etcd_cluster)
            assert not leader.running
            new = kitsd_etcd_cluster.leader(timeout=15)
            assert new is not leader
            client = sd.etcd.connect(endpoints=kitsd_etcd_cluster.endpoints)
            try:
                for attempt in range(3):  # the first may go to the dead member
                    try:
                        client.put("/k", "v")
                        break
                    except Exception:
                        if attempt == 2:
                            raise
            finally:
                sd.etcd.close_client(client)

        def test_kill_the_single_member(kitsd_etcd, kitsd_faults):
            kitsd_faults.kill(kitsd_etcd)
            assert not kitsd_etcd.running

        def test_after(kitsd_etcd_cluster, kitsd_etcd):
            # kitsd_etcd does not heal itself: the faults helper restarted it
            assert kitsd_etcd.running
            assert kitsd_etcd.healthy()
            assert all(member.running for member in kitsd_etcd_cluster.members)
        """
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


class _Member:
    """A stand-in member that records what the faults helper did to it."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.running = True

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        self.running = False

    def kill(self) -> None:
        self.log.append(f"kill {self.name}")
        self.running = False

    def restart(self) -> None:
        self.log.append(f"restart {self.name}")
        self.running = True


@pytest.mark.parametrize(("kill", "verb"), [(False, "stop"), (True, "kill")])
def test_rolling_restart_goes_one_member_at_a_time(kill: bool, verb: str) -> None:
    from kitsd.pytest_plugin import Faults

    log: list[str] = []
    members = [_Member(name, log) for name in "abc"]
    faults = Faults()
    took = faults.rolling_restart(members, kill=kill,
                                  between=lambda member: log.append(f"seen {member.name}"))
    assert log == [line for name in "abc"
                   for line in (f"{verb} {name}", f"restart {name}", f"seen {name}")]
    assert len(took) == 3
    assert all(seconds >= 0 for seconds in took)
    members[1].running = False  # a test that left one down: restarted after it
    faults.undo()
    assert log[-1] == "restart b"
    assert all(member.running for member in members)
