"""A scripted registrar for the serving tests (the real registries are in test_rolling_*)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Self

from kitsd.core.errors import RegistryUnavailableError


class ScriptedRegistrar:
    """Records ``register``/``deregister`` calls with their times; the first
    ``fail_registers`` registrations raise :class:`RegistryUnavailableError`."""

    def __init__(self, instance: str = "127.0.0.1:1", *, fail_registers: int = 0,
                 on_deregister: Callable[[], object] | None = None) -> None:
        self.instance = instance
        self.fail_registers = fail_registers
        self.on_deregister = on_deregister
        self.calls: list[tuple[str, float]] = []
        self.registered = False
        self.lock = threading.Lock()

    def register(self) -> None:
        with self.lock:
            self.calls.append(("register", time.monotonic()))
            if self.fail_registers > 0:
                self.fail_registers -= 1
                raise RegistryUnavailableError("registry down (scripted)")
            self.registered = True

    def deregister(self) -> None:
        with self.lock:
            self.calls.append(("deregister", time.monotonic()))
            if self.on_deregister is not None:
                self.on_deregister()
            self.registered = False

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.calls]

    def __enter__(self) -> Self:
        self.register()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deregister()

    def __repr__(self) -> str:
        return f"ScriptedRegistrar({self.instance!r})"
