"""The pure lifecycle machine: every row of its transition table."""

from __future__ import annotations

import math
from typing import cast

import pytest

from kitsd.core.errors import MisuseError
from kitsd.serve._drain import (
    REGISTER_BACKOFF,
    Check,
    Deregister,
    Idle,
    Lifecycle,
    Phase,
    Probe,
    Register,
    Release,
    Sleep,
    Timings,
)


def approx(seconds: float) -> float:
    """``pytest.approx`` typed as the float it stands for."""
    return cast(float, pytest.approx(seconds))


def phase_of(machine: Lifecycle) -> Phase:
    return machine.phase


TIMINGS = Timings(drain=10.0, margin=2.0, probe_interval=0.1, check_interval=0.05)


def serving(self_check: bool = True) -> Lifecycle:
    machine = Lifecycle(TIMINGS, self_check=self_check)
    machine.ready()
    if self_check:
        machine.checked(True)
    machine.register_done(True)
    return machine


def test_ready_checks_first_then_registers() -> None:
    machine = Lifecycle(TIMINGS, self_check=True)
    assert phase_of(machine) is Phase.STARTING
    assert machine.ready() == Check()
    assert phase_of(machine) is Phase.REGISTERING
    assert machine.checked(False) == Sleep(0.05)
    assert machine.woken(1.0) == Check()
    assert machine.checked(True) == Register()
    assert not machine.registered
    assert machine.register_done(True) == Idle()
    assert (machine.phase, machine.registered) == (Phase.SERVING, True)
    assert machine.ready() == Idle()


def test_without_self_check_ready_registers_at_once() -> None:
    assert Lifecycle(TIMINGS, self_check=False).ready() == Register()


def test_failed_registrations_back_off_doubling_to_ten_seconds() -> None:
    machine = Lifecycle(TIMINGS, self_check=False)
    machine.ready()
    delays = []
    for _ in range(10):
        step = machine.register_done(False, rand=1.0)
        assert isinstance(step, Sleep)
        delays.append(step.seconds)
        assert machine.woken(0.0) == Register()  # not a new self-check
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == REGISTER_BACKOFF.maximum == 10.0
    assert machine.phase is Phase.REGISTERING
    assert not machine.registered
    assert machine.register_done(True) == Idle()
    assert machine.register_failures == 0


def test_drain_deregisters_probes_until_gone_then_waits_the_margin() -> None:
    machine = serving()
    assert not machine.draining
    assert machine.signal(100.0) == Deregister()
    assert machine.draining
    assert machine.phase is Phase.DRAINING
    assert machine.deadline == 110.0
    assert machine.deregister_done(100.1, ok=True) == Probe()
    assert machine.probed(100.2, gone=False) == Sleep(0.1)
    assert machine.woken(100.3) == Probe()
    assert machine.probed(100.4, gone=True) == Sleep(approx(2.0))
    assert not machine.registered
    assert machine.woken(101.0) == Sleep(approx(1.4))  # woken early: keep settling
    assert machine.woken(102.4) == Release("gone")
    assert (machine.phase, machine.reason) == (Phase.RELEASED, "gone")
    assert machine.signal(103.0) == Idle()


def test_a_failed_deregistration_still_waits_for_the_registry() -> None:
    machine = serving()
    machine.signal(0.0)
    assert machine.deregister_done(0.5, ok=False) == Probe()


def test_the_deadline_bounds_everything() -> None:
    machine = serving()
    machine.signal(0.0)
    machine.deregister_done(1.0, ok=True)
    assert machine.probed(9.95, gone=False) == Sleep(approx(0.05))
    assert machine.probed(10.0, gone=False) == Release("deadline")
    late = serving()
    late.signal(0.0)
    late.deregister_done(1.0, ok=True)
    assert late.probed(9.0, gone=True) == Sleep(approx(1.0))  # margin cut to the deadline
    assert late.woken(10.0) == Release("gone")
    slow = serving()
    slow.signal(0.0)
    assert slow.woken(10.5) == Release("deadline")  # the deregister call itself outran it


def test_a_second_signal_releases_at_once() -> None:
    machine = serving()
    machine.signal(0.0)
    assert machine.signal(0.1) == Release("cut")
    assert machine.signals == 2
    assert machine.deregister_done(0.2, ok=True) == Idle()
    assert machine.probed(0.3, gone=True) == Idle()


def test_a_signal_while_registering_deregisters() -> None:
    machine = Lifecycle(TIMINGS, self_check=True)
    machine.ready()
    assert machine.signal(0.0) == Deregister()
    assert machine.checked(True) == Idle()
    assert machine.register_done(True) == Idle()
    assert not machine.registered


def test_a_signal_before_ready_releases_at_once() -> None:
    machine = Lifecycle(TIMINGS, self_check=True)
    assert machine.signal(0.0) == Release("never registered")
    assert machine.ready() == Idle()


def test_zero_drain_releases_on_the_first_answer() -> None:
    machine = Lifecycle(Timings(drain=0.0, margin=0.0), self_check=False)
    machine.ready()
    machine.register_done(True)
    machine.signal(5.0)
    assert machine.deregister_done(5.0, ok=True) == Release("deadline")


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"drain": -1}, "drain"), ({"drain": math.inf}, "drain"), ({"margin": math.nan}, "margin"),
     ({"probe_interval": 0}, "probe_interval"), ({"check_interval": -0.1}, "check_interval")],
)
def test_bad_timings_name_the_option(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(MisuseError, match=named):
        Timings(**kwargs)


def test_timings_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="drain"):
        Timings(drain="10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="margin"):
        Timings(margin=True)
