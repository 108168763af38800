"""The one place kitsd reaches into tenacity: a tenacity wait strategy as ``wait=``.

:func:`lb.retry`'s ``wait`` is a plain ``wait(attempt, error, elapsed) -> seconds``
(:data:`lb.retry_policy.WaitFunction`: failed attempts so far, the last error,
seconds since the call began).  A tenacity wait strategy is accepted too (API.md
promises it): ``tenacity.wait_random_exponential(multiplier=0.01, max=1)`` and
every other ``tenacity.wait_base``, and any ``callable(retry_state) -> seconds``
written for tenacity.  :func:`wait_function` tells the two apart once, when the
retrying endpoint is built, and adapts a strategy by handing it what tenacity
would: a ``tenacity.RetryCallState`` (of a ``tenacity.Retrying`` whose ``wait`` is
the strategy) with ``attempt_number``, the failed ``outcome`` (through the public
``set_exception``) and ``seconds_since_start``.  ``idle_for`` (the time slept so
far) stays 0: no built-in strategy reads it.

tenacity is imported only when a strategy is given.  Verified against tenacity
9.2.1 (``pyproject``: ``tenacity>=8.2,<10``); ``tests/lb/test_tenacity_contract.py``
checks every strategy tenacity ships, and a custom one, against the installed
tenacity.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from typing import Any, cast

from kitsd.lb.retry_policy import WaitFunction

__all__ = ["adapt", "is_strategy", "wait_function"]


def is_strategy(wait: object) -> bool | None:
    """Whether ``wait`` is a tenacity wait strategy (``True``: a
    ``tenacity.wait.wait_base``, or a callable that takes one argument) rather than
    a plain ``wait(attempt, error, elapsed)`` (``False``: it takes three, or its
    signature cannot be read); ``None`` when it takes neither."""
    tenacity = sys.modules.get("tenacity")  # not imported: it cannot be one of its objects
    if tenacity is not None and isinstance(wait, tenacity.wait.wait_base):
        return True
    try:
        signature = inspect.signature(wait)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a builtin without a signature: take it as plain
        return False
    for arguments, strategy in (((1, None, 0.0), False), ((None,), True)):
        try:
            signature.bind(*arguments)
        except TypeError:
            continue
        return strategy
    return None


def adapt(strategy: Callable[[Any], float]) -> WaitFunction:
    """``strategy`` (a tenacity wait strategy) as a plain wait function."""
    import tenacity  # only for callers who give a tenacity strategy

    retrying = tenacity.Retrying(wait=strategy)

    def wait(attempt: int, error: BaseException, elapsed: float) -> float:
        state = tenacity.RetryCallState(retrying, None, (), {})
        state.start_time = time.monotonic() - elapsed
        state.attempt_number = attempt
        state.set_exception((type(error), error, error.__traceback__))
        return float(strategy(state))

    return wait


def wait_function(wait: object) -> WaitFunction | None:
    """The plain wait function for ``wait=`` (``None``: no wait); ``TypeError`` for
    something that is neither form."""
    if wait is None:
        return None
    strategy = is_strategy(wait) if callable(wait) else None
    if strategy is None:
        raise TypeError("wait must be callable(attempt, error, elapsed) -> seconds, or a "
                        f"tenacity wait strategy, got {wait!r}")
    if strategy:
        return adapt(cast(Callable[[Any], float], wait))
    return cast(WaitFunction, wait)
