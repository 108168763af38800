"""The serving options, checked once for every driver (asyncio and thread).

Each bad option raises at construction -- long before a signal needs it --
``TypeError`` for a wrong type and :class:`~kitsd.core.errors.MisuseError` (a
``ValueError``) for a bad value, both naming the option.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from kitsd.core.errors import MisuseError
from kitsd.sd.instance import split_instance
from kitsd.serve._drain import Timings

__all__ = ["HealthCheck", "Options", "check_options"]

HealthCheck = Callable[[], bool | Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Options:
    """What one served instance was configured with (see :class:`kitsd.serve.Service`).

    ``self_check`` is ``("http", url)``, ``("tcp", "host:port")`` or ``None``.
    """

    timings: Timings
    health_path: str | None
    check: HealthCheck | None
    self_check: tuple[str, str] | None
    signals: tuple[signal.Signals, ...]
    probe: Callable[[], bool] | None


def _check_signals(signals: object) -> tuple[signal.Signals, ...]:
    if isinstance(signals, str | bytes | int) or not isinstance(signals, Collection):
        raise TypeError(f"signals must be a collection of signals, not {signals!r}")
    checked = []
    for value in signals:
        try:
            checked.append(signal.Signals[value] if isinstance(value, str)
                           else signal.Signals(value))
        except (KeyError, ValueError):
            raise MisuseError(f"signals: {value!r} is not a signal") from None
    return tuple(dict.fromkeys(checked))


def _check_path(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") \
            or any(ord(char) < 0x21 for char in value):
        raise MisuseError(f"{name} must be a URL path starting with '/', or None, not {value!r}")
    return value


def _self_check_target(registrar: object, self_check: object,
                       health_path: str | None) -> tuple[str, str] | None:
    if self_check is False:
        return None
    if isinstance(self_check, str):
        if not self_check.startswith(("http://", "https://")):
            raise MisuseError(f"self_check must be an http(s) URL, True, False or None, "
                              f"not {self_check!r}")
        return ("http", self_check)
    if self_check not in (None, True):
        raise TypeError(f"self_check must be an http(s) URL, True, False or None, "
                        f"not {self_check!r}")
    instance = getattr(registrar, "instance", None)
    if not isinstance(instance, str):
        raise MisuseError(f"self_check: {type(registrar).__name__} does not say its "
                          "instance; give self_check='http://host:port/path' or False")
    split_instance(instance)  # InvalidInstanceError (a MisuseError) naming it
    if health_path is not None:
        return ("http", f"http://{instance}{health_path}")
    return ("tcp", instance)


def check_options(
    registrar: Any,
    *,
    drain: float = 30.0,
    margin: float = 2.0,
    health_path: str | None = "/healthz",
    check: HealthCheck | None = None,
    self_check: str | bool | None = None,
    signals: Collection[str | int] = ("SIGTERM",),
    probe: Callable[[], bool] | None = None,
    probe_interval: float = 0.1,
) -> Options:
    """The options checked (see the module docstring)."""
    for verb in ("register", "deregister"):
        if not callable(getattr(registrar, verb, None)):
            raise TypeError(f"registrar must be an sd.Registrar (with register() and "
                            f"deregister()), not {type(registrar).__name__}")
    timings = Timings(drain=drain, margin=margin, probe_interval=probe_interval)
    path = _check_path("health_path", health_path)
    if check is not None and not callable(check):
        raise TypeError(f"check must be a callable returning a bool, not {check!r}")
    if probe is not None and not callable(probe):
        raise TypeError(f"probe must be a callable returning a bool, not {probe!r}")
    return Options(timings=timings, health_path=path, check=check,
                   self_check=_self_check_target(registrar, self_check, path),
                   signals=_check_signals(signals), probe=probe)
