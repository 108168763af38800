"""The one place kitsd reaches past pybreaker's public surface.

pybreaker's ``CircuitBreaker`` keeps its state in a storage object
(``CircuitMemoryStorage`` by default, ``CircuitRedisStorage`` when the user says
so), passed in as ``state_storage=`` but not handed back by any public
attribute.  kitsd needs that storage for what the breaker offers no public
method for:

- the consecutive-failure and half-open success counters
  (``increment_counter``, ``reset_counter``, ``increment_success_counter``),
  which pybreaker only moves inside its own ``call``, and which users read as
  ``cb.fail_counter`` / ``cb.success_counter``;
- ``opened_at``, to judge whether an open breaker's reset timeout has elapsed.

The storage's methods are public (they are the documented interface a custom
storage implements); only the way to the storage, ``cb._state_storage``, is
private.  :func:`storage_of` is its only use, checked at wrap time (so a
pybreaker release that renames it fails loudly when a breaker is built, not
silently at the first failure), and ``tests/breaker/test_pybreaker_contract.py``
checks it against the installed pybreaker.

Verified against pybreaker 1.4.1 (``pyproject``: ``pybreaker>=1.4,<2``).
Everything else kitsd uses is public: ``state`` (and its ``name``),
``current_state``, ``fail_counter``, ``success_counter``, ``fail_max``,
``reset_timeout``, ``success_threshold``, ``listeners``, ``is_system_error()``,
``open()`` (which returns ``throw_new_error_on_trip``), ``half_open()``,
``close()``.
"""

from __future__ import annotations

from importlib import metadata

from pybreaker import CircuitBreaker, CircuitBreakerStorage

__all__ = ["PRIVATE_ATTRIBUTE", "storage_of"]

#: The private attribute of ``pybreaker.CircuitBreaker`` that :func:`storage_of` reads.
PRIVATE_ATTRIBUTE = "_state_storage"


def storage_of(cb: CircuitBreaker) -> CircuitBreakerStorage:
    """The state storage of ``cb``.

    Raises ``RuntimeError`` naming the attribute and the pybreaker version if
    the installed pybreaker no longer keeps it where kitsd expects.
    """
    storage = getattr(cb, PRIVATE_ATTRIBUTE, None)
    if not isinstance(storage, CircuitBreakerStorage):
        raise RuntimeError(  # noqa: TRY004 - a vendor contract broke, not a caller's type
            f"pybreaker {_version()} no longer keeps a CircuitBreakerStorage in "
            f"CircuitBreaker.{PRIVATE_ATTRIBUTE}; kitsd's breaker was verified with "
            "pybreaker 1.4 and needs updating"
        )
    return storage


def _version() -> str:
    try:
        return metadata.version("pybreaker")
    except metadata.PackageNotFoundError:
        return "(version unknown)"
