"""Shared fixtures."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.helpers import assert_no_new_threads


@pytest.fixture
def no_thread_leaks() -> Iterator[None]:
    """Fail the test if it leaves a thread running."""
    before = set(threading.enumerate())
    yield
    assert_no_new_threads(before)
