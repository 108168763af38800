"""Fixtures for the ``lb`` tests.

The passive-ejection table is process-wide; every test gets a fresh one so an
ejection made by one test cannot steer the balancers of the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import lb
from lb import pick


@pytest.fixture(autouse=True)
def fresh_ejection_table() -> Iterator[lb.EjectionTable]:
    """Install an empty default :class:`lb.EjectionTable` for the test; restore the old one after.

    A test may swap in its own table with :func:`lb.set_ejection_table` (or ``None``);
    the table that was installed before the test is restored either way.
    """
    table = lb.EjectionTable()
    old = lb.set_ejection_table(table)
    try:
        yield table
    finally:
        lb.set_ejection_table(old)


@pytest.fixture(autouse=True)
def no_call_state_leaks() -> Iterator[None]:
    """Fail a test that leaves retry call state (exclusions, deadline) in the test's context."""
    yield
    assert pick.failed_in_call() == frozenset(), "a retry call leaked its exclusion set"
    assert lb.remaining() is None, "a retry call leaked its deadline"
