"""``kitsd demo --metrics``: the exposition it prints parses with prometheus_client's
parser and counts the run's calls exactly."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kitsd.cli import main
from kitsd.core import observe

MARKER = "# Prometheus metrics of this run"


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
    assert len({s.labels["instance"] for s in attempts}) == 4  # 3, one killed, one added
    breakers = {s.labels["breaker"] for s in families["kitsd_breaker_state"].samples}
    # the transport's per-instance breakers, named after their instances
    assert {s.labels["instance"] for s in attempts} <= breakers
    states = {s.labels["state"] for s in families["kitsd_instances"].samples}
    assert states == {"discovered", "ejected"}
    assert observe.HUB.observers == ()  # the demo's observer was removed
