"""A user's strictly typed code keeps its types through kitsd (issue 15.6): mypy
--strict on ``tests/lb/typed_user.py``, whose ``assert_type`` calls say what each
layer must hand back (they fail as "Expression is of type Any" where a type is
lost, and ``no-any-return`` where correct user code would get it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "lb" / "typed_user.py"


def test_a_strictly_typed_user_keeps_the_endpoint_types() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--warn-unused-ignores",
         str(SCRIPT.relative_to(ROOT))],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found in 1 source file" in done.stdout


def test_the_script_asserts_types_at_every_layer() -> None:
    """The script is not allowed to become vacuous: it names each layer it checks."""
    text = SCRIPT.read_text(encoding="utf-8")
    assert text.count("assert_type(") >= 15
    for layer in ("sd.http.factory", "sd.http.async_factory", "breaker.per_instance",
                  "breaker.circuit_breaker", "sd.Endpointer", "lb.retry(", "lb.retry_async(",
                  "sd.chain", "lb.deadline", "hedge=", "lb.RoundRobin", "lb.PeakEWMA",
                  "lb.LeastLoaded", "lb.Weighted", "lb.ConsistentHash", "lb.Random"):
        assert layer in text, layer
