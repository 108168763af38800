"""``kitsd chaos --registry etcd``, CI-sized: the whole schedule in about 25 s on a real
3-member etcd cluster (the full run is ``kitsd chaos --registry etcd --duration 60``)."""

from __future__ import annotations

import pytest

from kitsd.chaos import FAULTS, run_chaos

pytestmark = pytest.mark.integration


def test_whole_schedule_loses_no_call_and_converges(no_thread_leaks: None) -> None:
    lines: list[str] = []
    report = run_chaos(registry="etcd", duration=16.0, rate=25.0, seed=11, say=lines.append)
    phases = {phase.name: phase for phase in report.phases}
    assert list(phases) == ["baseline", *FAULTS]
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
