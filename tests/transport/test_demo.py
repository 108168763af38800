"""``kitsd demo`` drives its calls through kitsd.Transport; ``--building-blocks``
shows the hand-built stack."""

from __future__ import annotations

import io

import pytest

from kitsd.cli import main
from kitsd.demo import format_report, run_demo


@pytest.mark.parametrize("building_blocks", [False, True])
def test_demo_both_ways_loses_no_call(building_blocks: bool, no_thread_leaks: None) -> None:
    report = run_demo(instances=3, requests=300, concurrency=3, seed=7,
                      building_blocks=building_blocks)
    assert report.failed == 0
    assert sum(report.calls_per_instance.values()) == 300
    assert report.calls_per_instance[report.added] > 0
    out = io.StringIO()
    format_report(report, out)
    text = out.getvalue()
    assert ("kitsd.Transport" in text) is not building_blocks
    assert ("sd.http" in text) is building_blocks
    assert text.rstrip().endswith("OK: every call succeeded")


def test_cli_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--requests", "60", "--instances", "2", "--building-blocks"]) == 0
    assert "per-instance breaker -> sd.http" in capsys.readouterr().out
