"""``kitsd chaos --registry etcd``, CI-sized: the whole schedule in about 25 s on a real
3-member etcd cluster (the full run is ``kitsd chaos --registry etcd --duration 60``)."""

from __future__ import annotations

from typing import Any

import pytest

from kitsd.chaos import DEFAULT_FAULTS, run_chaos

pytestmark = pytest.mark.integration


def test_whole_schedule_loses_no_call_and_converges(no_thread_leaks: None) -> None:
    lines: list[str] = []
    report = run_chaos(registry="etcd", duration=16.0, rate=25.0, seed=11, say=lines.append)
    phases = {phase.name: phase for phase in report.phases}
    assert list(phases) == ["baseline", *DEFAULT_FAULTS]
    assert not any(phase.skipped for phase in report.phases)
    assert report.failed == 0, [phase.errors for phase in report.phases]
    assert report.ok, lines
    assert all(phase.calls > 0 for phase in report.phases)
    for name in ("kill", "hang", "lost"):
        assert phases[name].converge_fault_s is not None, lines
    for name in ("kill", "hang", "leader", "cut"):
        assert phases[name].converge_heal_s is not None, lines
    # blind to the registry, the stack hid the crash by retrying elsewhere
    assert phases["cut"].retries > 0


def test_registry_url_limits_registry_faults_to_cutting_ourselves_off(
    kitsd_etcd: Any, no_thread_leaks: None
) -> None:
    report = run_chaos(registry_url=f"etcd://{kitsd_etcd.endpoint}/kitsd-chaos/",
                       duration=6.0, rate=20.0, seed=4, faults=["leader", "cut", "lost"])
    phases = {phase.name: phase for phase in report.phases}
    assert phases["leader"].skipped  # not our servers to kill
    assert phases["cut"].converge_heal_s is not None
    assert phases["lost"].converge_fault_s is not None
    assert report.ok, [phase.errors for phase in report.phases]


def test_rolling_restart_of_drained_instances_loses_no_call(no_thread_leaks: None) -> None:
    lines: list[str] = []
    report = run_chaos(registry="etcd", duration=10.0, rate=40.0, seed=2, say=lines.append,
                       faults=["rolling"])
    rolling = report.phases[1]
    assert rolling.name == "rolling"
    assert rolling.converged, lines
    assert rolling.converge_fault_s is not None
    assert sum("restarted and seen again" in line for line in lines) == 3, lines
    assert report.failed == 0, rolling.errors
    assert rolling.ejections == 0  # no call ever met a leaving instance
