"""Which etcd failure is which: the one place vendor errors are classified.

The etcd clients (``pyetcd``, ``etcd3``) raise ``grpc.RpcError`` values (with
``code()`` and ``details()``), their own exception classes wrapping those (the
gRPC error kept as ``__context__``), and ``ValueError('Trying to use a failed
node')``.  Everything kitsd decides about an error -- report it as
unavailable or as a refusal, log in again, skip an oversized key, re-read
after compaction -- is decided here, by looking through the chain of causes, so
neither the adapter nor the drivers test vendor types.

:func:`to_backend_error` maps to :mod:`kitsd.core.errors`::

    etcd refused the credentials / token / permission   -> PermissionDeniedError
    the answer was larger than the client accepts        -> RegistryUnavailableError
                                                            ("... too large (RESOURCE_EXHAUSTED)")
    anything else (unreachable, timeout, no leader, ...) -> RegistryUnavailableError
                                                            ("... etcd unavailable (connection
                                                            refused)": why, when gRPC says)

the vendor error kept as ``__cause__`` by the caller (``raise ... from``).
Messages name the operation and the endpoints, never credentials, and they are
stable, so a registry that keeps failing the same way is not re-published to
subscribers as news.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from kitsd.core.errors import BackendError, PermissionDeniedError, RegistryUnavailableError

__all__ = [
    "compacted_revision",
    "is_auth_error",
    "is_connection_error",
    "is_deadline_exceeded",
    "is_expected_failure",
    "is_not_found",
    "is_token_error",
    "is_too_large",
    "status_name",
    "summarize_error",
    "to_backend_error",
]

_AUTH_CODES: Final = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED"})
_AUTH_DETAILS: Final = ("authentication failed", "user name is empty", "invalid auth token",
                        "permission denied", "auth: ")
#: Codes after which the member is presumed gone (failover moves on).
_CONNECTION_CODES: Final = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL"})
_MAX_DETAILS: Final = 200  # a message quotes at most this much of the server's details
#: gRPC's words for why a member was not reached, and ours (fixed texts: a registry that
#: keeps failing the same way keeps the same message).
_UNREACHED: Final = (
    ("connection refused", "connection refused"),
    ("dns resolution failed", "host name not found"),
    ("errors resolving", "host name not found"),
    ("handshake", "the TLS handshake failed"),
    ("ssl", "the TLS handshake failed"),
    ("deadline exceeded", "no answer in time"),
    ("failed to connect", "cannot connect"),
)


def status_name(error: BaseException) -> str | None:
    """The gRPC status code name of ``error`` itself (``"UNAVAILABLE"``), if it has one."""
    code_method = getattr(error, "code", None)
    if not callable(code_method):
        return None
    try:
        code = code_method()
    except Exception:  # noqa: BLE001 - a broken error object must not break the mapping
        return None
    name = getattr(code, "name", None)
    return name if isinstance(name, str) else None


def _details(error: BaseException) -> str:
    details_method = getattr(error, "details", None)
    if callable(details_method):
        try:
            return str(details_method() or "")
        except Exception:  # noqa: BLE001 - a broken error object must not break the mapping
            return ""
    return ""


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _statuses(error: BaseException) -> Iterator[tuple[str, str]]:
    for item in _chain(error):
        status = status_name(item)
        if status is not None:
            yield status, _details(item)


def summarize_error(error: BaseException) -> str:
    """A one-line description of a vendor error (status code and details, if gRPC)."""
    parts = []
    for item in _chain(error):
        status = status_name(item)
        text = f"{status}: {_details(item)}" if status is not None else \
            f"{type(item).__name__}: {item}"
        text = text.rstrip(": ")
        parts.append(text if len(text) <= _MAX_DETAILS else f"{text[:_MAX_DETAILS]}...")
    return " <- ".join(parts)


def is_auth_error(error: BaseException) -> bool:
    """Whether etcd refused our credentials, our token or the operation (permission)."""
    for item in _chain(error):
        if isinstance(item, PermissionDeniedError):
            return True
    for status, details in _statuses(error):
        if status in _AUTH_CODES:
            return True
        if status == "INVALID_ARGUMENT" and any(m in details.lower() for m in _AUTH_DETAILS):
            return True
    return False


def is_token_error(error: BaseException) -> bool:
    """Whether etcd rejected the auth token (expired, or lost in an etcd restart)."""
    return any(status == "UNAUTHENTICATED" or "invalid auth token" in details.lower()
               for status, details in _statuses(error))


def is_not_found(error: BaseException) -> bool:
    """Whether ``error`` is etcd's NOT_FOUND (e.g. revoking a lease that already expired)."""
    return any(status == "NOT_FOUND" for status, _ in _statuses(error))


def is_too_large(error: BaseException) -> bool:
    """Whether an answer was larger than the client accepts (gRPC ``RESOURCE_EXHAUSTED``).

    grpcio refuses messages over 4 MiB by default: a range read over large
    values fails this way, and reading fewer keys per request is the remedy.
    """
    return any(status == "RESOURCE_EXHAUSTED" for status, _ in _statuses(error))


def is_deadline_exceeded(error: BaseException) -> bool:
    """Whether a call ran out of time (gRPC ``DEADLINE_EXCEEDED``)."""
    return any(status == "DEADLINE_EXCEEDED" for status, _ in _statuses(error))


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` says the member could not be reached or did not answer in time."""
    return any(status in _CONNECTION_CODES for status, _ in _statuses(error))


def is_expected_failure(error: BaseException) -> bool:
    """Whether ``error`` is an expected registry failure (logged in one line) rather than
    a bug (logged with a traceback): a mapped :class:`~kitsd.core.errors.BackendError`, a
    gRPC or client-library error, an ``OSError``, or the clients' "failed node"."""
    if isinstance(error, BackendError | OSError):
        return True
    if type(error).__module__.split(".")[0] in {"pyetcd", "etcd3", "grpc"}:
        return True
    return status_name(error) is not None or (
        isinstance(error, ValueError) and "failed node" in str(error))


def compacted_revision(item: object) -> int | None:
    """The compaction revision if ``item`` says history was compacted, else ``None``.

    Recognises the clients' ``RevisionCompactedError``, a raw watch response with
    ``compact_revision`` set, and a read at a compacted revision (gRPC
    ``OUT_OF_RANGE`` "required revision has been compacted"; revision unknown: 0).
    """
    for cls in type(item).__mro__:
        if cls.__name__ == "RevisionCompactedError":
            revision = getattr(item, "compacted_revision", 0)
            return int(revision) if isinstance(revision, int) else 0
    if isinstance(item, BaseException):
        for status, details in _statuses(item):
            if status == "OUT_OF_RANGE" and "compacted" in details:
                return 0
        return None
    revision = getattr(item, "compact_revision", 0)
    if isinstance(revision, int) and revision > 0:
        return revision
    return None


def to_backend_error(error: BaseException, what: str) -> BackendError:
    """Map a vendor error to :mod:`kitsd.core.errors`; the caller raises it ``from error``.

    ``what`` names the operation and the registry (never credentials).  A
    :class:`~kitsd.core.errors.BackendError` is returned unchanged.
    """
    if isinstance(error, BackendError):
        return error
    if is_auth_error(error):
        return PermissionDeniedError(f"{what}: etcd refused the credentials or permission")
    if is_too_large(error):
        return RegistryUnavailableError(
            f"{what}: etcd's answer is larger than the client accepts (RESOURCE_EXHAUSTED)")
    return RegistryUnavailableError(f"{what}: etcd unavailable{_why_unreached(error)}")


def _why_unreached(error: BaseException) -> str:
    """`` (connection refused)`` and the like when gRPC says why, else ``""``."""
    for status, details in _statuses(error):
        text = details.lower()
        for words, why in _UNREACHED:
            if words in text:
                return f" ({why})"
        if status == "DEADLINE_EXCEEDED":
            return " (no answer in time)"
    return ""
