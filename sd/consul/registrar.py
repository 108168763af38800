"""``ConsulRegistrar``: one service instance registered with the local Consul agent.

Theory of operation
-------------------
``register()`` puts the service on the agent (``PUT /v1/agent/service/register``)
with, unless ``ttl`` is ``None``, one TTL check (id ``service:<service_id>``)
that starts *passing* and ``DeregisterCriticalServiceAfter``; the agent syncs
it to the catalog.  A heartbeat thread then marks the check passing
(``PUT /v1/agent/check/pass/<check id>``) every ``ttl / 3`` seconds, so one
lost heartbeat never turns the instance critical.  If this process dies, the
heartbeats stop: the check goes critical after ``ttl`` (the instance leaves
every ``passing_only`` instancer) and the agent removes the service once it
has been critical for ``deregister_critical_after`` (Consul enforces at least
one minute and reaps every 30 seconds, so expect 60-90 s).

When a heartbeat finds that the agent no longer knows the check (404
"Unknown check ID", or a check without a TTL: an agent restarted without its
state, or someone deregistered us), the registrar registers again.  A
heartbeat that cannot reach the agent is retried with backoff (10 ms doubling,
at most ``ttl / 3``) and logged.

``deregister()`` first stops the heartbeat (cancelling its request in flight,
so it can never re-register behind our back), then removes the service.  The
heartbeat is a coroutine on a private event loop in its own thread
(:class:`sd._loop_thread.LoopThread`), talking through a private httpx client
with your client's settings (:func:`sd.consul.client.private_client`);
``register``/``deregister`` use the client you passed.  The ACL token travels
inside the client and is never logged nor part of a ``repr``.

``ttl`` is at least :data:`MIN_TTL` (1 s): a heartbeat every ``ttl / 3``
seconds below that would load the agent for nothing (``ttl=0.001`` meant 674
heartbeats per second).

With ``http=URL`` the agent itself also probes the instance: an HTTP check (id
``service:<service_id>:http``) that GETs ``URL`` every ``http_interval`` seconds
and turns critical on anything but a 2xx (429: warning), so an instance that
stops answering -- or answers 503 from a draining health route
(:mod:`kitsd.serve`) -- leaves every ``passing_only`` instancer without any help
from this process.  It starts passing (register once the instance is ready, as
:mod:`kitsd.serve` does); both checks may be given, or either alone.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import consul

from kitsd.core import validate
from kitsd.core.errors import InvalidInstanceError, MisuseError, shown_value
from kitsd.sd._loop_thread import LoopThread
from kitsd.sd.backoff import CONSUL_HEARTBEAT, Backoff
from kitsd.sd.consul.client import (
    ConsulClient,
    agent_address,
    go_duration,
    map_error,
    maybe_await,
    private_client,
    tags_tuple,
)
from kitsd.sd.instance import join_host_port, split_instance
from kitsd.sd.registrar import RegistrarContext
from kitsd.sd.transient import retry_transient

__all__ = ["MIN_HTTP_INTERVAL", "MIN_TTL", "ConsulRegistrar"]

logger = logging.getLogger(__name__)

MIN_TTL = 1.0
"""The shortest ``ttl`` (seconds) a :class:`ConsulRegistrar` accepts."""

MIN_HTTP_INTERVAL = 1.0
"""The shortest ``http_interval`` (seconds): Consul runs no check more often."""


def _http_url(url: object) -> str | None:
    """``url`` checked as an ``http``/``https`` URL with a host; raises naming it
    (without any user information, which may hold a password)."""
    if url is None:
        return None
    if not isinstance(url, str):
        raise TypeError(f"http must be an http(s) URL string or None, not {type(url).__name__}")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise MisuseError("http must be an http(s) URL with a host and a valid port") from error
    if parts.username is not None or parts.password is not None:
        # it would be stored in the agent's check definition, readable through its API
        raise MisuseError("http must not carry user information (user:password@); Consul "
                          "would store and show it")
    if parts.scheme not in {"http", "https"} or not parts.hostname or port == 0 \
            or any(ord(char) < 0x21 for char in url):
        raise MisuseError(f"http must be an http(s) URL with a host, not {shown_value(url)}")
    return url


def _seconds(name: str, value: object, minimum: float) -> float | None:
    """``value`` checked: ``None``, or a finite number of seconds >= ``minimum`` (> 0)."""
    return validate.optional_seconds(name, value, minimum=minimum if minimum > 0 else None)


_META_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _meta(meta: object) -> dict[str, str]:
    """``meta`` checked against Consul's rules for ``Service.Meta``; raises naming it."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping of strings to strings, not {type(meta).__name__}")
    checked: dict[str, str] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"meta must map strings to strings, not {type(key).__name__} -> "
                            f"{type(value).__name__} ({shown_value(key)})")
        if not _META_KEY.fullmatch(key) or key.lower().startswith("consul-"):
            raise MisuseError(f"meta key {shown_value(key)} is not one Consul accepts (letters,"
                              " digits, _ and -, at most 128, not starting with consul-)")
        if len(value) > 512:
            raise MisuseError(f"meta value of {key!r} is {len(value)} characters long; Consul "
                              "accepts at most 512")
        checked[key] = value
    if len(checked) > 64:
        raise MisuseError(f"meta has {len(checked)} pairs; Consul accepts at most 64")
    return checked


def _weight_arg(name: str, value: object, minimum: int) -> int | None:
    return validate.optional_integer(name, value, minimum=minimum)


def _agent_forgot(answer: object, error: BaseException | None) -> bool:
    """Whether a TTL-pass outcome means the agent no longer has our check."""
    if error is None:
        return answer is False  # py-consul answers False for a 404
    if isinstance(error, consul.NotFound):
        return True
    text = str(error)
    return isinstance(error, consul.ConsulException) and (
        "does not have associated TTL" in text or "Unknown check" in text
    )


class _Heartbeat:
    """Keeps one TTL check passing, re-registering when the agent forgot it."""

    def __init__(self, registrar: ConsulRegistrar, interval: float) -> None:
        self._registrar = registrar
        self._interval = interval
        self._thread = LoopThread(f"kitsd-consul-ttl-{registrar.service_id}", self._run)
        self._thread.start()

    def stop(self) -> None:
        """Cancel the request in flight (or the sleep) and join the thread."""
        self._thread.stop()

    async def _run(self) -> None:
        registrar = self._registrar
        client, settings = private_client(registrar.client)
        backoff = Backoff(curve=CONSUL_HEARTBEAT.capped(self._interval))
        delay = self._interval
        try:
            while True:
                await asyncio.sleep(delay)
                failure = await self._beat(client)
                if failure is None:
                    backoff.reset()
                    delay = self._interval
                    continue
                delay = backoff.next_delay()
                logger.warning("%s; retrying in %.2fs", map_error(
                    failure, doing=f"keeping {registrar.check_id} passing",
                    agent=registrar.agent), delay)
        finally:
            if settings is not None:
                await client.aclose()

    async def _beat(self, client: Any) -> BaseException | None:
        """One heartbeat (and a new registration if the agent forgot us); the failure."""
        registrar = self._registrar
        answer: object = None
        try:
            answer = await maybe_await(client.agent.check.ttl_pass(registrar.check_id))
        except Exception as error:  # noqa: BLE001 - classified just below
            failure: BaseException | None = error
        else:
            failure = None
        if not _agent_forgot(answer, failure):
            return failure
        logger.warning("Consul agent %s no longer knows %s (restarted without its state?); "
                       "registering it again", registrar.agent, registrar.check_id)
        try:
            await maybe_await(client.agent.service.register(**registrar.registration()))
        except Exception as error:  # noqa: BLE001 - logged, retried with backoff
            return error
        return None


class ConsulRegistrar(RegistrarContext):
    """Registers ``address:port`` as an instance of ``service`` with the local agent.

    Implements :class:`sd.Registrar`: ``register()`` and ``deregister()`` are
    idempotent; as a context manager it registers on enter and deregisters on
    exit.  ``service_id`` defaults to ``"<service>-<address>-<port>"``.
    ``ttl`` (seconds): a TTL check kept passing in the background (see the
    module docstring); ``None`` registers without a check.
    ``deregister_critical_after`` (seconds, ``None`` for never): the agent drops
    the service once its check has been critical that long (Consul's minimum
    is one minute).
    ``http`` (an ``http(s)`` URL, e.g. the instance's ``/healthz``): an HTTP
    check the agent runs every ``http_interval`` seconds (at least
    :data:`MIN_HTTP_INTERVAL`), each probe bounded by ``http_timeout`` seconds
    (``None``: Consul's default, 10 s); beside the TTL check or, with ``ttl=None``,
    alone.

    Metadata, read back by :class:`~sd.consul.ConsulInstancer` as each instance's
    :class:`~sd.InstanceInfo`: ``tags`` (``Service.Tags``), ``meta`` (``Service.Meta``:
    at most 64 string pairs, keys of letters, digits, ``_`` and ``-`` up to 128
    characters not starting with ``consul-``, values up to 512 characters, as Consul
    requires), ``weight`` (``Weights.Passing``, an int >= 1) and ``warning_weight``
    (``Weights.Warning``, an int >= 0, used while a check is warning); an unset
    weight is Consul's default, 1.

    Raises ``ValueError`` (:class:`kitsd.core.errors.MisuseError`) naming the value for
    an empty service, a bad address, a port outside 1-65535, a ``ttl`` below
    :data:`MIN_TTL` or not finite, a non-positive ``deregister_critical_after``,
    ``meta`` Consul would refuse, a ``weight`` below 1 or a ``warning_weight`` below
    0, an ``http`` that is not an ``http(s)`` URL with a host, an ``http_interval``
    below :data:`MIN_HTTP_INTERVAL` or a non-positive ``http_timeout``;
    ``TypeError`` for a value of the wrong type (``meta`` not a mapping of strings,
    a weight that is not an int).
    ``register()`` and ``deregister()`` raise :class:`kitsd.core.errors.RegistryUnavailableError`
    or :class:`kitsd.core.errors.PermissionDeniedError` (chained from the py-consul error)
    when the agent refuses, or is still unreachable after ``retry_for`` seconds of
    retrying with backoff (``0``: try once); a failed ``deregister()`` still
    stops the heartbeat, so the agent drops the instance after ``ttl``.
    Thread-safe.
    """

    def __init__(
        self,
        client: ConsulClient,
        service: str,
        address: str,
        port: int,
        *,
        service_id: str | None = None,
        tags: Sequence[str] = (),
        ttl: float | None = 10.0,
        deregister_critical_after: float | None = 60.0,
        retry_for: float = 10.0,
        meta: Mapping[str, str] | None = None,
        weight: int | None = None,
        warning_weight: int | None = None,
        http: str | None = None,
        http_interval: float = 2.0,
        http_timeout: float | None = None,
    ) -> None:
        self.retry_for = validate.seconds("retry_for", retry_for, zero=True)
        if not isinstance(service, str) or not service.strip() or "/" in service:
            raise ValueError(f"service must be a non-empty Consul service name, not {service!r}")
        validate.integer("port", port, minimum=1, maximum=65535)
        if not isinstance(address, str) or not address.strip():
            raise ValueError(f"address must be a host name or IP address, not {address!r}")
        try:
            host, _ = split_instance(join_host_port(address, port))
        except InvalidInstanceError as error:
            raise ValueError(f"address {address!r} is not usable: {error.reason}") from error
        if service_id is not None and (not isinstance(service_id, str) or not service_id.strip()
                                       or "/" in service_id):
            raise ValueError(f"service_id must be a non-empty string without '/', "
                             f"not {service_id!r}")
        self.client = client
        self.service = service
        self.address = host
        self.port = port
        self.instance = join_host_port(host, port)
        self.service_id = service_id or f"{service}-{host}-{port}"
        self.check_id = f"service:{self.service_id}"
        self.tags = tags_tuple(tags)
        self.meta: dict[str, str] = _meta(meta)
        self.weight = _weight_arg("weight", weight, 1)
        self.warning_weight = _weight_arg("warning_weight", warning_weight, 0)
        self.ttl = _seconds("ttl", ttl, MIN_TTL)
        self.deregister_critical_after = _seconds(
            "deregister_critical_after", deregister_critical_after, 0.0
        )
        self.http = _http_url(http)
        self.http_interval = _seconds("http_interval", http_interval, MIN_HTTP_INTERVAL)
        if self.http_interval is None:
            raise TypeError("http_interval must be a number of seconds, not None")
        self.http_timeout = _seconds("http_timeout", http_timeout, 0.0)
        self.http_check_id = f"{self.check_id}:http"
        self.agent = agent_address(client)
        self._lock = threading.Lock()
        self._registered = False
        self._heartbeat: _Heartbeat | None = None

    @property
    def registered(self) -> bool:
        """Whether ``register()`` succeeded and ``deregister()`` was not called since."""
        return self._registered

    def _http_check(self) -> dict[str, object] | None:
        if self.http is None:
            return None
        assert self.http_interval is not None  # noqa: S101 - checked in __init__
        check: dict[str, object] = {
            "CheckID": self.http_check_id, "Name": f"kitsd HTTP check of {self.service_id}",
            "HTTP": self.http, "Interval": go_duration(self.http_interval),
            "Status": "passing"}
        if self.http_timeout is not None:
            check["Timeout"] = go_duration(self.http_timeout)
        if self.deregister_critical_after is not None:
            check["DeregisterCriticalServiceAfter"] = go_duration(self.deregister_critical_after)
        return check

    def _check(self) -> dict[str, object] | None:
        if self.ttl is None:
            return None
        check: dict[str, object] = dict(consul.Check.ttl(go_duration(self.ttl)))
        check["CheckID"] = self.check_id
        check["Name"] = f"kitsd TTL of {self.service_id}"
        check["Status"] = "passing"
        if self.deregister_critical_after is not None:
            check["DeregisterCriticalServiceAfter"] = go_duration(self.deregister_critical_after)
        return check

    def registration(self) -> dict[str, Any]:
        """The keyword arguments of py-consul's ``agent.service.register`` for this instance
        (``meta`` and ``weights`` only when given)."""
        registration: dict[str, Any] = {
            "name": self.service, "service_id": self.service_id, "address": self.address,
            "port": self.port, "tags": list(self.tags) or None, "check": self._check()}
        http_check = self._http_check()
        if http_check is not None:
            if registration["check"] is None:
                registration["check"] = http_check
            else:
                registration["extra_checks"] = [http_check]
        if self.meta:
            registration["meta"] = dict(self.meta)
        if self.weight is not None or self.warning_weight is not None:
            # Consul's defaults for the one not given: 1 each
            registration["weights"] = {
                "Passing": 1 if self.weight is None else self.weight,
                "Warning": 1 if self.warning_weight is None else self.warning_weight}
        return registration

    def put(self) -> None:
        """Send the registration through :attr:`client`; raises the py-consul error as it is."""
        self.client.agent.service.register(**self.registration())

    def register(self) -> None:
        """Register with the agent and start the heartbeat; a no-op if registered."""
        with self._lock:
            if self._registered:
                return
            retry_transient(self._mapped(self.put, "registering"), within=self.retry_for,
                            what=f"registering {self.service_id!r} with {self.agent}")
            self._registered = True
            if self.ttl is not None:
                self._heartbeat = _Heartbeat(self, self.ttl / 3)
            logger.info("registered %s as %s with Consul agent %s", self.instance,
                        self.service_id, self.agent)

    def deregister(self) -> None:
        """Stop the heartbeat and remove the service from the agent; a no-op if not registered."""
        with self._lock:
            if not self._registered:
                return
            self._registered = False
            heartbeat, self._heartbeat = self._heartbeat, None
            if heartbeat is not None:
                heartbeat.stop()
            retry_transient(
                self._mapped(lambda: self.client.agent.service.deregister(self.service_id),
                             "deregistering"),
                within=self.retry_for,
                what=f"deregistering {self.service_id!r} from {self.agent}",
            )
            logger.info("deregistered %s from Consul agent %s", self.service_id, self.agent)

    def _mapped(self, call: Callable[[], object], doing: str) -> Callable[[], None]:
        """``call`` with py-consul's errors mapped into :mod:`kitsd.core.errors`."""

        def mapped() -> None:
            try:
                call()
            except Exception as error:
                raise map_error(error, doing=f"{doing} {self.service_id!r}",
                                agent=self.agent) from error

        return mapped

    def __repr__(self) -> str:
        return (f"ConsulRegistrar({self.service!r}, {self.instance!r}, "
                f"service_id={self.service_id!r}, agent={self.agent!r})")
