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

``deregister()`` first stops the heartbeat thread (interrupting its request in
flight, so it can never re-register behind our back), then removes the service.
The heartbeat talks through a private copy of the client
(:func:`sd.consul.client.private_copy`); ``register``/``deregister`` use the
client you passed.  The ACL token travels inside the client and is never
logged nor part of a ``repr``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence

import consul

from sd.backoff import CONSUL_HEARTBEAT, Backoff
from sd.consul.client import (
    ConsulClient,
    agent_address,
    go_duration,
    map_error,
    private_copy,
    tags_tuple,
)
from sd.errors import InvalidInstanceError
from sd.instance import join_host_port, split_instance
from sd.registrar import RegistrarContext
from sd.transient import retry_transient

__all__ = ["ConsulRegistrar"]

logger = logging.getLogger(f"kitsd.{__name__}")

_JOIN_TIMEOUT = 5.0


def _positive_seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, not {value!r}")
    return float(value)


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
    """The thread keeping one TTL check passing, re-registering when the agent forgot it."""

    def __init__(self, registrar: ConsulRegistrar, interval: float) -> None:
        self._registrar = registrar
        self._interval = interval
        self._client, self._interruptible = private_copy(registrar.client)
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"kitsd-consul-ttl-{registrar.service_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._interruptible is not None:
            self._interruptible.close()
        if self._thread is threading.current_thread():
            return
        self._thread.join(_JOIN_TIMEOUT)
        if self._thread.is_alive():
            logger.warning("consul heartbeat of %r did not stop within %.0fs",
                           self._registrar.service_id, _JOIN_TIMEOUT)

    def _run(self) -> None:
        registrar = self._registrar
        backoff = Backoff(curve=CONSUL_HEARTBEAT.capped(self._interval))
        delay = self._interval
        while not self._stopping.wait(delay):
            answer: object = None
            failure: BaseException | None = None
            try:
                answer = self._client.agent.check.ttl_pass(registrar.check_id)
            except Exception as error:  # noqa: BLE001 - classified just below
                failure = error
            if self._stopping.is_set():
                return
            if _agent_forgot(answer, failure):
                logger.warning("Consul agent %s no longer knows %s (restarted without its "
                               "state?); registering it again", registrar.agent,
                               registrar.check_id)
                try:
                    registrar.put(self._client)
                except Exception as error:  # noqa: BLE001 - logged, retried with backoff
                    failure = error
                else:
                    failure = None
            if failure is not None:
                if self._stopping.is_set():
                    return
                delay = backoff.next_delay()
                logger.warning("%s; retrying in %.2fs", map_error(
                    failure, doing=f"keeping {registrar.check_id} passing",
                    agent=registrar.agent), delay)
                continue
            backoff.reset()
            delay = self._interval


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

    Raises ``ValueError`` naming the value for an empty service, a bad address,
    a port outside 1-65535, or a non-positive ``ttl``/``deregister_critical_after``.
    ``register()`` and ``deregister()`` raise :class:`sd.errors.RegistryUnavailableError`
    or :class:`sd.errors.PermissionDeniedError` (chained from the py-consul error)
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
    ) -> None:
        if isinstance(retry_for, bool) or not isinstance(retry_for, int | float) \
                or not retry_for >= 0:
            raise ValueError(f"retry_for must be >= 0 seconds, not {retry_for!r}")
        self.retry_for = float(retry_for)
        if not isinstance(service, str) or not service.strip() or "/" in service:
            raise ValueError(f"service must be a non-empty Consul service name, not {service!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"port must be an integer in 1-65535, not {port!r}")
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
        self.ttl = _positive_seconds("ttl", ttl)
        self.deregister_critical_after = _positive_seconds(
            "deregister_critical_after", deregister_critical_after
        )
        self.agent = agent_address(client)
        self._lock = threading.Lock()
        self._registered = False
        self._heartbeat: _Heartbeat | None = None

    @property
    def registered(self) -> bool:
        """Whether ``register()`` succeeded and ``deregister()`` was not called since."""
        return self._registered

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

    def put(self, client: ConsulClient | None = None) -> None:
        """Send the registration through ``client`` (default: :attr:`client`).

        Used by ``register()`` and by the heartbeat after an agent restart; raises
        the py-consul error as it is.
        """
        (client or self.client).agent.service.register(
            self.service,
            service_id=self.service_id,
            address=self.address,
            port=self.port,
            tags=list(self.tags) or None,
            check=self._check(),
        )

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
        """``call`` with py-consul's errors mapped into :mod:`sd.errors`."""

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
