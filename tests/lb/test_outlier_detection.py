"""lb.OutlierDetection: the ejection policy's settings and the figures derived from them."""

from __future__ import annotations

import math
from typing import Any

import pytest

from kitsd import lb, sd
from tests.test_purity import ROOT, violations


def test_defaults() -> None:
    policy = lb.OutlierDetection()
    assert policy.consecutive_failures == 1
    assert policy.max_ejected_percent == 50
    assert [policy.ejection_time(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert policy.max_ejected(10) == 5
    assert policy.max_ejected(1) == 0


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (ConnectionRefusedError("refused"), True),
        (ConnectionResetError("reset"), True),
        (ValueError("bad request"), False),
        (TimeoutError("slow"), False),
        (OSError("not a connection error"), False),
    ],
)
def test_counts_connection_failures(error: Exception, counted: bool) -> None:
    assert lb.OutlierDetection().counts(error) is counted


class LinkDown(Exception):
    """Some transport's error, registered as a connection failure."""


sd.ConnectionFailure.register(LinkDown)


def test_counts_registered_connection_failures() -> None:
    assert lb.OutlierDetection().counts(LinkDown())


@pytest.mark.parametrize(
    ("settings", "error", "name"),
    [
        ({"consecutive_failures": 0}, sd.MisuseError, "consecutive_failures"),
        ({"consecutive_failures": 1.5}, TypeError, "consecutive_failures"),
        ({"consecutive_failures": True}, TypeError, "consecutive_failures"),
        ({"base_ejection_time": 0.0}, sd.MisuseError, "base_ejection_time"),
        ({"base_ejection_time": -1.0}, sd.MisuseError, "base_ejection_time"),
        ({"base_ejection_time": math.nan}, sd.MisuseError, "base_ejection_time"),
        ({"base_ejection_time": "1"}, TypeError, "base_ejection_time"),
        ({"max_ejection_time": math.inf}, sd.MisuseError, "max_ejection_time"),
        ({"base_ejection_time": 2.0, "max_ejection_time": 1.0}, sd.MisuseError,
         "max_ejection_time"),
        ({"max_ejected_percent": 101}, sd.MisuseError, "max_ejected_percent"),
        ({"max_ejected_percent": -1}, sd.MisuseError, "max_ejected_percent"),
    ],
)
def test_rejects_unusable_settings(
    settings: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        lb.OutlierDetection(**settings)


def test_is_frozen() -> None:
    policy = lb.OutlierDetection()
    with pytest.raises(AttributeError):
        policy.consecutive_failures = 2  # type: ignore[misc]


@pytest.mark.parametrize("module", ["lb/outlier_detection.py", "lb/pool_policy.py"])
def test_policy_and_state_are_pure(module: str) -> None:
    # lb/outlier_detection.py is not yet in tests/test_purity.py's PURE_MODULES.
    assert violations(ROOT / module) == []
