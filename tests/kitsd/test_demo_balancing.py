"""``kitsd demo --balancer`` for the issue-9 balancers, and ``--slow-instance``."""

from __future__ import annotations

import io

import pytest

from kitsd.cli import main
from kitsd.demo import format_report, run_demo


@pytest.mark.parametrize("balancer", ["peak-ewma", "weighted", "consistent-hash"])
def test_demo_loses_no_call_with_the_new_balancers(balancer: str, no_thread_leaks: None) -> None:
    report = run_demo(instances=3, requests=300, balancer=balancer, concurrency=3, seed=7)
    assert report.failed == 0
    assert sum(report.calls_per_instance.values()) == 300
    assert report.calls_per_instance[report.added] > 0


def test_slow_instance_is_avoided_by_peak_ewma_and_calls_are_hedged(
    no_thread_leaks: None,
) -> None:
    report = run_demo(instances=4, requests=600, balancer="peak-ewma", concurrency=4, seed=3,
                      slow_instance=True)
    assert report.failed == 0
    assert report.slow
    total = sum(report.calls_per_instance.values())
    assert report.calls_per_instance[report.slow] < 0.10 * total  # round robin: about 25 %
    out = io.StringIO()
    format_report(report, out)
    assert "(slow: 20x" in out.getvalue()
    assert "hedged (percentile 95)" in out.getvalue()


def test_cli_offers_the_balancers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--requests", "60", "--instances", "2", "--balancer",
                 "consistent-hash"]) == 0
    assert "consistent-hash" in capsys.readouterr().out
    assert main(["demo", "--requests", "60", "--instances", "2", "--slow-instance"]) == 0
    assert "peak-ewma" in capsys.readouterr().out
