"""Fixtures for the ``lb`` tests.

Ejection state belongs to each balancer, so there is no process-wide table to
reset between tests; the fixture below only checks that a retried call leaves
nothing in the test's context.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kitsd import lb
from tests.lb.test_retry import driver

__all__ = ["driver", "no_call_state_leaks"]  # driver: both retry drivers, for every test here


@pytest.fixture(autouse=True)
def no_call_state_leaks() -> Iterator[None]:
    """Fail a test that leaves retry call state (the deadline) in the test's context."""
    yield
    assert lb.remaining() is None, "a retry call leaked its deadline"
