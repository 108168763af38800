"""Outlier detection beyond connection failures (issue 9.4): 5xx, timeouts and
registered errors counted by ``consecutive_errors``, success resets, the cap, panic mode."""

from __future__ import annotations

import pytest

from kitsd import lb, sd
from kitsd.lb.outlier_detection import CountedError, is_counted_error
from kitsd.lb.pool_policy import Ejections
from tests.lb.sources import noop


class Status(Exception):
    """What sd.http.StatusError looks like to lb: an int ``status_code``."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class Unavailable(Exception):
    """A gRPC-UNAVAILABLE-like error, registered as counted."""


CountedError.register(Unavailable)


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (Status(500), True),
        (Status(503), True),
        (Status(404), False),
        (Status(499), False),
        (TimeoutError("slow"), True),
        (Unavailable(), True),
        (ConnectionRefusedError(), True),
        (ValueError("bad"), False),
    ],
)
def test_counted_kinds(error: Exception, counted: bool) -> None:
    assert is_counted_error(error) is counted
    assert lb.OutlierDetection(consecutive_errors=3).counts(error) is counted


def test_consecutive_errors_off_by_default() -> None:
    policy = lb.OutlierDetection()
    assert policy.consecutive_errors is None
    assert not policy.counts(Status(503))


def test_n_consecutive_5xx_eject() -> None:
    ejections = Ejections(lb.OutlierDetection(consecutive_errors=3))
    assert ejections.failed("e", Status(503), now=0.0, pool=10) is None
    assert ejections.failed("e", TimeoutError(), now=0.0, pool=10) is None
    assert ejections.failed("e", Status(500), now=0.0, pool=10) == 1.0
    assert ejections.is_ejected("e", 0.5)


def test_success_resets_the_run() -> None:
    ejections = Ejections(lb.OutlierDetection(consecutive_errors=2))
    ejections.failed("e", Status(503), now=0.0, pool=10)
    ejections.succeeded("e")
    assert ejections.failed("e", Status(503), now=0.0, pool=10) is None
    assert ejections.failed("e", Status(503), now=0.0, pool=10) == 1.0


def test_uncounted_errors_neither_count_nor_reset() -> None:
    ejections = Ejections(lb.OutlierDetection(consecutive_errors=2))
    ejections.failed("e", Status(503), now=0.0, pool=10)
    ejections.failed("e", ValueError("4xx-like"), now=0.0, pool=10)
    assert ejections.failed("e", Status(503), now=0.0, pool=10) == 1.0


def test_ejection_time_grows_for_errors_too() -> None:
    ejections = Ejections(lb.OutlierDetection(consecutive_errors=1, base_ejection_time=1.0))
    durations = [ejections.failed("e", Status(500), now=10.0 * t, pool=10) for t in range(4)]
    assert durations == [1.0, 2.0, 4.0, 8.0]


def test_cap_applies_to_error_ejections() -> None:
    ejections = Ejections(lb.OutlierDetection(consecutive_errors=1, max_ejected_percent=20))
    ejected = [ejections.failed(f"e{i}", Status(500), now=0.0, pool=10) for i in range(5)]
    assert sum(d is not None for d in ejected) == 2


def test_connection_failures_keep_their_own_threshold() -> None:
    ejections = Ejections(lb.OutlierDetection(consecutive_failures=1, consecutive_errors=5))
    assert ejections.failed("e", ConnectionRefusedError(), now=0.0, pool=10) == 1.0


def test_custom_error_predicate() -> None:
    policy = lb.OutlierDetection(consecutive_errors=1, errors=lambda e: isinstance(e, KeyError))
    assert policy.counts(KeyError())
    assert not policy.counts(Status(503))


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"consecutive_errors": 0}, sd.MisuseError),
        ({"consecutive_errors": 1.5}, TypeError),
        ({"panic_threshold": 101.0}, sd.MisuseError),
        ({"panic_threshold": -1.0}, sd.MisuseError),
        ({"errors": "5xx"}, TypeError),
    ],
)
def test_bad_settings(settings: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        lb.OutlierDetection(**settings)  # type: ignore[arg-type]


def test_panic_mode_spreads_over_everyone() -> None:
    names = [f"10.0.0.{i}:80" for i in range(10)]
    endpointer = sd.Endpointer(sd.FixedInstancer(names), noop)
    policy = lb.OutlierDetection(consecutive_errors=1, max_ejected_percent=100,
                                 panic_threshold=50, base_ejection_time=3600,
                                 max_ejection_time=3600)
    balancer = lb.RoundRobin(endpointer, outlier_detection=policy)
    with endpointer:
        snapshot = endpointer.snapshot()
        balancer.pick()  # the balancer reads the set
        for index in range(4):  # 6 of 10 healthy: above the threshold
            balancer.report(lb.Pick(names[index], snapshot.endpoints[index]), Status(503))
        assert len(balancer.ejected()) == 4
        picked = {balancer.pick().instance for _ in range(100)}
        assert picked == set(names[4:])
        for index in range(4, 6):  # 4 of 10 healthy: panic
            balancer.report(lb.Pick(names[index], snapshot.endpoints[index]), Status(503))
        assert len(balancer.ejected()) == 6
        picked = {balancer.pick().instance for _ in range(100)}
        assert picked == set(names)


def test_retry_ejects_an_instance_answering_5xx() -> None:
    names = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
    calls: list[str] = []

    def factory(instance: str) -> sd.Endpoint:
        def endpoint(request: object) -> str:
            calls.append(instance)
            if instance == names[0]:
                raise Status(503)
            return instance
        return endpoint

    with sd.Endpointer(sd.FixedInstancer(names), factory) as endpointer:
        policy = lb.OutlierDetection(consecutive_errors=2, base_ejection_time=3600,
                                     max_ejection_time=3600)
        call = lb.retry(3, 5.0, lb.RoundRobin(endpointer, outlier_detection=policy))
        for n in range(30):
            assert call(n) != names[0]
        assert calls.count(names[0]) == 2  # two 5xx in a row, then out
