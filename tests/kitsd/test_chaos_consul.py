"""``kitsd chaos --registry consul``, CI-sized: the whole schedule in about 25 s on a real
3-server Consul cluster (the full run is ``kitsd chaos --registry consul --duration 60``)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from kitsd.chaos import DEFAULT_FAULTS, run_chaos
from kitsd.compose.instance import InstanceProcess, instance_args
from kitsd.compose.process import free_ports

pytestmark = pytest.mark.integration


def test_whole_schedule_loses_no_call_and_converges(no_thread_leaks: None) -> None:
    lines: list[str] = []
    report = run_chaos(registry="consul", duration=16.0, rate=25.0, seed=11, say=lines.append)
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


def _consul_services(http_addr: str) -> dict[str, object]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://{http_addr}/v1/agent/services", timeout=5) as answer:
        services: dict[str, object] = json.loads(answer.read())
    return services


def test_registry_url_limits_registry_faults_to_cutting_ourselves_off(
    kitsd_consul: Any, no_thread_leaks: None
) -> None:
    report = run_chaos(registry_url=f"consul://{kitsd_consul.http_addr}", duration=6.0,
                       rate=20.0, seed=2, faults=["kill", "leader", "cut", "lost"])
    phases = {phase.name: phase for phase in report.phases}
    assert phases["leader"].skipped  # not our servers to kill
    assert not phases["cut"].skipped
    assert not phases["lost"].skipped
    assert report.ok, [phase.errors for phase in report.phases]
    # the instances deregistered on the way out: nothing left in the user's agent
    assert not [name for name in _consul_services(kitsd_consul.http_addr)
                if name.startswith("kitsd-chaos-")]


def test_service_mode_loads_instances_someone_else_runs(
    kitsd_consul: Any, tmp_path: Path
) -> None:
    service = f"demo-{uuid.uuid4().hex[:8]}"
    ports = free_ports(3)
    processes = [InstanceProcess(f"d{n}", workdir=tmp_path, port=port,
                                 args=instance_args(port=port, consul=kitsd_consul.http_addr,
                                                    service=service))
                 for n, port in enumerate(ports)]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready()
        report = run_chaos(registry_url=f"consul://{kitsd_consul.http_addr}", service=service,
                           duration=6.0, rate=20.0, seed=3, faults=["kill", "cut", "lost"])
    finally:
        for process in processes:
            process.stop()
            process.close()
    phases = {phase.name: phase for phase in report.phases}
    assert phases["kill"].skipped  # not ours to hurt
    assert phases["lost"].converge_fault_s is not None  # their registrar restored it
    assert sorted(report.started) == sorted(process.instance for process in processes)
    assert report.ok, [phase.errors for phase in report.phases]
