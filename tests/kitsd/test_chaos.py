"""``kitsd chaos`` on the in-process registry (instances are real processes), its options,
its report and its exit status.  The etcd and Consul runs are in ``test_chaos_etcd.py``
and ``test_chaos_consul.py``."""

from __future__ import annotations

import argparse
import http.server
import json
import socket
import threading
import time

import pytest

import kitsd.chaos
import kitsd.cli
from kitsd.chaos import ChaosReport, PhaseReport, format_table, main_chaos, run_chaos
from kitsd.chaos_registry import check_url
from kitsd.cli import main


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"faults": ["kill", "nap"]}, "unknown faults"),
        ({"instances": 2}, "at least 3 instances"),
        ({"instances": kitsd.chaos.MAX_INSTANCES + 1}, "at most 50 instances"),
        ({"duration": 0}, "must be > 0"),
        ({"service": "demo"}, "--service needs --registry-url"),
        ({"registry": "zk"}, "--registry must be"),
    ],
)
def test_bad_options_fail_before_anything_starts(kwargs: dict[str, object],
                                                 message: str) -> None:
    before = set(threading.enumerate())
    with pytest.raises(ValueError, match=message):
        run_chaos(**kwargs)  # type: ignore[arg-type]
    assert set(threading.enumerate()) - before == set()  # nothing started


def test_memory_schedule_hides_every_fault(no_thread_leaks: None) -> None:
    lines: list[str] = []
    report = run_chaos(registry="memory", duration=8.0, rate=30.0, seed=7, say=lines.append,
                       faults=["kill", "hang", "slow", "leader", "cut", "lost"])
    by_name = {phase.name: phase for phase in report.phases}
    assert list(by_name) == ["baseline", "kill", "hang", "slow", "leader", "cut", "lost"]
    assert report.failed == 0, [phase.errors for phase in report.phases]
    assert report.ok
    assert all(phase.calls > 0 for phase in report.phases)
    # the killed and the hung instance left the set and came back
    for name in ("kill", "hang"):
        assert by_name[name].converge_fault_s is not None
        assert by_name[name].converge_heal_s is not None
    # a hung instance costs attempts that time out and are retried elsewhere
    assert by_name["hang"].retries > 0
    assert by_name["hang"].p99_ms is not None
    assert by_name["hang"].p99_ms >= 400
    assert by_name["slow"].p99_ms is not None
    assert by_name["slow"].p99_ms >= 200
    assert by_name["leader"].skipped
    assert by_name["cut"].skipped
    assert any("phase kill: SIGKILL" in line for line in lines)


def test_same_seed_same_victims() -> None:
    def victims(seed: int) -> list[int]:
        report = run_chaos(registry="memory", duration=2.0, rate=10.0, seed=seed,
                           faults=["slow", "lost"])
        # ports differ between runs; the victims' places in start order do not
        return [report.started.index(phase.fault.split()[0] if phase.name == "slow"
                                     else phase.fault.split()[2])
                for phase in report.phases[1:]]

    first = victims(3)
    assert first == victims(3)
    assert len(set(first)) == 2  # one victim per fault while there are enough


def _report(failed: int, converged: bool = True) -> ChaosReport:
    report = ChaosReport("memory", 3, 10.0, 1.0, 1)
    report.phases = [PhaseReport("baseline", "none", calls=10),
                     PhaseReport("kill", "SIGKILL x", calls=10, failed=failed,
                                 converged=converged, converge_fault_s=0.5,
                                 errors={"FAILED RetryError: boom": failed} if failed else {})]
    return report


@pytest.mark.parametrize(("failed", "converged", "code"),
                         [(0, True, 0), (1, True, 1), (0, False, 1)])
def test_exit_status_says_whether_a_call_failed_or_a_phase_did_not_converge(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    failed: int, converged: bool, code: int,
) -> None:
    monkeypatch.setattr(kitsd.chaos, "run_chaos", lambda **kwargs: _report(failed, converged))
    args = argparse.Namespace(registry="memory", registry_url=None, instances=3,
                              duration=1.0, rate=10.0, faults="kill", seed=1, service=None,
                              json=False, verbose=False)
    assert main_chaos(args) == code
    out = capsys.readouterr().out
    assert ("OK: no call failed" in out) == (code == 0)
    if failed:
        assert "1 x FAILED RetryError: boom" in out


def test_table_has_a_row_per_phase_with_the_figures() -> None:
    import io

    out = io.StringIO()
    report = _report(0)
    report.phases[1].p50_ms, report.phases[1].p99_ms = 1.5, 12.25
    format_table(report, out)
    lines = out.getvalue().splitlines()
    header = next(line for line in lines if line.startswith("phase"))
    for column in ("calls", "failed", "retries", "ejections", "p50 ms", "p99 ms",
                   "converged (fault)", "converged (heal)"):
        assert column in header
    kill = next(line for line in lines if line.startswith("kill"))
    assert "1.5" in kill
    assert "12.2" in kill
    assert "0.50s" in kill


def test_cli_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["chaos", "--registry", "memory", "--duration", "3", "--rate", "20",
                 "--faults", "kill", "--seed", "5", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["ok"] is True
    assert data["failed"] == 0
    assert data["seed"] == 5
    assert [phase["name"] for phase in data["phases"]] == ["baseline", "kill"]
    assert data["calls"] == sum(phase["calls"] for phase in data["phases"]) > 0


def test_core_and_cli_import_nothing_of_compose_or_the_chaos_machinery() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, sd, sd.http, lb, breaker, kitsd.cli\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'compose'"
            " or m.startswith('kitsd.chaos')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_a_missing_server_binary_is_a_clear_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kitsd.compose import consul
    monkeypatch.setattr(consul, "CONSUL_BINARY", "/nonexistent/consul")
    assert main(["chaos", "--registry", "consul", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert "could not run: Consul binary not found at /nonexistent/consul" in err
    assert "Traceback" not in err


def test_rolling_is_offered_but_not_in_the_default_schedule() -> None:
    assert "rolling" in kitsd.chaos.FAULTS
    assert "rolling" not in kitsd.chaos.DEFAULT_FAULTS
    assert tuple(kitsd.chaos.FAULTS[:-1]) == kitsd.chaos.DEFAULT_FAULTS


def test_memory_rolling_restart_loses_no_call(no_thread_leaks: None) -> None:
    lines: list[str] = []
    report = run_chaos(registry="memory", duration=8.0, rate=30.0, seed=1, say=lines.append,
                       faults=["rolling"])
    rolling = report.phases[1]
    assert rolling.name == "rolling"
    assert rolling.converged, lines
    assert sum("restarted and seen again" in line for line in lines) == 3, lines
    assert report.failed == 0, rolling.errors
    assert (rolling.retries, rolling.ejections) == (0, 0)  # drained: nobody met a leaver


def _closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening: a connection is refused
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("scheme", ["consul", "etcd"])
def test_a_registry_url_nobody_answers_is_one_line_exit_1(
        scheme: str, capsys: pytest.CaptureFixture[str], no_thread_leaks: None) -> None:
    """Was a 12 s wait, then 'could not run: demo instance i0 exited with 1' and the
    instance's 40-line traceback, exit 2."""
    port = _closed_port()
    started = time.monotonic()
    code = main(["chaos", "--registry-url", f"{scheme}://127.0.0.1:{port}/p/", "--duration", "3"])
    captured = capsys.readouterr()
    assert code == 1
    assert time.monotonic() - started < 5  # no instance was started to find it out
    agent = "Consul agent" if scheme == "consul" else "etcd"
    assert captured.err.splitlines() == [
        f"kitsd chaos: the registry was never reached: no {agent} answered at "
        f"'127.0.0.1:{port}': connection refused (--registry-url names "
        + ("an agent's HTTP address, as consul://127.0.0.1:8500)" if scheme == "consul"
           else "etcd's client address, as etcd://127.0.0.1:2379/prefix/)")]


def test_a_registry_url_answered_by_something_else_says_so(
        capsys: pytest.CaptureFixture[str]) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:  # answers 501 to everything: not a Consul agent
        code = main(["chaos", "--registry-url", f"consul://127.0.0.1:{server.server_port}"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert code == 1
    assert "it answered HTTP 501, as no registry of that kind would" in capsys.readouterr().err


def test_a_registry_url_is_checked_before_anything_is_said_or_started() -> None:
    """'starting zk://... ...' came first, then the refusal."""
    said: list[str] = []
    with pytest.raises(ValueError, match="--registry-url must be etcd://"):
        run_chaos(registry_url="zk://127.0.0.1:2181/x", say=said.append)
    assert said == []
    # a bare host is the agent's or the member's usual port, as kitsd watch's URLs
    # (consul://localhost ended in "invalid literal for int() with base 10: 'localhost'")
    assert check_url("consul://localhost") == ("consul", ["localhost:8500"], "")
    assert check_url("etcd://a,[::1]/p/") == ("etcd", ["a:2379", "[::1]:2379"], "/p/")


def test_a_bad_hedge_says_what_it_wants_once(capsys: pytest.CaptureFixture[str]) -> None:
    """Was 'argument --hedge: --hedge must be ...: could not convert string to float: 'abc''."""
    for bad in ("abc", "p200"):
        with pytest.raises(SystemExit) as exited:
            main(["chaos", "--hedge", bad])
        assert exited.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            "kitsd chaos: error: argument --hedge: must be pNN (a percentile between 0 and "
            f"100, e.g. p95) or seconds (e.g. 0.05), not {bad!r}")


def test_the_command_line_bounds_instances_as_the_run_does() -> None:
    assert kitsd.cli.CHAOS_MAX_INSTANCES == kitsd.chaos.MAX_INSTANCES
