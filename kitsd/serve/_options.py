"""The serving options, checked once for every driver (asyncio and thread).

Each bad option raises at construction -- long before a signal needs it --
``TypeError`` for a wrong type and :class:`~kitsd.core.errors.MisuseError` (a
``ValueError``) for a bad value, both naming the option.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import httpx

from kitsd.core import validate
from kitsd.core.errors import MisuseError, shown_value
from kitsd.sd.instance import split_instance
from kitsd.serve._drain import Timings

__all__ = ["DEFAULT_CHECK_TIMEOUT", "HealthCheck", "Options", "ServeOptions", "Settings",
           "check_options", "check_settings"]

HealthCheck = Callable[[], bool | Awaitable[bool]]

#: Seconds the app's ``check`` may take before the health route answers 503 without it.
DEFAULT_CHECK_TIMEOUT = 1.0
#: Signals no process can catch: a handler for them can never start a drain.
_UNCATCHABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})


class ServeOptions(TypedDict, total=False):
    """The keyword options of every serving driver, as given (defaults and meaning:
    :class:`kitsd.serve.Service`; checked by :func:`check_settings`)."""

    drain: float
    margin: float
    health_path: str | None
    check: HealthCheck | None
    self_check: str | bool | None
    signals: Collection[str | int]
    probe: Callable[[], bool] | None
    probe_interval: float
    check_timeout: float


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
    check_timeout: float = DEFAULT_CHECK_TIMEOUT


@dataclass(frozen=True, slots=True)
class Settings:
    """The options that do not depend on the registrar, checked (see :func:`check_settings`)."""

    timings: Timings
    health_path: str | None
    check: HealthCheck | None
    signals: tuple[signal.Signals, ...]
    probe: Callable[[], bool] | None
    check_timeout: float


def _check_signals(signals: object) -> tuple[signal.Signals, ...]:
    if isinstance(signals, str | bytes | int) or not isinstance(signals, Collection):
        raise TypeError(f"signals must be a collection of signals, not {shown_value(signals)}")
    checked = []
    for value in signals:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"signals: {shown_value(value)} is not a signal name or number")
        try:
            sig = signal.Signals[value] if isinstance(value, str) else signal.Signals(value)
        except (KeyError, ValueError):
            raise MisuseError(f"signals: {shown_value(value)} is not a signal") from None
        if sig in _UNCATCHABLE or sig not in signal.valid_signals():
            raise MisuseError(f"signals: {sig.name} cannot be caught, so it cannot start a "
                              "drain")
        checked.append(sig)
    return tuple(dict.fromkeys(checked))


def _check_path(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") \
            or any(ord(char) < 0x21 for char in value):
        raise MisuseError(f"{name} must be a URL path starting with '/', or None, "
                          f"not {shown_value(value)}")
    return value


def _check_self_check(self_check: object) -> None:
    """The registrar-free part of the self-check option's check."""
    if self_check is None or isinstance(self_check, bool):
        return
    if not isinstance(self_check, str):  # 1 is not True here: a URL, a bool, or None
        raise TypeError(f"self_check must be an http(s) URL, True, False or None, "
                        f"not {shown_value(self_check)}")
    try:
        url = httpx.URL(self_check)
    except (httpx.InvalidURL, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host \
            or any(ord(char) < 0x21 for char in self_check):
        raise MisuseError(f"self_check must be an http(s) URL with a host, True, False or "
                          f"None, not {shown_value(self_check)}")


def _self_check_target(registrar: object, self_check: object,
                       health_path: str | None) -> tuple[str, str] | None:
    _check_self_check(self_check)
    if self_check is False:
        return None
    if isinstance(self_check, str):
        return ("http", self_check)
    instance = getattr(registrar, "instance", None)
    if not isinstance(instance, str):
        raise MisuseError(f"self_check: {type(registrar).__name__} does not say its "
                          "instance; give self_check='http://host:port/path' or False")
    split_instance(instance)  # InvalidInstanceError (a MisuseError) naming it
    if health_path is not None:
        return ("http", f"http://{instance}{health_path}")
    return ("tcp", instance)


def check_settings(
    *,
    drain: float = 30.0,
    margin: float = 2.0,
    health_path: str | None = "/healthz",
    check: HealthCheck | None = None,
    self_check: str | bool | None = None,
    signals: Collection[str | int] = ("SIGTERM",),
    probe: Callable[[], bool] | None = None,
    probe_interval: float = 0.1,
    check_timeout: float = DEFAULT_CHECK_TIMEOUT,
) -> Settings:
    """Every option that can be checked without the registrar (gunicorn's hooks check
    them when the config is read; the registrar is made later, in the master)."""
    timings = Timings(drain=drain, margin=margin, probe_interval=probe_interval)
    path = _check_path("health_path", health_path)
    if check is not None and not callable(check):
        raise TypeError(f"check must be a callable returning a bool, not {shown_value(check)}")
    if probe is not None and not callable(probe):
        raise TypeError(f"probe must be a callable returning a bool, not {shown_value(probe)}")
    _check_self_check(self_check)
    timeout = validate.seconds("check_timeout", check_timeout, maximum=60)
    return Settings(timings=timings, health_path=path, check=check,
                    signals=_check_signals(signals), probe=probe, check_timeout=timeout)


def check_options(registrar: Any, **options: Unpack[ServeOptions]) -> Options:
    """The options checked (see the module docstring)."""
    for verb in ("register", "deregister"):
        if not callable(getattr(registrar, verb, None)):
            raise TypeError(f"registrar must be an sd.Registrar (with register() and "
                            f"deregister()), not {type(registrar).__name__}")
    settings = check_settings(**options)
    self_check = _self_check_target(registrar, options.get("self_check"), settings.health_path)
    return Options(timings=settings.timings, health_path=settings.health_path,
                   check=settings.check, self_check=self_check, signals=settings.signals,
                   probe=settings.probe, check_timeout=settings.check_timeout)
