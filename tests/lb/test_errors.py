"""lb.errors: NoEndpointsError, RetryError and RetryTimeout, and their place in the error tree."""

from __future__ import annotations

import copy
import pickle

import pytest

from kitsd import lb, sd


def test_no_endpoints_error() -> None:
    error = lb.NoEndpointsError()
    assert str(error) == "no endpoints available"
    assert isinstance(error, sd.KitsdError)
    assert not isinstance(error, ValueError)  # not a misuse: the set was just empty
    assert str(lb.NoEndpointsError("none for svc")) == "none for svc"


def test_retry_error_with_one_error_is_the_final_error() -> None:
    only = ValueError("it broke")
    error = lb.RetryError([only], only)
    assert str(error) == "it broke"
    assert error.errors == [only]
    assert error.final is only
    assert isinstance(error, sd.KitsdError)


def test_retry_error_lists_the_previous_errors() -> None:
    e1, e2, e3 = ValueError("e1"), OSError("e2"), KeyError("e3")
    error = lb.RetryError([e1, e2, e3], e3)
    assert str(error) == f"{e3} (previously: e1; e2)"
    assert error.errors == [e1, e2, e3]


def test_retry_error_with_a_replacement_final() -> None:
    e1, e2, e3 = (ValueError(n) for n in ("e1", "e2", "e3"))
    final = RuntimeError("gave up on purpose")
    error = lb.RetryError([e1, e2, e3], final)
    # As go-kit: the last raw error is represented by the final one.
    assert str(error) == "gave up on purpose (previously: e1; e2)"
    assert str(lb.RetryError([e1], final)) == "gave up on purpose"
    assert str(lb.RetryError([], final)) == "gave up on purpose"


def test_retry_error_keeps_its_own_copy_of_the_errors() -> None:
    raw: list[BaseException] = [ValueError("a")]
    error = lb.RetryError(raw, raw[0])
    raw.append(ValueError("b"))
    assert len(error.errors) == 1


def test_retry_timeout_is_a_timeout_error() -> None:
    seen = [ValueError("one"), ConnectionRefusedError("two")]
    error = lb.RetryTimeout(0.25, seen)
    assert isinstance(error, TimeoutError)
    assert isinstance(error, sd.KitsdError)
    assert error.errors == seen
    assert error.errors is not seen
    assert error.timeout == 0.25
    assert str(error) == "retry timed out after 0.25s (errors so far: one; two)"
    assert str(lb.RetryTimeout(2, [])) == "retry timed out after 2s"
    with pytest.raises(TimeoutError):
        raise error


@pytest.mark.parametrize(
    "error",
    [
        lb.NoEndpointsError(),
        lb.RetryError([ValueError("a"), ValueError("b")], ValueError("b")),
        lb.RetryError([ValueError("a")], RuntimeError("replacement")),
        lb.RetryTimeout(1.5, [ValueError("a")]),
    ],
    ids=repr,
)
def test_errors_survive_pickle_and_copy(error: Exception) -> None:
    # Errors cross process pools and get copied by frameworks; both use __reduce__.
    pickled = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object, round-tripped
    for clone in (pickled, copy.copy(error)):
        assert type(clone) is type(error)
        assert str(clone) == str(error)
        assert [str(e) for e in getattr(clone, "errors", [])] == [
            str(e) for e in getattr(error, "errors", [])
        ]
