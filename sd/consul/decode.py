"""Decode the body of a ``/v1/health/service`` answer: msgspec when installed, else json.

Pure: no I/O, no threads, no clock.

Theory of operation
-------------------
At 10,000 instances Consul's answer is ~10 MB of JSON, of which the watch reads
a handful of fields per entry (``Node.Address``, ``Service.Address``/``Port``/
``Tags``/``Meta``/``Weights``, ``Checks[].Status``; see :mod:`sd.consul.health`).
``json.loads`` builds every one of the ~20 objects per entry anyway, and its
garbage collections over them cost as much again.

With msgspec (installed by ``kitsd[consul]``), :func:`decode_entries` decodes
straight into dicts holding only those fields (:class:`_Entry`), skipping the
rest unbuilt: about a tenth of ``json.loads``'s CPU and far fewer objects for
the collector.  It is only an accelerator: a body it does not accept (an entry
that is not an object, a port that is not an integer, a tag or meta value that
is not a string, non-UTF-8 text: nothing Consul itself sends) is decoded again
by ``json.loads`` and goes through the same careful translation, so both paths
give the same instances, metadata and warnings.  Without msgspec,
:func:`decode_entries` is :func:`json_entries`.

A body that is not JSON at all raises
:class:`~sd.consul.health.UnreadableAnswerError` (which the watch reports as
:class:`~kitsd.core.errors.RegistryUnavailableError`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypedDict

from kitsd.sd.consul.health import UnreadableAnswerError

__all__ = ["FAST", "Decoder", "decode_entries", "json_entries"]

Decoder = Callable[[bytes], object]
"""A health body (bytes) -> the decoded entries (what ``json.loads`` would give, or a
subset of each entry's fields)."""


def json_entries(body: bytes) -> object:
    """``body`` decoded by the standard library's ``json.loads``.

    Raises :class:`~sd.consul.health.UnreadableAnswerError` for a body that is not JSON.
    """
    try:
        return json.loads(body)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise UnreadableAnswerError(f"cannot decode JSON: {_summary(error)}") from error


def _summary(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# The fields the watch reads, typed as Consul sends them (total=False: an absent
# field stays absent, as with json.loads).  Names are Consul's.
class _Node(TypedDict, total=False):
    Address: str


class _Weights(TypedDict, total=False):
    Passing: int
    Warning: int


class _Service(TypedDict, total=False):
    ID: str  # names a skipped entry in the warning
    Address: str
    Port: int
    Tags: list[str] | None
    Meta: dict[str, str] | None
    Weights: _Weights | None


class _Check(TypedDict, total=False):
    Status: str


class _Entry(TypedDict, total=False):
    Node: _Node
    Service: _Service
    Checks: list[_Check] | None


def _msgspec_decoder() -> Decoder | None:
    try:
        import msgspec  # an optional accelerator
    except ImportError:
        return None
    typed = msgspec.json.Decoder(list[_Entry])

    def msgspec_entries(body: bytes) -> object:
        """``body`` decoded by msgspec into the fields the watch reads; anything it
        does not accept is decoded by :func:`json_entries` instead."""
        try:
            return typed.decode(body)
        except msgspec.MsgspecError:  # DecodeError, ValidationError
            return json_entries(body)

    return msgspec_entries


_FAST = _msgspec_decoder()

FAST: bool = _FAST is not None
"""Whether msgspec is installed (and :func:`decode_entries` uses it)."""

decode_entries: Decoder = _FAST if _FAST is not None else json_entries
"""The best decoder installed: msgspec's (see the module docstring), else
:func:`json_entries`.  Raises :class:`~sd.consul.health.UnreadableAnswerError` for a
body that is not JSON."""
