"""``kitsd chaos`` on the in-process registry (instances are real processes), its options,
its report and its exit status.  The etcd and Consul runs are in ``test_chaos_etcd.py``
and ``test_chaos_consul.py``."""

from __future__ import annotations

import argparse
import json
import threading

import pytest

import kitsd.chaos
from kitsd.chaos import ChaosReport, PhaseReport, format_table, main_chaos, run_chaos
from kitsd.cli import main


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"faults": ["kill", "nap"]}, "unknown faults"),
        ({"instances": 2}, "at least 3 instances"),
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
