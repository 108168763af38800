"""The rolling-restart proof, shared by ``test_rolling_{consul,etcd,zk}.py``."""

from __future__ import annotations

import json

import pytest

from kitsd.serve.rolling import RollingReport, rolling_restart


def prove(registry: str, capsys: pytest.CaptureFixture[str]) -> dict[str, RollingReport]:
    """Drained, naive and SIGKILLed rolling restarts of 3 instances under load: the drained
    one loses nothing; every figure is printed for the CI log."""
    reports = {
        "drain": rolling_restart(registry, mode="drain", steady=1.5, margin=1.0),
        "naive": rolling_restart(registry, mode="naive", steady=1.5),
        "sigkill": rolling_restart(registry, mode="drain", kill="SIGKILL", steady=1.5),
    }
    with capsys.disabled():
        for name, report in reports.items():
            figures = {key: value for key, value in report.to_json().items() if key != "errors"}
            print(f"\n[rolling {report.registry} {name}] {json.dumps(figures)}")
    drained = reports["drain"]
    assert drained.gets > 100
    assert drained.posts > 100
    assert (drained.failed_gets, drained.failed_posts) == (0, 0), drained.errors
    assert drained.duplicated_posts == 0
    assert drained.ejections == 0  # no caller ever met a leaving instance
    assert len(drained.restart_seconds) == 3
    killed = reports["sigkill"]
    # GETs are retried elsewhere; only one whose response had begun when the process
    # died cannot be (the transport streams bodies), a window of microseconds
    assert killed.failed_gets == killed.truncated_gets, killed.errors
    assert killed.duplicated_posts == 0  # never retried once sent
    for report in reports.values():
        assert report.duplicated_posts == 0
    return reports
