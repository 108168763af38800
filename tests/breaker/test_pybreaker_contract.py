"""What kitsd relies on in pybreaker: fails loudly when a pybreaker release changes it.

kitsd reaches past pybreaker's public surface in one place only,
``breaker._pybreaker.storage_of`` (``CircuitBreaker._state_storage``).  These
tests check that access against the installed pybreaker, that no other module
of the breaker package touches a private pybreaker name, and that the public
behaviour kitsd builds on (a new state object per transition, ``open()``
returning ``throw_new_error_on_trip``, the storage interface) still holds.
"""

from __future__ import annotations

import ast
from importlib import metadata
from pathlib import Path

import pybreaker
import pytest

from kitsd import breaker
from kitsd.breaker import _pybreaker
from kitsd.breaker._pybreaker import PRIVATE_ATTRIBUTE, storage_of

PACKAGE = Path(breaker.__file__).parent


def private_pybreaker_names() -> set[str]:
    """Every private (single-underscore) name on pybreaker's breaker, states and storage."""
    cb = pybreaker.CircuitBreaker()
    objects: list[object] = [
        cb,
        type(cb),
        cb.state,
        pybreaker.CircuitBreakerState,
        pybreaker.CircuitClosedState,
        pybreaker.CircuitOpenState,
        pybreaker.CircuitHalfOpenState,
        storage_of(cb),
        pybreaker.CircuitMemoryStorage,
        pybreaker.CircuitBreakerStorage,
    ]
    names: set[str] = set()
    for thing in objects:
        names.update(dir(thing))
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def test_the_storage_attribute_is_where_kitsd_expects_it() -> None:
    storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    cb = pybreaker.CircuitBreaker(state_storage=storage)
    assert hasattr(cb, PRIVATE_ATTRIBUTE), (
        f"pybreaker {metadata.version('pybreaker')} has no CircuitBreaker.{PRIVATE_ATTRIBUTE}: "
        "update breaker/_pybreaker.py"
    )
    assert storage_of(cb) is storage
    assert isinstance(storage_of(pybreaker.CircuitBreaker()), pybreaker.CircuitBreakerStorage)


def test_a_pybreaker_without_it_fails_loudly_at_wrap_time() -> None:
    class Renamed(pybreaker.CircuitBreaker):
        def __init__(self) -> None:
            super().__init__()
            del self._state_storage  # what a release moving the storage would look like

    with pytest.raises(RuntimeError, match=rf"pybreaker .*CircuitBreaker\.{PRIVATE_ATTRIBUTE}"):
        breaker.circuit_breaker(Renamed())


def test_storage_interface_kitsd_calls() -> None:
    storage = storage_of(pybreaker.CircuitBreaker())
    for method in ("increment_counter", "reset_counter", "increment_success_counter"):
        assert callable(getattr(storage, method)), method
    for prop in ("counter", "success_counter", "opened_at", "state"):
        assert hasattr(type(storage), prop), prop


def test_public_surface_kitsd_calls() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=7, success_threshold=2)
    assert (cb.fail_max, cb.reset_timeout, cb.success_threshold) == (3, 7, 2)
    assert (cb.fail_counter, cb.success_counter, cb.listeners) == (0, 0, ())
    assert cb.current_state == cb.state.name == pybreaker.STATE_CLOSED
    assert cb.is_system_error(ValueError())
    # open() says whether to raise a new error on a trip (throw_new_error_on_trip).
    assert cb.open() is True
    assert pybreaker.CircuitBreaker(throw_new_error_on_trip=False).open() is False


def test_every_transition_makes_a_new_state_object() -> None:
    # The stale-outcome rule and the trial slot name a period by its state object.
    cb = pybreaker.CircuitBreaker()
    seen = [cb.state]
    for move in (cb.open, cb.close, cb.close, cb.half_open, cb.half_open, cb.open):
        move()
        assert cb.state is cb.state  # stable between transitions
        assert all(cb.state is not earlier for earlier in seen)
        seen.append(cb.state)


def test_state_follows_a_shared_storage() -> None:
    storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    first = pybreaker.CircuitBreaker(state_storage=storage)
    second = pybreaker.CircuitBreaker(state_storage=storage)
    before = second.state
    first.open()
    assert second.state is not before
    assert second.state.name == pybreaker.STATE_OPEN


def test_no_other_breaker_module_touches_a_private_pybreaker_name() -> None:
    private = private_pybreaker_names()
    assert {"_state_storage", "_lock", "_handle_success", "_handle_error"} <= private
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path == Path(_pybreaker.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in private
                and not (isinstance(node.value, ast.Name) and node.value.id == "self")
            ):
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"getattr", "setattr", "hasattr", "delattr"}
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in private
            ):
                offenders.append(f"{path.name}:{node.lineno} {node.func.id} {node.args[1].value}")
    assert offenders == []
