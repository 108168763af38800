"""Where a transport finds each service's instances: :func:`discovery`.

A transport's ``discover`` argument becomes one :class:`Discovery`, built and
checked when the transport is built (a bad template, an unknown scheme or a
driver whose extra is missing fails then, not at the first request):

* an ``sd.MemoryRegistry``: its instancers;
* a callable ``service -> Instancer``: called once per service;
* ``static://h1:p1,h2:p2``: the same fixed instances for every service name
  (with ``{service}`` in it, say ``static://{service}.internal:8080``, the name
  substituted);
* ``etcd[s]://``, ``consul[s]://``, ``zk://`` templates: **one registry client per
  registry address**, shared by every service's watch and closed when the last
  of them stops (a client per service made each new request host cost a
  client, its threads, a session or HTTP connections);
* any other scheme ``sd.instancer_from_url`` knows (``dnssrv://``, ``k8s://``):
  the URL with the service substituted.

A template must name the service (``{service}``), except a static one.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import urllib.parse
from collections.abc import Callable, Hashable
from types import TracebackType
from typing import Any, ClassVar, Self

from kitsd.core.errors import MisuseError, shown_value
from kitsd.sd.instancer import Callback, FixedInstancer, Instancer
from kitsd.sd.memory import MemoryRegistry
from kitsd.sd.url import instancer_from_url, redact_url

__all__ = ["Discovery", "discovery"]

_PLACEHOLDER = "{service}"
# A service name that stands in for {service} while a template is checked.
_PROBE = "kitsd-probe"
# scheme -> (the extra to install, the modules any one of which the driver needs)
_DRIVERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "etcd": ("etcd", ("pyetcd", "etcd3")),
    "etcds": ("etcd", ("pyetcd", "etcd3")),
    "consul": ("consul", ("consul",)),
    "consuls": ("consul", ("consul",)),
    "zk": ("zk", ("kazoo",)),
    "dnssrv": ("dns", ("dns",)),
    "k8s": ("k8s", ()),  # httpx only; PyYAML just for a kubeconfig, checked by the driver
}
_SCHEMES = ("static", *_DRIVERS)


class Discovery:
    """Instancers for services, one at a time: ``instancer(service)`` (the caller
    stops it), ``close()`` when the transport closes.  ``registry`` describes
    where instances come from, fit for an error message (redacted)."""

    registry = "the registry"
    blocking = False  # whether instancer() may block (connect, wait for an answer)
    # whether the watches instancer() starts are the transport's own, to be labelled by
    # it in observations (an sd.MemoryRegistry's are shared with its other users, and
    # publish only names the code registered)
    labelled = True

    def instancer(self, service: str) -> Instancer:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the discovery holds itself (the instancers hold the rest)."""


class _Memory(Discovery):
    registry = "the sd.MemoryRegistry"
    labelled = False

    def __init__(self, registry: MemoryRegistry) -> None:
        self._registry = registry

    def instancer(self, service: str) -> Instancer:
        return self._registry.instancer(service)


class _Callable(Discovery):
    def __init__(self, function: Callable[[str], Instancer]) -> None:
        self._function = function
        self.registry = f"discover={getattr(function, '__qualname__', type(function).__name__)}"

    def instancer(self, service: str) -> Instancer:
        return self._function(service)


class _Static(Discovery):

    def __init__(self, template: str) -> None:
        self._template = template
        self.registry = redact_url(template)
        self.instancer(_PROBE).stop()  # a bad instance list fails now

    def instancer(self, service: str) -> Instancer:
        body = self._template.split("://", 1)[1].replace(_PLACEHOLDER, service)
        items = [item.strip() for item in body.split(",") if item.strip()]
        if not items:
            raise MisuseError(f"static template names no instances: {self.registry}")
        return FixedInstancer(items)


class _ByURL(Discovery):
    """Any ``instancer_from_url`` scheme: the URL with the service substituted."""

    blocking = True

    def __init__(self, template: str) -> None:
        self._template = template
        self.registry = redact_url(template)

    def instancer(self, service: str) -> Instancer:
        # The stack waits for the first answer itself, bounded by the request's time.
        return instancer_from_url(self._template.replace(_PLACEHOLDER, service),
                                  first_answer_timeout=0)


class _Clients:
    """Registry clients shared by key (a registry address and its settings): the
    first ``acquire`` makes one, the last ``release`` closes it."""

    def __init__(self, close: Callable[[Any], None]) -> None:
        self._close = close
        self._lock = threading.Lock()
        self._clients: dict[Hashable, tuple[Any, list[int]]] = {}

    def acquire(self, key: Hashable, make: Callable[[], Any]) -> tuple[Any, Callable[[], None]]:
        with self._lock:
            entry = self._clients.get(key)
            if entry is None:
                entry = (make(), [0])  # under the lock: two first users make one client
                self._clients[key] = entry
            entry[1][0] += 1
        released = [False]

        def release() -> None:
            with self._lock:
                if released[0]:
                    return
                released[0] = True
                entry[1][0] -= 1
                if entry[1][0] > 0 or self._clients.get(key) is not entry:
                    return
                del self._clients[key]
            self._close(entry[0])

        return entry[0], release

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)


class _Sharing(Instancer):
    """An instancer on a shared client: ``stop()`` also gives the client back."""

    def __init__(self, inner: Instancer, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release = release

    def subscribe(self, callback: Callback) -> None:
        self._inner.subscribe(callback)

    def unsubscribe(self, callback: Callback) -> None:
        self._inner.unsubscribe(callback)

    def stop(self) -> None:
        try:
            self._inner.stop()
        finally:
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return repr(self._inner)


class _SharedClient(Discovery):
    """A registry template whose watches share one client per registry address."""

    blocking = True
    #: The driver's package (``kitsd.sd.etcd``): its ``url.parse_url`` reads the URLs.
    package: ClassVar[str]
    #: The driver's ``(module, function)`` that closes a client; ``None``: ``client.close()``.
    closer: ClassVar[tuple[str, str] | None] = None

    def __init__(self, template: str) -> None:
        self._template = template
        self.registry = redact_url(template)
        self.clients = _Clients(self._close)
        self.settings(_PROBE)  # a malformed template fails now, without connecting

    def _close(self, client: Any) -> None:
        if self.closer is None:
            client.close()
        else:  # the driver's library is imported only once a template names it
            module, name = self.closer
            getattr(importlib.import_module(module), name)(client)

    def settings(self, service: str) -> Any:
        url = importlib.import_module(f"{self.package}.url")
        return url.parse_url(
            urllib.parse.urlsplit(self._template.replace(_PLACEHOLDER, service)))

    def instancer(self, service: str) -> Instancer:
        raise NotImplementedError

    def share(self, key: Hashable, connect: Callable[[], Any],
              build: Callable[[Any], Instancer]) -> Instancer:
        client, release = self.clients.acquire(key, connect)
        try:
            return _Sharing(build(client), release)
        except BaseException:
            release()
            raise


class _Etcd(_SharedClient):
    package = "kitsd.sd.etcd"
    closer = ("kitsd.sd.etcd.connect", "close_client")

    def instancer(self, service: str) -> Instancer:
        from kitsd.sd.etcd.connect import connect
        from kitsd.sd.etcd.instancer import EtcdInstancer

        url = self.settings(service)
        key = (tuple(url.endpoints), url.user, url.password, url.timeout, url.ca, url.cert,
               url.key)

        def make() -> Any:
            return connect(endpoints=url.endpoints, user=url.user, password=url.password,
                           timeout=url.timeout, ca_cert=url.ca, cert_cert=url.cert,
                           cert_key=url.key)

        # The stack waits for the first answer itself, bounded by the request's time.
        return self.share(key, make, lambda client: EtcdInstancer(
            client, url.prefix, liveness_timeout=url.liveness, first_answer_timeout=0))


def _consul_token() -> str | None:
    from kitsd.sd.consul.url import TOKEN_ENV

    for name in TOKEN_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


class _Consul(_SharedClient):
    package = "kitsd.sd.consul"

    def instancer(self, service: str) -> Instancer:
        from kitsd.sd.consul.client import connect
        from kitsd.sd.consul.instancer import ConsulInstancer

        url = self.settings(service)
        token = _consul_token()
        key = (url.address, url.scheme, url.dc, url.ca, url.cert, url.key, token)
        cert: str | tuple[str, str] | None = url.cert
        if url.cert is not None and url.key is not None:
            cert = (url.cert, url.key)

        def make() -> Any:
            return connect(url.address, token=token, dc=url.dc, scheme=url.scheme,
                           verify=url.ca if url.ca is not None else True, cert=cert)

        # The stack waits for the first answer itself, bounded by the request's time.
        return self.share(key, make, lambda client: ConsulInstancer(
            client, url.service, tags=url.tags, passing_only=url.passing_only,
            first_answer_timeout=0))


def _zk_auth() -> str | None:
    from kitsd.sd.zk.url import AUTH_ENV

    value = os.environ.get(AUTH_ENV, "").strip()
    if value and ":" not in value:
        raise MisuseError(f"{AUTH_ENV} must be user:password")
    return value or None


class _ZooKeeper(_SharedClient):
    package = "kitsd.sd.zk"
    closer = ("kitsd.sd.zk.client", "close_client")

    def instancer(self, service: str) -> Instancer:
        from kitsd.sd.zk.client import connect
        from kitsd.sd.zk.instancer import ZKInstancer

        url = self.settings(service)
        auth = _zk_auth()
        return self.share((url.hosts, url.timeout, auth),
                          lambda: connect(url.hosts, auth=auth, timeout=url.timeout),
                          lambda client: ZKInstancer(client, url.path, first_answer_timeout=0))


_SHARED: dict[str, Callable[[str], _SharedClient]] = {
    "etcd": _Etcd, "etcds": _Etcd, "consul": _Consul, "consuls": _Consul, "zk": _ZooKeeper,
}


def _check_driver(scheme: str, shown: str) -> None:
    extra, modules = _DRIVERS[scheme]
    if modules and not any(importlib.util.find_spec(name) is not None for name in modules):
        raise MisuseError(
            f"discover template {shown} needs the {extra} driver, whose library is not "
            f"installed: pip install 'kitsd[{extra}]'")


def _template(template: str) -> Discovery:
    shown = redact_url(template)
    scheme = template.partition("://")[0].lower() if "://" in template else ""
    if scheme not in _SCHEMES:
        raise MisuseError(
            f"discover URL template has an unknown scheme {scheme!r} in {shown} "
            f"(want one of {', '.join(_SCHEMES)})")
    if scheme == "static":
        return _checked(_Static, template)
    if _PLACEHOLDER not in template:
        raise MisuseError(f"discover URL template must contain {{service}}, got {shown}")
    _check_driver(scheme, shown)
    shared = _SHARED.get(scheme)
    if shared is not None:
        return _checked(shared, template)
    return _ByURL(template)


def _checked(make: Callable[[str], Discovery], template: str) -> Discovery:
    """``make(template)``, whose check substitutes :data:`_PROBE` for ``{service}``: an
    error shows the template the user wrote, not the stand-in name."""
    try:
        return make(template)
    except MisuseError as error:
        if _PROBE in str(error):  # same error (type, fields), the template's words
            error.args = (str(error).replace(_PROBE, _PLACEHOLDER),)
        raise


def discovery(discover: object) -> Discovery:
    """The :class:`Discovery` for a transport's ``discover`` argument.

    Raises :class:`sd.MisuseError` for a template that cannot work (no
    ``{service}``, an unknown scheme, a malformed URL, a driver whose library is
    missing, naming the extra) and ``TypeError`` for anything else that is not
    a template, a callable or an ``sd.MemoryRegistry``; nothing is started.
    """
    if isinstance(discover, MemoryRegistry):
        return _Memory(discover)
    if isinstance(discover, str):
        return _template(discover)
    if callable(discover):
        return _Callable(discover)
    raise TypeError(
        "discover must be a URL template with {service}, a callable service -> Instancer, "
        f"or an sd.MemoryRegistry, got {shown_value(discover)}")
