"""The serving lifecycle's decisions, free of I/O: when to register, when to let go.

Theory of operation
-------------------
One served instance goes through five phases; :class:`Lifecycle` holds the phase
and answers each thing that happens with the one :class:`Step` the driver takes
next (an asyncio driver in :mod:`kitsd.serve._service`, a thread driver for
gunicorn's master in :mod:`kitsd.serve._gunicorn`).  Nothing here reads a clock:
every call takes ``now`` (monotonic seconds).

::

    STARTING --ready--> REGISTERING --registered--> SERVING
                          |  ^ failed: Sleep(backoff), then Register again
                          |  check failed: Sleep(check_interval), then Check again
       (signal from any of the three above)
                          v
                       DRAINING: Deregister -> Probe ... until the registry shows the
                          |      instance gone, then Sleep(margin)
                          |      (bounded by `drain` seconds from the signal)
                          v
                       RELEASED: the server may stop accepting and finish in flight

==================  ==================  ==============================================
phase               event               step (and next phase)
==================  ==================  ==============================================
STARTING            ready               Check (self-check first) or Register
REGISTERING         checked ok          Register
REGISTERING         checked failed      Sleep(check_interval), then Check
REGISTERING         registered          Idle (SERVING)
REGISTERING         register failed     Sleep(backoff: 0.1 s doubling to 10 s), Register
any before DRAIN    signal              Deregister (DRAINING) -- also when registering
                                        failed so far: a register call in flight may
                                        still land, and deregistering is idempotent
STARTING            signal              Release("never registered")
DRAINING            deregistered        Probe
DRAINING            deregister failed   Probe (the registry may drop us on its own:
                                        a TTL running out, an HTTP check failing)
DRAINING            probed: still there Sleep(probe_interval), then Probe
DRAINING            probed: gone        Sleep(margin): callers' watches catch up
DRAINING            probe failed        as "still there"
DRAINING            woken after margin  Release("gone")
DRAINING            past the deadline   Release("deadline") -- whatever is in flight
DRAINING            second signal       Release("cut")
RELEASED            anything            Idle
==================  ==================  ==============================================

The *deadline* is ``drain`` seconds after the first signal; every Sleep the
machine asks for ends by it, and any answer arriving after it releases.  The
margin after "gone" covers what the registry cannot confirm: other agents'
blocking queries, other etcd members' watches and ZooKeeper watchers firing, and
callers' balancers taking the new set.

The health route answers 503 from the first signal on (:attr:`Lifecycle.draining`),
so a registry that runs HTTP checks and callers that probe health stop choosing the
instance even before the deregistration reaches them.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from kitsd.core import validate
from kitsd.sd.backoff import Curve

__all__ = [
    "MAX_DRAIN",
    "REGISTER_BACKOFF",
    "Check",
    "Deregister",
    "Idle",
    "Lifecycle",
    "Phase",
    "Probe",
    "Register",
    "Release",
    "Sleep",
    "Step",
    "Timings",
]

#: The longest ``drain`` (and ``margin``) accepted: a day.
MAX_DRAIN = 86_400.0

#: Registering at startup while the registry is unreachable: 100 ms doubling to 10 s.
REGISTER_BACKOFF = Curve(0.1, 10.0)


class Phase(enum.Enum):
    """Where a served instance is in its life."""

    STARTING = "starting"
    REGISTERING = "registering"
    SERVING = "serving"
    DRAINING = "draining"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class Check:
    """Run the self-check (a GET of the instance's own health route)."""


@dataclass(frozen=True, slots=True)
class Register:
    """Call ``registrar.register()``."""


@dataclass(frozen=True, slots=True)
class Deregister:
    """Call ``registrar.deregister()``."""


@dataclass(frozen=True, slots=True)
class Probe:
    """Ask the registry whether it still shows the instance."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` (a signal may end the wait early), then call ``woken``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Release:
    """The drain is over (``reason``): let the server stop accepting and finish."""

    reason: str


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to do until the next signal."""


Step = Check | Register | Deregister | Probe | Sleep | Release | Idle


@dataclass(frozen=True, slots=True)
class Timings:
    """The lifecycle's durations, checked (``MisuseError``/``TypeError`` naming the option).

    ``drain``: the most seconds from the first signal to :class:`Release`;
    ``margin``: seconds to keep serving after the registry shows the instance gone;
    ``probe_interval``: seconds between registry probes; ``check_interval``: seconds
    between failed self-checks.  Each is finite and at most a day (``drain``, ``margin``)
    or a minute (the intervals): a bigger wait would overflow a thread's timed wait.
    """

    drain: float = 30.0
    margin: float = 2.0
    probe_interval: float = 0.1
    check_interval: float = 0.05

    def __post_init__(self) -> None:
        validate.seconds("drain", self.drain, zero=True, maximum=MAX_DRAIN)
        validate.seconds("margin", self.margin, zero=True, maximum=MAX_DRAIN)
        validate.seconds("probe_interval", self.probe_interval, maximum=60)
        validate.seconds("check_interval", self.check_interval, maximum=60)


class Lifecycle:
    """The state machine of one served instance (see the module docstring).

    ``self_check``: whether registering waits for a passing self-check.
    ``register_backoff``: the waits between failed registrations.  Not thread-safe:
    one driver owns it.
    """

    def __init__(
        self, timings: Timings, *, self_check: bool,
        register_backoff: Curve = REGISTER_BACKOFF,
    ) -> None:
        self.timings = timings
        self.self_check = self_check
        self.phase = Phase.STARTING
        self.registered = False
        self.reason: str | None = None
        self.register_failures = 0
        self.signals = 0
        self._curve = register_backoff
        self._deadline = math.inf
        self._settle_at: float | None = None

    @property
    def draining(self) -> bool:
        """Whether the first signal came (the health route answers 503 from then on)."""
        return self.phase in (Phase.DRAINING, Phase.RELEASED)

    @property
    def deadline(self) -> float:
        """When the drain must end (``inf`` before the first signal)."""
        return self._deadline

    def ready(self) -> Step:
        """The app finished its own startup."""
        if self.phase is not Phase.STARTING:
            return Idle()
        self.phase = Phase.REGISTERING
        return Check() if self.self_check else Register()

    def checked(self, ok: bool) -> Step:
        """The self-check passed (``ok``) or failed."""
        if self.phase is not Phase.REGISTERING:
            return Idle()
        return Register() if ok else Sleep(self.timings.check_interval)

    def register_done(self, ok: bool, rand: float = 1.0) -> Step:
        """``register()`` returned (``ok``) or raised; ``rand`` in [0, 1] for the jitter."""
        if self.phase is not Phase.REGISTERING:
            return Idle()
        if ok:
            self.phase = Phase.SERVING
            self.registered = True
            self.register_failures = 0
            return Idle()
        self.register_failures += 1
        return Sleep(self._curve.delay(self.register_failures, rand))

    def signal(self, now: float) -> Step:
        """A shutdown signal: the first starts the drain, a second ends it at once."""
        self.signals += 1
        if self.phase is Phase.RELEASED:
            return Idle()
        if self.phase is Phase.DRAINING:
            return self._release("cut")
        self._deadline = now + self.timings.drain
        if self.phase is Phase.STARTING:
            self.phase = Phase.DRAINING
            return self._release("never registered")
        self.phase = Phase.DRAINING
        return Deregister()

    def deregister_done(self, now: float, ok: bool) -> Step:
        """``deregister()`` returned (``ok``) or raised."""
        del ok  # either way the registry is asked: it may drop the instance on its own
        if self.phase is not Phase.DRAINING:
            return Idle()
        return self._probe_or_release(now)

    def probed(self, now: float, gone: bool) -> Step:
        """The registry answered: ``gone`` (no longer shows the instance) or not, or the
        probe failed (``gone=False``)."""
        if self.phase is not Phase.DRAINING:
            return Idle()
        if now >= self._deadline:
            return self._release("deadline")
        if gone:
            self.registered = False
            self._settle_at = min(now + self.timings.margin, self._deadline)
            return Sleep(self._settle_at - now)
        return Sleep(min(self.timings.probe_interval, self._deadline - now))

    def woken(self, now: float) -> Step:
        """A :class:`Sleep` ended (without a signal)."""
        if self.phase is Phase.REGISTERING:
            return Check() if self.self_check and self.register_failures == 0 else Register()
        if self.phase is not Phase.DRAINING:
            return Idle()
        if self._settle_at is not None and now >= self._settle_at:
            return self._release("gone")
        return self._probe_or_release(now)

    def _probe_or_release(self, now: float) -> Step:
        if now >= self._deadline:
            return self._release("deadline")
        if self._settle_at is not None:
            return Sleep(max(0.0, self._settle_at - now))
        return Probe()

    def _release(self, reason: str) -> Step:
        self.phase = Phase.RELEASED
        self.reason = reason
        return Release(reason)
