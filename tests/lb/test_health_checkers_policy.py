"""lb.health_check settings and lb.health_checkers_policy's verdicts and un-ejection rule (pure).

The three Envoy reports replayed here at the level of the rule; tests/lb/test_health_checkers.py
replays them end to end against real instances.
"""

from __future__ import annotations

import math

import pytest

from kitsd.core.errors import MisuseError, WrongTypeError
from kitsd.lb.health_check import CONNECTION, ERRORS, GrpcCheck, HealthCheck, HttpCheck
from kitsd.lb.health_checkers_policy import Change, HealthTable, Verdict


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"interval": 0}, "interval"),
    ({"interval": math.inf}, "interval"),
    ({"timeout": 6.0}, "timeout"),  # over the interval
    ({"timeout": -1}, "timeout"),
    ({"jitter": 1.0}, "jitter"),
    ({"jitter": -0.1}, "jitter"),
    ({"healthy_threshold": 0}, "healthy_threshold"),
    ({"unhealthy_threshold": 1.5}, "unhealthy_threshold"),
    ({"covers": "connection"}, "covers"),
    ({"covers": {"5xx"}}, "covers"),
    ({"path": "health"}, "path"),
    ({"path": "/a b"}, "path"),
    ({"path": "/a\r\nX: y"}, "path"),
    ({"scheme": "ftp"}, "scheme"),
    ({"statuses": set()}, "statuses"),
    ({"statuses": {200, 700}}, "statuses"),
    ({"statuses": "200"}, "statuses"),
    ({"headers": {"a": 1}}, "headers"),
])
def test_bad_http_settings_name_the_argument(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises((MisuseError, WrongTypeError)) as caught:
        HttpCheck(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(name)


def test_bad_grpc_settings_name_the_argument() -> None:
    with pytest.raises(WrongTypeError, match=r"^service"):
        GrpcCheck(service=None)  # type: ignore[arg-type]
    with pytest.raises(MisuseError, match=r"^interval"):
        GrpcCheck(interval=-1)


def test_the_repr_never_shows_header_values() -> None:
    check = HttpCheck(path="/ready", headers={"Authorization": "Bearer s3cret"})
    assert repr(check) == "HttpCheck(path='/ready', headers=['Authorization'])"
    assert "s3cret" not in str(check)
    assert repr(GrpcCheck(service="users", interval=2.0)) == (
        "GrpcCheck(interval=2.0, service='users')")


def test_same_probe_same_key() -> None:
    assert HttpCheck(path="/a").key == HttpCheck(path="/a", covers={CONNECTION, ERRORS}).key
    assert HttpCheck(path="/a") == HttpCheck(path="/a")
    assert hash(HttpCheck(headers={"a": "b"})) == hash(HttpCheck(headers={"a": "b"}))
    assert HttpCheck(path="/a").key != HttpCheck(path="/b").key
    assert HttpCheck().key != GrpcCheck().key
    assert GrpcCheck(service="x").key != GrpcCheck(service="y").key
    assert HttpCheck(interval=1.0, timeout=0.5).key != HttpCheck().key


def test_schedule_has_jitter_within_bounds() -> None:
    check = HttpCheck(interval=10.0, jitter=0.2, timeout=1.0)
    assert check.next_delay(0.0) == pytest.approx(8.0)
    assert check.next_delay(0.5) == pytest.approx(10.0)
    assert check.next_delay(0.999999) == pytest.approx(12.0, abs=1e-4)
    assert check.first_delay(0.0) == 0.0
    assert check.first_delay(0.5) == pytest.approx(5.0)
    steady = HttpCheck(interval=10.0, jitter=0.0, timeout=1.0)
    assert steady.next_delay(0.9) == 10.0


def test_a_bare_health_check_has_the_common_settings() -> None:
    assert HealthCheck().covers == frozenset({CONNECTION})
    assert HttpCheck(covers=[CONNECTION, ERRORS]).covers == frozenset({CONNECTION, ERRORS})


def table(**kwargs: object) -> HealthTable:
    return HealthTable(HttpCheck(**kwargs))  # type: ignore[arg-type]


def test_verdicts_follow_the_thresholds() -> None:
    health = table(healthy_threshold=2, unhealthy_threshold=3)
    assert health.verdict("a:1") is Verdict.UNKNOWN
    assert health.healthy("a:1")
    assert health.result("a:1", True, 1.0) is Change.HEALTHY  # the first pass says it all
    assert health.result("a:1", False, 2.0) is Change.NONE
    assert health.result("a:1", False, 3.0) is Change.NONE
    assert health.healthy("a:1")
    assert health.result("a:1", False, 4.0) is Change.UNHEALTHY
    assert not health.healthy("a:1")
    assert health.unhealthy() == ["a:1"]
    assert health.result("a:1", True, 5.0) is Change.NONE  # one pass of two
    assert health.result("a:1", False, 6.0) is Change.NONE  # ... reset
    assert health.result("a:1", True, 7.0) is Change.NONE
    assert health.result("a:1", True, 8.0) is Change.RECOVERED
    assert health.verdict("a:1") is Verdict.HEALTHY


def test_an_unknown_instance_fails_into_unhealthy() -> None:
    health = table(unhealthy_threshold=2)
    assert health.result("a:1", False, 1.0) is Change.NONE
    assert health.verdict("a:1") is Verdict.UNKNOWN
    assert health.result("a:1", False, 2.0) is Change.UNHEALTHY


def test_stale_results_are_ignored() -> None:
    health = table(unhealthy_threshold=1)
    assert health.result("a:1", True, 10.0) is Change.HEALTHY
    assert health.result("a:1", False, 9.0) is Change.NONE  # started before the last one
    assert health.healthy("a:1")


def test_forget_and_retain() -> None:
    health = table()
    for key in ("a:1", "b:1", "c:1"):
        health.result(key, True, 1.0)
    health.forget("a:1")
    assert "a:1" not in health
    assert health.retain(lambda key: key == "b:1") == ["c:1"]
    assert len(health) == 1


# --- un-ejection: the rule, and the three Envoy reports --------------------------------


def test_envoy_24217_a_passing_check_brings_back_a_connection_ejection() -> None:
    # Ejected for connection failures at t=10 for (say) 2 minutes; the check passes at
    # t=15: it is reachable again, so it comes back now, not at t=130.
    health = table()
    health.result("a:1", True, 5.0)
    assert not health.unejects("a:1", CONNECTION, ejected_at=10.0)
    health.result("a:1", True, 15.0)
    assert health.unejects("a:1", CONNECTION, ejected_at=10.0)


def test_envoy_28303_a_pass_from_before_the_ejection_does_not_count() -> None:
    # The instance dies at t=10 (ejected then). A check that started at t=9.9, while
    # it was still up, answers OK at t=10.05: it must not put the dead instance back.
    health = table()
    health.result("a:1", True, 9.9)
    assert not health.unejects("a:1", CONNECTION, ejected_at=10.0)
    health.result("a:1", False, 15.0)  # the next check fails (connection refused)
    assert not health.unejects("a:1", CONNECTION, ejected_at=10.0)


def test_envoy_32442_a_failing_check_never_unejects() -> None:
    # Down, ejected by traffic at t=10; the checks have failed once (threshold 3), so
    # the instance is not UNHEALTHY yet: a failing check still must not un-eject it.
    health = table(unhealthy_threshold=3)
    health.result("a:1", True, 1.0)
    health.result("a:1", False, 9.0)
    health.result("a:1", False, 11.0)
    assert health.verdict("a:1") is Verdict.HEALTHY  # below the threshold
    assert not health.unejects("a:1", CONNECTION, ejected_at=10.0)


def test_5xx_ejections_are_not_undone_by_a_health_route() -> None:
    # The issue's own case: ejected for 5xx the health route does not see.
    health = table()
    health.result("a:1", True, 20.0)
    assert not health.unejects("a:1", ERRORS, ejected_at=10.0)
    assert health.unejects("a:1", ERRORS, ejected_at=10.0, covers=frozenset({ERRORS}))
    covering = HealthTable(HttpCheck(covers={CONNECTION, ERRORS}))
    covering.result("a:1", True, 20.0)
    assert covering.unejects("a:1", ERRORS, ejected_at=10.0)


def test_un_ejection_needs_the_healthy_threshold_after_the_ejection() -> None:
    health = table(healthy_threshold=3)
    health.result("a:1", True, 8.0)
    health.result("a:1", True, 11.0)
    health.result("a:1", True, 12.0)
    assert not health.unejects("a:1", CONNECTION, ejected_at=10.0)  # the run began at 8
    health.result("a:1", False, 13.0)
    for started in (14.0, 15.0):
        health.result("a:1", True, started)
        assert not health.unejects("a:1", CONNECTION, ejected_at=10.0)
    health.result("a:1", True, 16.0)
    assert health.unejects("a:1", CONNECTION, ejected_at=10.0)


def test_an_unhealthy_instance_is_never_unejected() -> None:
    health = table(healthy_threshold=2, unhealthy_threshold=1)
    health.result("a:1", False, 11.0)
    health.result("a:1", True, 12.0)  # one pass: still UNHEALTHY
    assert not health.unejects("a:1", CONNECTION, ejected_at=10.0)
    assert not health.unejects("never-checked:1", CONNECTION, ejected_at=10.0)
    with pytest.raises(ValueError, match="cause"):
        health.unejects("a:1", "5xx", ejected_at=10.0)
