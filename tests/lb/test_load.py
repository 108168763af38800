"""Issue 7, "also verify under load": the asyncio stack at 200 concurrent tasks while an
instance dies every 200 ms.

The load run that prompted this saw failed calls whose three attempts all landed
on instances that were down.  Either the retry budget is too small for the churn,
or an attempt picked an instance that it should not have: one the registry had
already dropped, or one the balancer had already ejected while others remained.
These runs tell the two apart.  Each instance is scripted (no sockets, so the run
is CI-sized): it answers after 2 ms, or, once killed, refuses new attempts
(``ConnectionRefusedError``) and resets the ones in flight
(``ConnectionResetError``), both connection-level failures.  A killed instance
stays registered for ``drop_after`` seconds (a registry noticing a crash late),
and a fresh instance registers at once.  For every attempt the run notes whether
the instance was registered, dead and ejected at the moment it was picked, and
which instances the call had already tried.

Findings (figures printed with ``pytest -s``; the same on the code before issue 6's
ejection rework): no attempt ever lands on an instance the registry had dropped,
nor on an ejected one while a live candidate remained, nor twice on one instance
in a call.  When a crash shows at once (refused connections, resets: connection-
level failures) the first contact ejects the instance and no call fails, whether
the registry drops it after 0.15 s or after 1 s (five dead instances registered
at once).  When a crash is slow to show -- the listener still takes connections
for half a second and breaks them with errors that are not connection-level, as
``DemoInstance.kill`` and a real half-dead process do -- the dead instances stay
in rotation until a connect is refused, two or three are in that state at any
time, and about 0.2 % of calls meet three of them and fail.  That is the retry
budget (3 attempts) meeting the churn, not a picking defect; counting broken
connections towards ejection (issue 9's "counted kinds") would shorten it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from kitsd import lb, sd

SERVICE = "svc"


@dataclass
class Attempt:
    call: int
    instance: str
    registered: bool
    dead: bool
    ejected: bool
    alternative: bool  # a registered, not ejected instance the call had not tried


@dataclass
class Run:
    calls: int = 0
    failed: list[lb.RetryError | lb.RetryTimeout] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    deaths: int = 0
    most_dead_registered: int = 0

    def report(self, label: str) -> str:
        on_dead = sum(attempt.dead for attempt in self.attempts)
        return (f"{label}: {self.calls} calls, {len(self.failed)} failed, "
                f"{len(self.attempts)} attempts ({on_dead} on dead instances), "
                f"{self.deaths} deaths, at most {self.most_dead_registered} dead instances "
                f"registered at once")


class ReadError(Exception):
    """Like ``httpx.ReadError``: the connection broke after the request went out.  Not
    a connection-level failure (the server may have acted on the request)."""


class Instance:
    """A scripted instance: answers after 2 ms, or fails like a crashed one.

    With ``hang`` > 0 a crash is slow to show, as :class:`kitsd.demo_server.DemoInstance`'s
    kill is (it stops serving, then closes its listener after up to half a second
    of ``shutdown()`` polling, so connections wait in the backlog): for ``hang``
    seconds after the crash attempts wait and then break with :class:`ReadError`
    (as do the attempts in flight at the crash); only after that are they refused."""

    def __init__(self, name: str, state: Churn) -> None:
        self.name = name
        self.dead = False
        self.died = 0.0
        self._state = state

    async def __call__(self, request: Any) -> str:
        self._state.note(self.name, request)
        if self.dead:
            left = self.died + self._state.hang - time.monotonic()
            if left <= 0:
                raise ConnectionRefusedError(f"{self.name} refused")
            await asyncio.sleep(left)
            raise ReadError(f"{self.name} broke the connection")
        await asyncio.sleep(0.002)
        if self.dead:
            if self._state.hang:
                raise ReadError(f"{self.name} broke the connection")
            raise ConnectionResetError(f"{self.name} reset")
        return self.name


class Churn:
    """Kills an instance every ``interval`` seconds, deregisters it ``drop_after``
    later, and registers a fresh one at once."""

    def __init__(
        self, registry: sd.MemoryRegistry, run: Run, *, drop_after: float, hang: float
    ) -> None:
        self.registry = registry
        self.run = run
        self.drop_after = drop_after
        self.hang = hang
        self.instances: dict[str, Instance] = {}
        self.registrars: dict[str, sd.MemoryRegistrar] = {}
        self.tried: dict[int, list[str]] = {}
        self.balancer: lb.RoundRobin | None = None
        self._ports = itertools.count(8000)

    def add(self) -> None:
        name = f"10.0.0.1:{next(self._ports)}"
        self.instances[name] = Instance(name, self)
        self.registrars[name] = self.registry.registrar(SERVICE, name)
        self.registrars[name].register()

    def note(self, name: str, call: int) -> None:
        """Called as an attempt starts, i.e. right after its pick."""
        assert self.balancer is not None
        registered = set(self.registry.instances(SERVICE))
        ejected = set(self.balancer.ejected())  # balancer-owned state: one place to ask
        tried = self.tried.setdefault(call, [])
        alternative = any(other not in ejected and other not in tried and other != name
                          for other in registered)
        self.run.attempts.append(Attempt(call, name, name in registered,
                                         self.instances[name].dead, name in ejected,
                                         alternative))
        tried.append(name)
        dead_registered = sum(self.instances[other].dead for other in registered)
        self.run.most_dead_registered = max(self.run.most_dead_registered, dead_registered)

    async def churn(self, interval: float, deaths: int, stop: asyncio.Event,
                    rng: random.Random) -> None:
        """Kill an instance (and add one) every ``interval`` seconds, ``deaths`` times,
        then stop the run: the run is as long as its churn, however busy the loop."""
        drops: list[asyncio.Task[None]] = []
        for _ in range(deaths):
            await asyncio.sleep(interval)
            living = [i for i in self.instances.values() if not i.dead]
            victim = rng.choice(living)
            victim.dead = True
            victim.died = time.monotonic()
            self.run.deaths += 1
            self.add()
            drops.append(asyncio.create_task(self._drop_later(victim.name)))
        await asyncio.sleep(interval)  # the last death is called through for a while too
        stop.set()
        await asyncio.gather(*drops)

    async def _drop_later(self, name: str) -> None:
        await asyncio.sleep(self.drop_after)
        self.registrars[name].deregister()


async def churn_run(*, drop_after: float, hang: float = 0.0, deaths: int = 8,
                    tasks: int = 200, instances: int = 8) -> Run:
    run = Run()
    registry = sd.MemoryRegistry()
    state = Churn(registry, run, drop_after=drop_after, hang=hang)
    for _ in range(instances):
        state.add()
    numbers = itertools.count()
    stop = asyncio.Event()
    with registry.instancer(SERVICE) as instancer:
        async with sd.Endpointer(instancer, lambda name: state.instances[name]) as endpointer:
            state.balancer = lb.RoundRobin(endpointer)
            retrying = lb.retry_async(3, 2.0, state.balancer)

            async def caller() -> None:
                while not stop.is_set():
                    number = next(numbers)
                    try:
                        await retrying(number)
                    except (lb.RetryError, lb.RetryTimeout) as error:
                        run.failed.append(error)
                    run.calls += 1

            churner = asyncio.create_task(state.churn(0.2, deaths, stop, random.Random(7)))
            callers = [asyncio.create_task(caller()) for _ in range(tasks)]
            await asyncio.gather(churner, *callers)
    for registrar in state.registrars.values():
        registrar.deregister()
    return run


def check_no_defect(run: Run) -> None:
    dropped = [a for a in run.attempts if not a.registered]
    assert dropped == [], f"attempts on instances the registry had dropped: {dropped[:5]}"
    ejected = [a for a in run.attempts if a.ejected and a.alternative]
    assert ejected == [], f"attempts on ejected instances while others remained: {ejected[:5]}"
    by_call: dict[int, list[Attempt]] = {}
    for attempt in run.attempts:
        by_call.setdefault(attempt.call, []).append(attempt)
    repeats = [call for call, attempts in by_call.items()
               if len({a.instance for a in attempts}) < len(attempts)]
    assert repeats == [], "a call re-picked an instance it had tried while others remained"
    by_name = {a.instance: a for a in run.attempts}
    for error in run.failed:
        # The budget, not a defect: the call gave up after three attempts, each on a
        # distinct instance that was down (or it ran out of time).
        assert isinstance(error, lb.RetryTimeout) or len(error.errors) == 3, error
        names = {str(e).split()[0] for e in error.errors}
        assert len(names) == len(error.errors), error
        assert all(name in by_name for name in names), error


@pytest.mark.parametrize(
    ("drop_after", "hang", "fails"),
    [
        (0.15, 0.0, False),  # crashes show at once; the registry drops them promptly
        (1.0, 0.0, False),  # the registry notices a second late: ejection covers it
        (1.0, 0.5, True),  # crashes take half a second to show: the budget runs out
    ],
    ids=["prompt-registry", "late-registry", "slow-to-show-crashes"],
)
def test_churn_under_load(drop_after: float, hang: float, fails: bool,
                          capsys: pytest.CaptureFixture[str]) -> None:
    run = asyncio.run(churn_run(drop_after=drop_after, hang=hang))
    with capsys.disabled():
        print("\n" + run.report(f"drop_after={drop_after}s hang={hang}s"))
    assert run.calls > 1000
    assert run.deaths == 8
    check_no_defect(run)
    if not fails:
        # crashes that show at once are ejected on first contact: exclusion and
        # ejection leave every call a live instance within three attempts
        assert run.failed == []
    else:
        # Several instances are down but not yet known to be (they break
        # connections late, with errors that do not count as connection-level):
        # calls whose three attempts all meet one fail.  That is the budget.
        assert run.failed
        attempts_on_dead = Counter(a.call for a in run.attempts if a.dead)
        assert max(attempts_on_dead.values()) >= 3
