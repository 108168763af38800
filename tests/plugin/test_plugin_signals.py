"""A test run using the plugin's servers, killed (SIGTERM as a CI runner does, or
SIGKILL), leaves no server behind (issue 16.6: it left an etcd running, in a session
of its own that a process-group kill misses).  The parent-death watch
(:mod:`kitsd.compose.reaper`) stops it and removes its directory."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from kitsd.compose import reaper
from tests.helpers import python_m, wait_for
from tests.kitsd.test_signals import alive, port_open

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.kitsd_servers("etcd")]

CONFTEST = textwrap.dedent(
    """
    import kitsd.pytest_plugin

    def pytest_configure(config):
        manager = config.pluginmanager
        if not manager.has_plugin("kitsd") and not manager.is_registered(kitsd.pytest_plugin):
            manager.register(kitsd.pytest_plugin, "kitsd")
    """
)

USER_TEST = textwrap.dedent(
    """
    import json, os, threading

    def test_holds_an_etcd(kitsd_etcd):
        path = os.environ["KITSD_TEST_REPORT"]
        with open(path + ".tmp", "w") as report:
            json.dump({"pid": kitsd_etcd.pid, "port": kitsd_etcd.client_port,
                       "workdir": str(kitsd_etcd.workdir)}, report)
        os.rename(path + ".tmp", path)  # whole, or not there
        threading.Event().wait()  # until the run is killed
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL, signal.SIGHUP])
def test_a_killed_run_leaves_no_server(tmp_path: Path, signum: int) -> None:
    import json

    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_user.py").write_text(USER_TEST)
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KITSD_TEST_REPORT": str(report)}
    env.pop("KITSD_ETCD_ENDPOINT", None)  # a server of its own
    run = subprocess.Popen(python_m("pytest", "-q", "-p", "no:cacheprovider", "test_user.py"),
                           cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: report.exists() or run.poll() is not None, 60,
                 "the user's test to hold its etcd")
        held = json.loads(report.read_text())
        assert alive(held["pid"])
        assert port_open(held["port"])
        run.send_signal(signum)
        run.wait(30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    wait_for(lambda: not alive(held["pid"]), reaper.GRACE + 10, "the etcd to be stopped")
    wait_for(lambda: not port_open(held["port"]), 10, "its port to close")
    wait_for(lambda: not Path(held["workdir"]).exists(), 10,
             "its directory to be removed")
