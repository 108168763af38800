"""The command line: ``kitsd demo`` and ``kitsd watch``."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading

import pytest

from kitsd.cli import main
from kitsd.demo import format_report, run_demo


@pytest.mark.parametrize("balancer", ["round-robin", "random", "least-loaded"])
def test_demo_loses_no_call_while_an_instance_dies_and_one_arrives(
    balancer: str, no_thread_leaks: None
) -> None:
    report = run_demo(instances=3, requests=300, balancer=balancer, concurrency=3, seed=7)

    assert report.failed == 0
    assert sum(report.calls_per_instance.values()) == 300
    assert report.killed
    assert report.added
    assert report.killed != report.added
    # the new instance took calls, the killed one took some before it died
    assert report.calls_per_instance[report.added] > 0
    assert report.calls_per_instance[report.killed] > 0
    assert len(report.calls_per_instance) == 4
    assert len(report.latencies) == 300
    assert [what.split()[0] for _, what in report.timeline] == ["killed", "registry", "added"]


def test_summary_reads_at_a_glance() -> None:
    report = run_demo(instances=2, requests=60, concurrency=2)
    out = io.StringIO()
    format_report(report, out)
    text = out.getvalue()

    assert "failed 0" in text
    assert re.search(r"p50 [\d.]+ ms\s+p99 [\d.]+ ms", text)
    assert "(killed)" in text
    assert "(added)" in text
    assert text.rstrip().endswith("OK: every call succeeded")


@pytest.mark.parametrize("options", [["--instances", "1"], ["--requests", "2"],
                                     ["--concurrency", "0"]])
def test_demo_rejects_bad_options(options: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *options]) == 2
    assert capsys.readouterr().err.startswith("kitsd: ")


def test_watch_prints_the_static_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "static://127.0.0.1:81,127.0.0.1:80", "--count", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 instances: 127.0.0.1:80, 127.0.0.1:81" in out


def test_watch_rejects_unknown_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "zookeeper://x:1/a"]) == 2
    assert "unknown instancer URL scheme" in capsys.readouterr().err


def test_console_script_runs_the_demo() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kitsd", "demo", "--requests", "90", "--instances", "2"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "OK: every call succeeded" in done.stdout
    assert threading.active_count() >= 1
