"""Argument checks shared by every constructor: numbers, seconds, counts, flags.

Pure: no clock, no I/O.  Each check returns the value it accepted (``float`` for
numbers and seconds, ``int`` for counts, ``bool`` for flags) or raises, naming
the argument exactly as it is given in ``name`` (``"ttl"``, ``"connect() timeout"``,
``"etcd URL liveness"`` …):

* :class:`~kitsd.core.errors.WrongTypeError` (a ``TypeError`` and a
  ``MisuseError``) when the value is not of the kind asked for.  ``bool`` is never
  a number (``True`` is an ``int`` to Python, not a count of seconds to a caller).
  The value is shown through :func:`~kitsd.core.errors.shown_value` (cut short,
  anything before an ``@`` hidden), as every kitsd message shows a value;
* :class:`~kitsd.core.errors.MisuseError` (a ``ValueError``) when the number is out
  of range.  NaN never passes (every comparison with it is false, so it would slip
  through a plain ``value <= 0`` test); infinity only where ``infinite=True``
  says so (it would overflow ``time.sleep`` and every socket timeout it reached).

Messages read ``{name} must be {what}, not {value!r}``, ``what`` spelling the
range: ``finite seconds > 0``, ``seconds in (0, 600]``, ``an int, at least 1``,
``a finite number >= 0, or None``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from kitsd.core.errors import MisuseError, WrongTypeError, shown_value

__all__ = [
    "flag",
    "integer",
    "number",
    "optional_integer",
    "optional_number",
    "optional_seconds",
    "seconds",
]


def number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
    infinite: bool = False,
    unit: str = "number",
    or_none: bool = False,
) -> float:
    """``value`` as a float: an ``int`` or ``float`` (not ``bool``), not NaN, finite
    unless ``infinite``, and ``>= minimum``, ``> above``, ``<= maximum``, ``< below``
    (each when given).  ``unit`` names what it counts in messages (``"seconds"``).
    ``or_none`` says "or None" in the messages (the ``optional_`` checks set it)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WrongTypeError(f"{name} must be {_kind(unit, or_none)}, not {shown_value(value)}")
    if not (
        not math.isnan(value)
        and (infinite or math.isfinite(value))
        and (minimum is None or value >= minimum)
        and (above is None or value > above)
        and (maximum is None or value <= maximum)
        and (below is None or value < below)
    ):
        what = _range(unit, minimum, above, maximum, below, infinite)
        raise MisuseError(f"{name} must be {what}{', or None' if or_none else ''}, "
                          f"not {value!r}")
    return float(value)


def optional_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
    infinite: bool = False,
    unit: str = "number",
) -> float | None:
    """``None``, or ``value`` checked by :func:`number`."""
    if value is None:
        return None
    return number(name, value, minimum=minimum, above=above, maximum=maximum, below=below,
                  infinite=infinite, unit=unit, or_none=True)


def seconds(
    name: str,
    value: object,
    *,
    zero: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    infinite: bool = False,
) -> float:
    """A duration: ``> 0`` seconds (``>= 0`` with ``zero``), at least ``minimum`` and at
    most ``maximum`` when given, finite unless ``infinite``."""
    return number(name, value, minimum=0.0 if zero else minimum, above=None if zero else 0.0,
                  maximum=maximum, infinite=infinite, unit="seconds")


def optional_seconds(
    name: str,
    value: object,
    *,
    zero: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    infinite: bool = False,
) -> float | None:
    """``None`` (no limit, or "not set"), or a duration checked by :func:`seconds`."""
    if value is None:
        return None
    return number(name, value, minimum=0.0 if zero else minimum, above=None if zero else 0.0,
                  maximum=maximum, infinite=infinite, unit="seconds", or_none=True)


def integer(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None,
    or_none: bool = False,
) -> int:
    """``value`` as an int (not ``bool``, not ``float``), within ``[minimum, maximum]``
    when given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise WrongTypeError(f"{name} must be {_kind('int', or_none)}, not {shown_value(value)}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        what = _range("int", minimum, None, maximum, None, infinite=True)
        raise MisuseError(f"{name} must be {what}{', or None' if or_none else ''}, not {value!r}")
    return value


def optional_integer(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None,
) -> int | None:
    """``None``, or ``value`` checked by :func:`integer`."""
    if value is None:
        return None
    return integer(name, value, minimum=minimum, maximum=maximum, or_none=True)


def flag(name: str, value: object) -> bool:
    """``value`` if it is ``True`` or ``False`` (``1``, ``"yes"`` and ``None`` are not)."""
    if not isinstance(value, bool):
        raise WrongTypeError(f"{name} must be True or False, not {shown_value(value)}")
    return value


def _kind(unit: str, or_none: bool) -> str:
    kind = {"seconds": "a number of seconds", "int": "an int"}.get(unit, f"a {unit}")
    return f"{kind} or None" if or_none else kind


def _range(
    unit: str,
    minimum: float | None,
    above: float | None,
    maximum: float | None,
    below: float | None,
    infinite: bool,
) -> str:
    """How a message spells the accepted range: ``finite seconds > 0``,
    ``seconds in (0, 600]``, ``an int, at least 1``, ``a finite number``."""
    noun = {"seconds": "seconds", "int": "an int"}.get(unit, f"a {unit}")
    lower = _bound(minimum, above, low=True)
    upper = _bound(maximum, below, low=False)
    if lower is not None and upper is not None:
        return (f"{noun} in {'[' if lower[1] else '('}{lower[0]:g}, "
                f"{upper[0]:g}{']' if upper[1] else ')'}")
    if not infinite and unit != "int":  # "finite seconds", "a finite number"
        article, _, rest = noun.rpartition(" ")
        noun = f"{article} finite {rest}" if article else f"finite {noun}"
    if lower is not None:
        bound, inclusive = lower
        if inclusive and bound != 0:
            return f"{noun}, at least {bound:g}"
        return f"{noun} {'>=' if inclusive else '>'} {bound:g}"
    if upper is not None:
        return f"{noun} {'<=' if upper[1] else '<'} {upper[0]:g}"
    return noun


def _bound(inclusive: float | None, exclusive: float | None, *, low: bool) -> (
    tuple[float, bool] | None
):
    """The tighter of an inclusive and an exclusive bound, as ``(value, inclusive)``."""
    if inclusive is None and exclusive is None:
        return None
    if inclusive is None:
        assert exclusive is not None  # noqa: S101 - for mypy: one of the two is set
        return exclusive, False
    if exclusive is None:
        return inclusive, True
    tighter_inclusive = inclusive > exclusive if low else inclusive < exclusive
    return (inclusive, True) if tighter_inclusive else (exclusive, False)


def keywords(function: str, given: Mapping[str, object], allowed: type) -> None:
    """``TypeError`` as Python's own, naming the public ``function``, for a keyword the
    ``TypedDict`` ``allowed`` does not list: a function taking ``**options:
    Unpack[...]`` would otherwise fail in whichever helper first unpacks them."""
    names = getattr(allowed, "__required_keys__", frozenset()) | getattr(
        allowed, "__optional_keys__", frozenset())
    for name in given:
        if name not in names:
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r}")
