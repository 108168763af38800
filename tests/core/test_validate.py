"""kitsd.core.validate: the one set of number checks every constructor uses."""

from __future__ import annotations

import math
from typing import Any

import pytest

from kitsd.core import validate
from kitsd.core.errors import MisuseError, WrongTypeError


@pytest.mark.parametrize("value", [True, False, "5", None, b"1", [1], 1j])
def test_not_a_number_is_a_wrong_type(value: object) -> None:
    with pytest.raises(WrongTypeError, match=r"^ttl must be a number of seconds, not ") as caught:
        validate.seconds("ttl", value)
    assert isinstance(caught.value, TypeError)
    assert isinstance(caught.value, ValueError)  # and a MisuseError: any bad argument


@pytest.mark.parametrize("value", [0, -1, -0.0, math.nan, math.inf, -math.inf])
def test_seconds_must_be_finite_and_positive(value: float) -> None:
    with pytest.raises(MisuseError, match=r"^ttl must be finite seconds > 0, not ") as caught:
        validate.seconds("ttl", value)
    assert not isinstance(caught.value, TypeError)


@pytest.mark.parametrize(("kwargs", "good", "bad", "says"), [
    ({"zero": True}, [0, 0.0, 3], [-1e-9, math.nan, math.inf], "finite seconds >= 0"),
    ({"maximum": 600}, [1e-9, 600], [0, 600.5], "seconds in (0, 600]"),
    ({"zero": True, "maximum": 600}, [0, 600], [-1, 601], "seconds in [0, 600]"),
    ({"minimum": 1}, [1, 2.5], [0.999, 0, math.inf], "finite seconds, at least 1"),
    ({"zero": True, "infinite": True}, [0, math.inf], [-1, math.nan, -math.inf],
     "seconds >= 0"),
])
def test_seconds_ranges(kwargs: dict[str, Any], good: list[float], bad: list[float],
                        says: str) -> None:
    for value in good:
        assert validate.seconds("t", value, **kwargs) == value
        assert type(validate.seconds("t", value, **kwargs)) is float
    for value in bad:
        with pytest.raises(MisuseError) as caught:
            validate.seconds("t", value, **kwargs)
        assert str(caught.value) == f"t must be {says}, not {value!r}"


def test_optional_checks_let_none_through_and_say_so() -> None:
    assert validate.optional_seconds("interval", None) is None
    assert validate.optional_number("percentile", None, above=0, below=100) is None
    assert validate.optional_integer("vnodes", None, minimum=1) is None
    with pytest.raises(MisuseError, match=r"^interval must be finite seconds > 0, or None, "
                                          r"not 0$"):
        validate.optional_seconds("interval", 0)
    with pytest.raises(WrongTypeError, match=r"^interval must be a number of seconds or None, "
                                             r"not '1s'$"):
        validate.optional_seconds("interval", "1s")
    with pytest.raises(WrongTypeError, match=r"^vnodes must be an int or None, not 2.0$"):
        validate.optional_integer("vnodes", 2.0)


def test_numbers_and_their_bounds() -> None:
    assert validate.number("percent", 0, minimum=0, maximum=100) == 0.0
    assert validate.number("percent", 100, minimum=0, maximum=100) == 100.0
    with pytest.raises(MisuseError, match=r"^percent must be a number in \[0, 100\], not 101$"):
        validate.number("percent", 101, minimum=0, maximum=100)
    with pytest.raises(MisuseError, match=r"^percentile must be a number in \(0, 100\), "):
        validate.number("percentile", 100, above=0, below=100)
    with pytest.raises(MisuseError, match=r"^rate must be a finite number >= 0, not -1$"):
        validate.number("rate", -1, minimum=0)
    with pytest.raises(MisuseError, match=r"^x must be a finite number, not nan$"):
        validate.number("x", math.nan)
    with pytest.raises(MisuseError, match=r"^x must be a number < 1, not nan$"):
        validate.number("x", math.nan, below=1, infinite=True)  # NaN never passes


def test_the_tighter_of_two_bounds_is_said() -> None:
    with pytest.raises(MisuseError, match=r"^x must be a finite number, at least 2, not 1$"):
        validate.number("x", 1, minimum=2, above=0)
    with pytest.raises(MisuseError, match=r"^x must be a finite number > 2, not 2$"):
        validate.number("x", 2, minimum=1, above=2)


def test_integers() -> None:
    assert validate.integer("page_size", 1, minimum=1) == 1
    assert validate.integer("level", -5) == -5
    with pytest.raises(MisuseError, match=r"^page_size must be an int, at least 1, not 0$"):
        validate.integer("page_size", 0, minimum=1)
    with pytest.raises(MisuseError, match=r"^port must be an int in \[1, 65535\], not 65536$"):
        validate.integer("port", 65536, minimum=1, maximum=65535)
    for wrong in (True, 2.0, "80", None):
        with pytest.raises(WrongTypeError, match=r"^port must be an int, not "):
            validate.integer("port", wrong, minimum=1, maximum=65535)


def test_flags() -> None:
    assert validate.flag("tcp", True) is True
    assert validate.flag("tcp", False) is False
    for wrong in (1, 0, "yes", None):
        with pytest.raises(WrongTypeError, match=r"^tcp must be True or False, not "):
            validate.flag("tcp", wrong)


def test_a_value_in_a_message_is_redacted_and_cut() -> None:
    with pytest.raises(WrongTypeError) as caught:
        validate.seconds("timeout", "admin:S3CRET@host")
    assert "S3CRET" not in str(caught.value)
    assert "***@host" in str(caught.value)
    with pytest.raises(WrongTypeError) as long:
        validate.integer("n", "x" * 10_000)
    assert len(str(long.value)) < 200
