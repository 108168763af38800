"""``kitsd demo --metrics``: the exposition it prints parses with prometheus_client's
parser and counts the run's calls exactly.

What ``kitsd_breaker_state`` promises: a breaker is shown while something holds it --
the per-instance breaker of an instance in the set, held by the client's stack -- and
disappears once it is freed (its instance left, or the client closed).  So the demo
scrapes before its client closes, and the breakers of the instances still in the set
are always there, whatever the garbage collector did meanwhile.
"""

from __future__ import annotations

import gc

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kitsd.cli import main
from kitsd.core import observe
from kitsd.demo import run_demo
from kitsd.prometheus import PrometheusObserver

MARKER = "# Prometheus metrics of this run"


def _breakers(exposition: str) -> set[str]:
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    return {s.labels["breaker"] for s in families["kitsd_breaker_state"].samples}


def test_demo_prints_a_parsable_exposition(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--metrics", "--requests", "45", "--instances", "3"]) == 0
    out = capsys.readouterr().out
    summary, _, exposition = out.partition(MARKER)
    assert "OK: every call succeeded" in summary
    exposition = exposition.split("\n", 1)[1]
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    calls = {(s.labels["service"], s.labels["outcome"]): s.value
             for s in families["kitsd_calls"].samples if s.name == "kitsd_calls_total"}
    assert calls == {("hello", "success"): 45.0}
    attempts = [s for s in families["kitsd_attempts"].samples
                if s.name == "kitsd_attempts_total"]
    retries = sum(s.value for s in families["kitsd_retries"].samples
                  if s.name == "kitsd_retries_total")
    assert sum(s.value for s in attempts) == 45 + retries
    attempted = {s.labels["instance"] for s in attempts}
    assert len(attempted) == 4  # 3, one killed, one added
    # the transport's per-instance breakers, named after their instances: every instance
    # still in the set has its breaker shown; the killed one's may be freed already
    killed = next(line.split()[0] for line in summary.splitlines() if "(killed)" in line)
    breakers = _breakers(exposition)
    assert attempted - {killed} <= breakers <= attempted
    states = {s.labels["state"] for s in families["kitsd_instances"].samples}
    assert states == {"discovered", "ejected"}
    assert observe.HUB.observers == ()  # the demo's observer was removed


def test_breakers_of_live_instances_survive_a_collection() -> None:
    """The promise holds whatever the collector does: scraped after a full collection,
    every instance in the set still shows its breaker (issue 15.1: scraped after the
    client closed, only one of four was left, or none after a collection)."""
    metrics = PrometheusObserver(CollectorRegistry())
    scraped: list[str] = []

    def scrape() -> None:
        gc.collect()
        scraped.append(generate_latest(metrics.registry).decode())

    try:
        report = run_demo(instances=3, requests=45, observer=metrics, before_close=scrape)
        # once the client is closed and its breakers freed, none is shown any more
        gc.collect()
        after = _breakers(generate_latest(metrics.registry).decode())
    finally:
        metrics.close()
    assert report.failed == 0
    in_set = set(report.calls_per_instance) - {report.killed}
    assert len(in_set) == 3
    assert in_set <= _breakers(scraped[0])
    assert after == set()
