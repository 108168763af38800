"""The I/O-free part of an HTTP endpoint: settings, encoding, deadlines, statuses
(the attempt rules themselves are :mod:`sd.http._attempt`'s, shared with the transport).

Both endpoint kinds (:class:`sd.http.HTTPEndpoint`, :class:`sd.http.AsyncHTTPEndpoint`)
run the same steps around sending, all decided here without a clock or a socket:

1. :meth:`Spec.encode` turns the caller's request into httpx request arguments;
2. inside a retry attempt, :meth:`Spec.bound` caps each of httpx's timeout
   phases at the seconds left (``left``, computed by the driver);
3. a timeout httpx raises is classified by :meth:`Spec.deadline_error`: the
   deadline's own (a ``TimeoutError``) or the configured timeout's (re-raised);
4. :meth:`Spec.finish` hands an accepted response to ``decode`` or raises
   :class:`StatusError`;
5. httpx's connect errors (the request never reached the instance) leave the
   endpoint as :class:`ConnectError` / :class:`ConnectTimeout` (:func:`unreachable`):
   httpx's classes, carrying the :class:`kitsd.core.errors.ConnectionFailure` marker.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from kitsd.core.errors import MisuseError
from kitsd.sd.http._attempt import (
    UNREACHED,
    ConnectError,
    ConnectTimeout,
    StatusError,
    cap_timeouts,
    deadline_caused,
    phase_of,
    unreachable,
)

__all__ = [
    "UNREACHED",
    "AcceptStatus",
    "ConnectError",
    "ConnectTimeout",
    "Spec",
    "StatusError",
    "unreachable",
]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

#: Which non-2xx statuses ``decode`` accepts: a predicate, a container such as
#: ``{404}`` or ``range(400, 500)``, or ``None`` for none.
AcceptStatus = Callable[[int], bool] | Container[int] | None

_SCHEMES = ("http", "https")
# RFC 9110 token characters: what an HTTP method may be made of.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _accepts(accept_status: AcceptStatus) -> Callable[[int], bool]:
    if accept_status is None:
        return lambda _status: False
    if callable(accept_status):
        return accept_status
    if isinstance(accept_status, Container) and not isinstance(accept_status, str | bytes):
        container = accept_status
        return lambda status: status in container
    raise TypeError(
        "accept_status must be a callable, a container of status codes or None, "
        f"not {type(accept_status).__name__}"
    )


@dataclass(frozen=True, slots=True)
class Spec(Generic[RequestT, ResponseT]):
    """Validated settings shared by every endpoint of one factory, and the steps
    before and after sending.  Immutable; safe to share across threads and loops."""

    method: str
    path: str
    encode_request: Callable[[RequestT], Mapping[str, Any]]
    decode: Callable[[httpx.Response], ResponseT]
    accepts: Callable[[int], bool]
    scheme: str

    @classmethod
    def build(
        cls,
        method: object,
        path: object,
        encode: object,
        decode: object,
        accept_status: AcceptStatus,
        scheme: object,
    ) -> Spec[Any, Any]:
        """Check the arguments: ``TypeError`` for a wrong type,
        :class:`kitsd.core.errors.MisuseError` (a ``ValueError``) for a wrong value, each naming
        the argument."""
        if not isinstance(method, str):
            raise TypeError(f"method must be a str, not {type(method).__name__}")
        if not method.strip():
            raise MisuseError("method must not be empty")
        if not _TOKEN.match(method.strip()):
            raise MisuseError(f"method must be an HTTP token such as 'GET', got {method!r}")
        if not isinstance(path, str):
            raise TypeError(f"path must be a str, not {type(path).__name__}")
        if not path.startswith("/") or path.startswith("//"):
            # "//host/x" would be merged with base_url as "/x": refuse it outright.
            raise MisuseError(f"path must start with a single '/', got {path!r}")
        if not callable(encode):
            raise TypeError(f"encode must be callable, not {type(encode).__name__}")
        if not callable(decode):
            raise TypeError(f"decode must be callable, not {type(decode).__name__}")
        if not isinstance(scheme, str):
            raise TypeError(f"scheme must be a str, not {type(scheme).__name__}")
        if scheme not in _SCHEMES:
            raise MisuseError(f"scheme must be 'http' or 'https', got {scheme!r}")
        return cls(
            method=method.strip().upper(),
            path=path,
            encode_request=encode,
            decode=decode,
            accepts=_accepts(accept_status),
            scheme=scheme,
        )

    def encode(self, request: RequestT) -> dict[str, Any]:
        """httpx request arguments for ``request`` (a fresh dict the caller may change).

        Raises ``TypeError`` when ``encode`` returns something unusable.
        """
        encoded = self.encode_request(request)
        # A dict is the common answer: copy it without the (slow) ABC check.
        if type(encoded) is dict:
            kwargs = encoded.copy()
        elif isinstance(encoded, Mapping):
            kwargs = dict(encoded)
        else:
            raise TypeError(
                f"encode must return a mapping of httpx request arguments, "
                f"not {type(encoded).__name__}"
            )
        if "method" in kwargs or "url" in kwargs:
            reserved = "method" if "method" in kwargs else "url"
            raise TypeError(f"encode must not set {reserved!r}: the endpoint sets it")
        return kwargs

    def bound(self, kwargs: dict[str, Any], client_timeout: httpx.Timeout, left: float) -> (
        httpx.Timeout
    ):
        """Cap every timeout phase of the request in ``kwargs`` at ``left`` seconds.

        Returns the timeout that applied before capping (the client's, or the one
        ``encode`` gave), for :meth:`deadline_error`.
        """
        own = kwargs.get("timeout", httpx.USE_CLIENT_DEFAULT)
        configured = client_timeout if own is httpx.USE_CLIENT_DEFAULT else httpx.Timeout(own)
        kwargs["timeout"] = httpx.Timeout(**cap_timeouts(configured.as_dict(), left))
        return configured

    def no_time_left(self, instance: str) -> TimeoutError:
        """The error for a call made after the deadline: nothing is sent."""
        return TimeoutError(
            f"deadline passed before sending {self.method} {self.path} to {instance}"
        )

    def deadline_error(
        self,
        error: httpx.TimeoutException,
        configured: httpx.Timeout,
        left_at_start: float,
        left_now: float,
        instance: str,
    ) -> TimeoutError | None:
        """What to raise instead of an httpx timeout that the deadline caused, or
        ``None`` when the configured timeout caused it (then ``error`` stands).

        The deadline caused it when it had cut the phase's timeout short at the
        start (``left_at_start`` below the configured figure), or when the error
        came as the deadline passed (``left_now`` about zero: each socket wait is
        capped at the time left, so a body trickled byte by byte ends there).
        """
        phase, doing = phase_of(error)
        if not deadline_caused(getattr(configured, phase), left_at_start, left_now):
            return None
        return TimeoutError(
            f"deadline passed while {doing} {instance} ({self.method} {self.path})"
        )

    def finish(self, response: httpx.Response, instance: str) -> ResponseT:
        """Decode an accepted response; raise :class:`StatusError` for any other."""
        status = response.status_code
        if not (200 <= status < 300 or self.accepts(status)):
            raise StatusError(response, instance, self.method, self.path)
        return self.decode(response)
