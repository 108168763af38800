"""What both HTTP endpoint kinds share: the settings of one factory (:class:`_Shared`)
and the endpoint's constructor, instance, repr and lifecycle bookkeeping
(:class:`_Endpoint`).  The endpoints themselves are ``_async/endpoint.py`` and its
generated sync twin."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, Self, TypeVar

import httpx

from kitsd.sd.http._clients import ClientSettings
from kitsd.sd.http._spec import AcceptStatus, Spec
from kitsd.sd.instance import normalize_instance

__all__ = ["RequestT", "ResponseT", "_Endpoint", "_Shared"]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class _Shared:
    """What every endpoint of one factory shares: the spec and the client settings."""

    __slots__ = ("settings", "spec")

    def __init__(self, spec: Spec[Any, Any], settings: ClientSettings) -> None:
        self.spec = spec
        self.settings = settings

    @classmethod
    def build(
        cls,
        method: object,
        path: object,
        encode: object,
        decode: object,
        client_kwargs: Mapping[str, Any] | None,
        accept_status: AcceptStatus,
        scheme: object,
        *,
        asynchronous: bool,
    ) -> _Shared:
        spec = Spec.build(method, path, encode, decode, accept_status, scheme)
        return cls(spec, ClientSettings(spec.scheme, client_kwargs, asynchronous=asynchronous))


class _Endpoint(Generic[RequestT, ResponseT]):
    """What both endpoint kinds share: the constructor, the instance and its URL,
    the repr, and the lifecycle bookkeeping.  Each subclass adds its client,
    ``__call__`` and closing (``close`` or ``aclose``, never both).

    Lifecycle, decided under ``_lock`` (no I/O under it): a call enters (making
    the client if there is none, refused once closed) and leaves; ``close``
    marks the endpoint closed and closes the client at once if no call is in
    flight, else the last call to leave closes it.  So a connection a call is
    still opening can never outlive the close (httpcore's pool, closed while a
    connection is being opened, loses track of that connection), and closing
    never waits for a call.
    """

    __slots__ = (
        "__weakref__", "_base_url", "_closed", "_inflight", "_instance", "_lock", "_shared",
        "_spec", "_url",
    )
    _async_clients = False  # whether the subclass makes httpx.AsyncClient
    _spec: Spec[RequestT, ResponseT]
    # The absolute URL of every call, parsed once, by the first call (with the client):
    # httpx then skips joining a path to base_url and parsing the result on each request.
    _url: httpx.URL

    def __init__(
        self,
        instance: str,
        method: str,
        path: str,
        *,
        encode: Callable[[RequestT], Mapping[str, Any]],
        decode: Callable[[httpx.Response], ResponseT],
        client_kwargs: Mapping[str, Any] | None = None,
        accept_status: AcceptStatus = None,
        scheme: str = "http",
    ) -> None:
        shared = _Shared.build(
            method, path, encode, decode, client_kwargs, accept_status, scheme,
            asynchronous=self._async_clients,
        )
        self._setup(instance, shared)

    @classmethod
    def _from_shared(cls, instance: str, shared: _Shared) -> Self:
        endpoint = cls.__new__(cls)
        endpoint._setup(instance, shared)
        return endpoint

    def _setup(self, instance: str, shared: _Shared) -> None:
        """Set the endpoint up (no I/O, no client yet); subclasses extend it."""
        self._instance = normalize_instance(instance)
        self._shared = shared
        self._spec = shared.spec
        self._base_url = f"{shared.spec.scheme}://{self._instance}"
        self._lock = threading.Lock()
        self._closed = False
        self._inflight = 0

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def _left_last(self) -> bool:
        """Count a call out; whether it was the last one in flight of a closed endpoint."""
        with self._lock:
            self._inflight -= 1
            return self._closed and self._inflight == 0

    def _close_now(self) -> bool:
        """Mark closed; whether the caller must close the client now (no call in flight).

        ``False`` on a second close: closing is idempotent.
        """
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            return self._inflight == 0

    @property
    def instance(self) -> str:
        """The normalised ``host:port`` this endpoint calls."""
        return self._instance

    @property
    def base_url(self) -> str:
        """``scheme://instance``."""
        return self._base_url

    def __repr__(self) -> str:
        spec = self._spec
        return f"<{type(self).__name__} {spec.method} {self._base_url}{spec.path}>"
