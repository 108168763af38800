"""Backoff: one curve, one table of the constants every driver uses, one testing switch.

Theory of operation
-------------------
Every wait kitsd makes after a failure follows the same shape: a *ceiling*
that starts at ``initial`` and doubles with each consecutive failure up to
``maximum``, and a delay drawn in the **upper half** of that ceiling
("equal jitter")::

    ceiling(n) = min(maximum, initial * 2**(n-1))        n = consecutive failures >= 1
    delay(n)   = ceiling(n)/2 + ceiling(n)/2 * rand      rand in [0, 1]

The jitter spreads clients that failed together (a registry that comes back
is not hit by everybody in the same millisecond); keeping the lower half out
means a registry that stays down is never asked more often than once per half
ceiling, so a watch loop cannot turn into a hot loop.

:data:`CURVES` is the table of where each curve is used.  Long-running loops
(the watches, heartbeats and keep-alives) keep their state in a small
:class:`Backoff`; bounded retries (a registrar's ``register()`` riding out a
leader election, see :mod:`sd.transient`) let tenacity do the waiting through
:class:`CurveWait`, a tenacity wait strategy over the same curve.

Testing switch
--------------
As stamina does, :func:`set_testing` (or the :func:`testing` context manager)
makes *bounded* retries fast for tests: their waits become zero and their
attempts are capped (default one attempt: no retry), so a test of a registrar
against a dead registry does not sit out a 10 s ``retry_for``.  Unbounded
loops (watches, heartbeats) keep their curves under the switch: a zero wait
there would be a hot loop, not a faster test.

Pure: nothing here sleeps, locks or reads a clock; :class:`Backoff` takes the
random source it is given.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import tenacity

from kitsd.core import validate

__all__ = [
    "CONSUL_HEARTBEAT",
    "CONSUL_PROBE",
    "CONSUL_WATCH",
    "CURVES",
    "DNS_RETRY",
    "ETCD_KEEPALIVE",
    "ETCD_WATCH",
    "K8S_WATCH",
    "REGISTRY_TRANSIENT",
    "ZK_WATCH",
    "Backoff",
    "Curve",
    "CurveWait",
    "backoff_delay",
    "is_testing",
    "set_testing",
    "testing",
    "testing_attempts",
]


def backoff_delay(
    failures: int, *, initial: float = 0.01, maximum: float = 60.0, rand: float = 1.0
) -> float:
    """Delay after ``failures`` consecutive failures (see the module docstring).

    ``failures < 1`` gives 0.  ``rand`` in ``[0, 1]`` picks the point in the
    ceiling's upper half: the delay is never below half the ceiling and never
    above it.
    """
    if failures < 1:
        return 0.0
    ceiling = min(maximum, initial * 2.0 ** min(failures - 1, 64))
    return ceiling / 2.0 + ceiling / 2.0 * rand


@dataclass(frozen=True, slots=True)
class Curve:
    """A backoff curve: ``initial`` seconds doubling to ``maximum`` (both > 0)."""

    initial: float
    maximum: float

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum):
            raise ValueError(f"need 0 < initial <= maximum, got {self.initial}, {self.maximum}")

    def delay(self, failures: int, rand: float) -> float:
        """The delay after ``failures`` consecutive failures, ``rand`` in ``[0, 1]``."""
        return backoff_delay(failures, initial=self.initial, maximum=self.maximum, rand=rand)

    def capped(self, maximum: float) -> Curve:
        """This curve with its ceiling lowered to ``maximum`` (and ``initial`` with it)."""
        top = min(self.maximum, maximum)
        return Curve(min(self.initial, top), top)


#: Consul instancer after an error the agent answered (a 5xx such as "No cluster
#: leader", a broken answer): 10 ms doubling to 2 s, so at most one request a second
#: reaches an agent that is up but failing, and the first query after it recovers is
#: at most ~2 s late (go-kit's Consul instancer goes to 1 min).
CONSUL_WATCH: Final = Curve(0.01, 2.0)
#: Consul instancer while no request reaches the agent (connection refused, connect
#: timeout): a connection attempt every 0.1-0.2 s, which costs a down agent nothing
#: and finds it as soon as it listens again (see ``sd.consul.index``, "Recovery").
CONSUL_PROBE: Final = Curve(0.2, 0.2)
#: Consul TTL heartbeat after a failed pass: 10 ms doubling, capped at the
#: heartbeat interval (``CONSUL_HEARTBEAT.capped(ttl / 3)``).
CONSUL_HEARTBEAT: Final = Curve(0.01, 60.0)
#: etcd instancer between reconnect attempts: 50 ms doubling to 5 s.
ETCD_WATCH: Final = Curve(0.05, 5.0)
#: etcd registrar's keep-alive after a failure: 50 ms doubling, capped at the
#: keep-alive interval (``ETCD_KEEPALIVE.capped(interval)``).
ETCD_KEEPALIVE: Final = Curve(0.05, 60.0)
#: Registrars' ``register()``/``deregister()`` riding out an unavailable
#: registry (a leader election) for ``retry_for`` seconds: 50 ms doubling to 1 s.
REGISTRY_TRANSIENT: Final = Curve(0.05, 1.0)

#: ZooKeeper instancer and registrar between reconnect attempts: 50 ms doubling to 5 s.
ZK_WATCH: Final = Curve(0.05, 5.0)
#: DNS SRV instancer after a failed lookup: 100 ms doubling to 30 s (capped at the
#: longest refresh interval).
DNS_RETRY: Final = Curve(0.1, 30.0)

#: Kubernetes EndpointSlice watch after a failure (and a 410 that would re-list in a loop):
#: 200 ms doubling to 30 s (client-go's reflectors: 800 ms to 30 s; we start lower so a
#: blip is short, and jitter spreads the clients of an API server that comes back).
K8S_WATCH: Final = Curve(0.2, 30.0)

#: Every curve kitsd uses, by where it is used.
CURVES: Final = {
    "consul watch": CONSUL_WATCH,
    "consul probe": CONSUL_PROBE,
    "consul heartbeat": CONSUL_HEARTBEAT,
    "etcd watch": ETCD_WATCH,
    "etcd keep-alive": ETCD_KEEPALIVE,
    "registry transient": REGISTRY_TRANSIENT,
    "zookeeper watch": ZK_WATCH,
    "dns srv retry": DNS_RETRY,
    "k8s watch": K8S_WATCH,
}


@dataclass
class Backoff:
    """Counts consecutive failures and hands out the next delay on ``curve``.

    Not thread-safe: one per loop.  ``initial``/``maximum`` build a curve when
    ``curve`` is not given.
    """

    initial: float = 0.01
    maximum: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0
    curve: Curve | None = None

    def __post_init__(self) -> None:
        if self.curve is None:
            self.curve = Curve(self.initial, self.maximum)
        else:
            self.initial, self.maximum = self.curve.initial, self.curve.maximum
        self._curve: Curve = self.curve

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next try."""
        self.failures += 1
        return self._curve.delay(self.failures, self.rng.random())

    def reset(self) -> None:
        """Forget the failures after a success."""
        self.failures = 0


class CurveWait(tenacity.wait.wait_base):
    """A tenacity wait strategy following ``curve``; zero under :func:`set_testing`."""

    def __init__(self, curve: Curve, rng: random.Random | None = None) -> None:
        self.curve = curve
        self._rng = rng if rng is not None else random.Random()

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        if _testing.on:
            return 0.0
        return self.curve.delay(retry_state.attempt_number, self._rng.random())


@dataclass
class _Testing:
    on: bool = False
    attempts: int = 1


_testing = _Testing()


def set_testing(on: bool, *, attempts: int = 1) -> None:
    """Turn the testing switch on or off (see the module docstring).

    While on, bounded retries wait zero seconds between attempts and make at
    most ``attempts`` attempts (``>= 1``).  Process-wide: meant for test suites.
    """
    validate.integer("attempts", attempts, minimum=1)
    _testing.on = bool(on)
    _testing.attempts = attempts


def is_testing() -> bool:
    """Whether the testing switch is on."""
    return _testing.on


def testing_attempts() -> int | None:
    """The attempt cap for bounded retries while testing, else ``None``."""
    return _testing.attempts if _testing.on else None


@contextlib.contextmanager
def testing(on: bool = True, *, attempts: int = 1) -> Iterator[None]:  # noqa: PT028 - not a test
    """:func:`set_testing` for a ``with`` block; restores the previous setting."""
    previous = (_testing.on, _testing.attempts)
    set_testing(on, attempts=attempts)
    try:
        yield
    finally:
        _testing.on, _testing.attempts = previous
