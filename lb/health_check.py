"""Active health check settings: :class:`HttpCheck` (an HTTP path) and :class:`GrpcCheck`
(the gRPC health checking protocol, ``grpc.health.v1.Health/Check``).

Plain frozen settings, free of I/O; the probing is done by :class:`lb.HealthCheckers`
(one prober per instance, shared by every stack that watches the instance) and
the verdicts are kept by :class:`lb.health_checkers_policy.HealthTable`.

What a check *covers* decides what a passing check may undo (see
:mod:`lb.health_checkers_policy`): ejection by outlier detection happens for a cause,
``"connection"`` (the instance could not be reached) or ``"errors"`` (it
answered 5xx, timed out, raised a :class:`lb.CountedError`).  A check that
reaches the instance proves it reachable, so by default a passing check
un-ejects what connection failures ejected — and nothing else: a health route
that answers 200 says nothing about the 5xx the real routes return (the
bug reports envoy#24217, #28303, #32442 are about exactly this).  Say
``covers={"connection", "errors"}`` when your health route exercises what your
calls do.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kitsd.core import validate
from kitsd.core.errors import MisuseError, WrongTypeError, shown_value

__all__ = ["CAUSES", "CONNECTION", "ERRORS", "GrpcCheck", "HealthCheck", "HttpCheck"]

#: An ejection for connection-level failures (:class:`sd.ConnectionFailure`).
CONNECTION = "connection"
#: An ejection for counted errors (5xx, attempt timeouts, :class:`lb.CountedError`).
ERRORS = "errors"
#: Every cause an ejection can have.
CAUSES = frozenset({CONNECTION, ERRORS})

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """What every active check shares: timing, thresholds and coverage.

    * ``interval`` (seconds, default 5): time between two checks of one instance,
      each drawn within ``interval * (1 ± jitter)``; the first check of an instance
      comes after a random part of one interval, so a hundred instances added at
      once are not checked in step.
    * ``timeout`` (seconds, default 1, at most ``interval``): a check not answered
      by then failed.
    * ``jitter`` (a fraction in [0, 1), default 0.1).
    * ``healthy_threshold`` (default 1): passes in a row that bring a failing
      instance back (and that a passing check needs to un-eject).
    * ``unhealthy_threshold`` (default 2): failures in a row that take it out.
    * ``covers`` (default ``{"connection"}``): the ejection causes a passing check
      may undo (see the module docstring).

    Use :class:`HttpCheck` or :class:`GrpcCheck`.  Raises
    :class:`~kitsd.core.errors.WrongTypeError` / :class:`~kitsd.core.errors.MisuseError`
    naming a bad setting.
    """

    interval: float = 5.0
    timeout: float = 1.0
    jitter: float = 0.1
    healthy_threshold: int = 1
    unhealthy_threshold: int = 2
    covers: Collection[str] = frozenset({CONNECTION})

    def __post_init__(self) -> None:
        interval = validate.seconds("interval", self.interval)
        validate.seconds("timeout", self.timeout, maximum=interval)
        validate.number("jitter", self.jitter, minimum=0.0, below=1.0)
        validate.integer("healthy_threshold", self.healthy_threshold, minimum=1)
        validate.integer("unhealthy_threshold", self.unhealthy_threshold, minimum=1)
        covers = self.covers
        if isinstance(covers, str) or not isinstance(covers, Collection):
            raise WrongTypeError(f"covers must be a set of {sorted(CAUSES)}, "
                                 f"not {shown_value(covers)}")
        unknown = [cause for cause in covers if cause not in CAUSES]
        if unknown:
            raise MisuseError(f"covers must name causes among {sorted(CAUSES)}, "
                              f"not {shown_value(unknown[0])}")
        if not isinstance(covers, frozenset):
            object.__setattr__(self, "covers", frozenset(covers))

    def first_delay(self, draw: float) -> float:
        """Seconds before an instance's first check, for a uniform ``draw`` in [0, 1)."""
        return self.interval * draw

    def next_delay(self, draw: float) -> float:
        """Seconds between two checks, for a uniform ``draw`` in [0, 1):
        ``interval * (1 ± jitter)``."""
        return self.interval * (1.0 + self.jitter * (2.0 * draw - 1.0))

    @property
    def key(self) -> tuple[object, ...]:
        """What makes two checks the same probe, so that one prober serves both: what
        is sent and when (not ``covers``, which only the stacks that read the
        verdicts act on)."""
        return (type(self).__name__, self.interval, self.timeout, self.jitter,
                self.healthy_threshold, self.unhealthy_threshold)


def _check_server_name(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value or len(value) > 253 or any(
            char.isspace() or ord(char) < 0x21 or char in "/:@" for char in value):
        raise WrongTypeError(f"server_name must be a host name (a str) or None, "
                             f"not {shown_value(value)}")


@dataclass(frozen=True, slots=True)
class HttpCheck(HealthCheck):
    """An HTTP check: ``GET {scheme}://{instance}{path}`` passes on a status in
    ``statuses`` (default 200-299) within ``timeout``.

    ``headers`` are sent with each check (kept out of ``repr``: they may carry a
    token).  ``scheme`` is ``"http"`` or ``"https"``.  ``server_name`` (https):
    the name sent for SNI and that the certificate must carry (default: the
    instance's host, an address); :class:`kitsd.Transport` sets it to its own
    ``server_name`` (the service name by default).  Certificates are verified as
    the :class:`lb.HealthCheckers`' HTTP transport says (its ``transport=``: a
    transport's checks go through its inner transport, with its ``verify`` and
    client certificate).  Connections are pooled per instance address (httpx's
    pool): checks of one instance under different ``server_name``s through one
    transport may share a connection verified for the first.  See
    :class:`HealthCheck` for the rest.
    """

    path: str = "/health"
    scheme: str = "http"
    statuses: Collection[int] = frozenset(range(200, 300))
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        HealthCheck.__post_init__(self)
        _check_server_name(self.server_name)
        if not isinstance(self.path, str) or not self.path.startswith("/") or any(
                char in self.path for char in "\r\n #"):
            raise MisuseError(f"path must be an absolute URL path such as '/health', "
                              f"not {shown_value(self.path)}")
        if self.scheme not in ("http", "https"):
            raise MisuseError(f"scheme must be 'http' or 'https', not {shown_value(self.scheme)}")
        statuses = self.statuses
        if isinstance(statuses, str) or not isinstance(statuses, Collection) or not statuses:
            raise WrongTypeError(f"statuses must be a non-empty set of HTTP statuses, "
                                 f"not {shown_value(statuses)}")
        for status in statuses:
            validate.integer("statuses", status, minimum=100, maximum=599)
        if not isinstance(statuses, frozenset):
            object.__setattr__(self, "statuses", frozenset(statuses))
        if not isinstance(self.headers, Mapping) or not all(
                isinstance(name, str) and isinstance(value, str)
                for name, value in self.headers.items()):
            raise WrongTypeError("headers must be a mapping of strings to strings")
        if not isinstance(self.headers, MappingProxyType):
            object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    @property
    def key(self) -> tuple[object, ...]:
        return (*HealthCheck.key.fget(self), self.scheme, self.path,  # type: ignore[attr-defined]
                tuple(sorted(self.statuses)), tuple(sorted(self.headers.items())),
                self.server_name)

    def __hash__(self) -> int:  # the headers' mapping is not hashable itself
        return hash(self.key)

    def __repr__(self) -> str:
        return _repr(self, HttpCheck)


@dataclass(frozen=True, slots=True)
class GrpcCheck(HealthCheck):
    """A gRPC check: ``grpc.health.v1.Health/Check`` for ``service`` (``""``: the
    server as a whole) passes when the answer is ``SERVING`` within ``timeout``.
    Needs grpcio (``pip install 'kitsd[grpc]'``); the server needs the standard
    health service (``grpcio-health-checking`` in Python, built into most
    others).  A server without it (``UNIMPLEMENTED``) fails the check.

    ``credentials`` (a ``grpc.ChannelCredentials``, e.g. ``grpc.ssl_channel_credentials(
    root_certificates, private_key, certificate_chain)``; default ``None``: no TLS)
    and ``server_name`` (the name the server's certificate must carry, default the
    instance's host; :class:`kitsd.Transport` sets it to its ``server_name``) —
    the same credentials your ``sd.grpc.factory(credentials=...)`` channels use.
    See :class:`HealthCheck` for the rest."""

    service: str = ""
    credentials: Any = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        HealthCheck.__post_init__(self)
        if not isinstance(self.service, str):
            raise WrongTypeError(f"service must be a gRPC service name (a str), "
                                 f"not {shown_value(self.service)}")
        if self.credentials is not None:
            import grpc  # there are credentials: grpcio made them

            if not isinstance(self.credentials, grpc.ChannelCredentials):
                raise WrongTypeError(f"credentials must be a grpc.ChannelCredentials or None, "
                                     f"not {type(self.credentials).__name__}")
        _check_server_name(self.server_name)

    @property
    def key(self) -> tuple[object, ...]:
        return (*HealthCheck.key.fget(self), self.service,  # type: ignore[attr-defined]
                self.credentials, self.server_name)

    def __hash__(self) -> int:  # credentials hash by identity
        return hash(self.key)

    def __repr__(self) -> str:
        return _repr(self, GrpcCheck)


def _repr(check: HealthCheck, kind: type[HealthCheck]) -> str:
    """``HttpCheck(path='/ready', interval=2.0)``: the settings that differ from the
    defaults; of the headers only their names (values may be secrets)."""
    default = kind()
    shown = []
    for name in kind.__dataclass_fields__:
        value = getattr(check, name)
        if value == getattr(default, name):
            continue
        if name == "credentials":
            shown.append("credentials=...")  # a grpc object: what it holds is not shown
            continue
        if name == "headers" or isinstance(value, frozenset):
            value = sorted(value)
        shown.append(f"{name}={value!r}")
    return f"{kind.__name__}({', '.join(shown)})"
