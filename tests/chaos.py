"""A chaos run shared by the etcd and Consul suites: the whole client stack keeps every
call succeeding while instances crash and arrive and registry members die.

The calling loop is bounded in time (not in count: a loaded machine makes the
scenario slow while the calls stay fast -- 20,000 calls took 16 s while a Consul
leader election took longer, and the caller ran out before the scenario ended) and
only talks to loopback.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from kitsd import sd
from kitsd.chaos import client_stack
from kitsd.demo_server import DemoInstance


@dataclass
class CallLog:
    """What the calling thread saw."""

    calls: Counter[str] = field(default_factory=Counter)
    failures: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.calls.values()) + len(self.failures)


class Caller:
    """Calls a service through breaker -> retry -> round robin -> per-instance breaker -> HTTP
    from a background thread until stopped (or ``max_seconds`` have passed)."""

    def __init__(self, instancer: sd.Instancer, max_seconds: float = 300.0) -> None:
        # the stack `kitsd chaos` loads (kitsd.chaos.client_stack)
        self.call, self.endpointer = client_stack(instancer, attempt_timeout=2.0)
        self.log = CallLog()
        self._stop = threading.Event()
        self._max_seconds = max_seconds
        self._ended: str | None = None  # why the thread ended before stop(), if it did
        self._thread = threading.Thread(target=self._run, name="chaos-caller")

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        number = 0
        try:
            while not self._stop.is_set():
                if time.monotonic() > deadline:
                    self._ended = f"it ran for its {self._max_seconds:g}s"
                    return
                try:
                    instance = self.call(number)
                except Exception as error:
                    with self.log.lock:
                        self.log.failures.append(error)
                else:
                    with self.log.lock:
                        self.log.calls[instance] += 1
                number += 1
        except BaseException as error:
            self._ended = f"it raised {error!r}"
            raise

    def __enter__(self) -> Caller:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.endpointer.close()

    def calls_after(self, count: int, timeout: float = 20.0) -> None:
        """Wait until ``count`` more calls have been made."""
        goal = self.log.total + count
        deadline = time.monotonic() + timeout
        while self.log.total < goal:
            if not self._thread.is_alive():
                raise AssertionError(f"the caller stopped early: {self._ended}")
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.log.total} of {goal} calls in {timeout}s")
            time.sleep(0.01)

    def count(self, instance: str) -> int:
        with self.log.lock:
            return self.log.calls[instance]


def run_instances(count: int) -> list[DemoInstance]:
    return [DemoInstance() for _ in range(count)]


def wait_instances(instancer: sd.InstancerHandle, expected: Callable[[], set[str]],
                   timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while set(instancer.state.instances) != expected():
        if time.monotonic() > deadline:
            raise AssertionError(f"instancer shows {instancer.state}, want {expected()}")
        time.sleep(0.01)


def run_chaos(
    *,
    register: Callable[[str], sd.Registrar],
    open_instancer: Callable[[], sd.InstancerHandle],
    kill_leader: Callable[[], None],
    after_leader_killed: Callable[[], object] = lambda: None,
    timeout: float = 30.0,
) -> None:
    """The chaos scenario, for any registry.

    Three instances register (``register(instance)`` returns a registered
    :class:`sd.Registrar`); a caller runs the whole client stack over
    ``open_instancer()``; one instance crashes and is deregistered a moment later;
    the registry's leader is killed (``kill_leader``) and a new instance registers
    while it is dead; ``after_leader_killed`` may restart it.  Not one call may fail,
    and every instance that was alive must have answered.
    """
    servers = run_instances(3)
    registrars: list[sd.Registrar] = []

    def alive() -> set[str]:
        return {server.instance for server in servers if server.alive}

    try:
        by_instance = {}
        for server in servers:
            by_instance[server.instance] = register(server.instance)
            registrars.append(by_instance[server.instance])
        with open_instancer() as instancer:
            wait_instances(instancer, alive, timeout)
            with Caller(instancer) as caller:
                caller.calls_after(100)
                victim = servers[0]
                victim.kill()  # crashes; the registry learns a moment later
                caller.calls_after(30)
                by_instance[victim.instance].deregister()
                wait_instances(instancer, alive, timeout)
                kill_leader()
                newcomer = run_instances(1)[0]
                servers.append(newcomer)
                registrars.append(register(newcomer.instance))  # while the leader is dead
                wait_instances(instancer, alive, timeout)
                caller.calls_after(100)
                after_leader_killed()
                caller.calls_after(100)
        assert caller.log.failures == []
        assert caller.count(newcomer.instance) > 0
        assert caller.count(victim.instance) > 0
        assert set(caller.log.calls) == {server.instance for server in servers}
    finally:
        for registrar in registrars:
            registrar.deregister()
        for server in servers:
            server.kill()
