"""``kitsd chaos --registry k8s``, CI-sized: the whole schedule on a real kube-apiserver
pair (the full run is ``kitsd chaos --registry k8s --duration 60``)."""

from __future__ import annotations

import pytest

from kitsd.chaos import DEFAULT_FAULTS, run_chaos
from kitsd.compose.kubernetes import host_address

pytestmark = pytest.mark.integration


def test_whole_schedule_on_kubernetes_loses_no_call_and_converges(
        no_thread_leaks: None) -> None:
    if host_address() is None:
        pytest.skip("SKIPPED ON PURPOSE: no non-loopback IPv4 address for the instances "
                    "(kube-apiserver refuses loopback endpoints)")
    lines: list[str] = []
    report = run_chaos(registry="k8s", duration=16.0, rate=25.0, seed=11, say=lines.append)
    phases = {phase.name: phase for phase in report.phases}
    assert list(phases) == ["baseline", *DEFAULT_FAULTS]
    assert not any(phase.skipped for phase in report.phases)
    assert report.failed == 0, [phase.errors for phase in report.phases]
    assert report.ok, lines
    assert all(phase.calls > 0 for phase in report.phases)
    for name in ("kill", "hang", "leader", "lost"):
        assert phases[name].converge_fault_s is not None, lines
    for name in ("kill", "hang", "leader", "cut"):
        assert phases[name].converge_heal_s is not None, lines
    assert "kube-apiserver" in phases["leader"].fault
    assert phases["cut"].retries > 0
