"""``etcd://`` URLs for :func:`sd.url.instancer_from_url`.

Form::

    etcd://[user[:password]@]host[:port][,host[:port]...]/prefix/[?PARAMS]

* several comma-separated hosts give a client that fails over between
  cluster members; the port defaults to 2379;
* the path is the key prefix, kept as written (``etcd://h:2379/services/api/``
  watches ``/services/api/``); percent-escapes are decoded;
* credentials come from the environment variables ``KITSD_ETCD_USER`` and
  ``KITSD_ETCD_PASSWORD`` (preferred: a URL ends up in shell histories and
  process lists), or from the URL's userinfo, which wins.  They are never
  logged, never appear in an error message or a ``repr``; a ``user``,
  ``password`` or ``token`` query parameter is refused without echoing it;
* ``PARAMS``: ``timeout=SECONDS`` (every call, default 5);
  ``liveness=SECONDS`` (how long a silently broken connection may go
  unreported, default 5: :class:`~sd.etcd.EtcdInstancer`'s
  ``liveness_timeout``); TLS with
  ``ca=PATH`` (the CA file that signed the server certificate: its presence
  switches to TLS) and optionally ``cert=PATH&key=PATH`` (a client
  certificate and its key, together), for example
  ``etcd://etcd1:2379/services/api/?ca=/etc/etcd/ca.pem&cert=/etc/kitsd/client.pem&key=/etc/kitsd/client-key.pem``.
  They reach :func:`sd.etcd.connect`'s ``ca_cert``, ``cert_cert`` and
  ``cert_key``.  ``etcds://`` is accepted as the same form and requires
  ``ca=`` (a reminder that the URL is meant to use TLS).

The instancer built from a URL owns its client and closes it on ``stop()``.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from typing import Any, Final

from kitsd.core import validate
from kitsd.core.errors import InvalidInstanceError, MisuseError
from kitsd.core.redact import shown_address, shown_parameter, without_value
from kitsd.sd.etcd.connect import close_client, connect
from kitsd.sd.etcd.instancer import DEFAULT_LIVENESS_TIMEOUT, EtcdInstancer
from kitsd.sd.instance import split_address
from kitsd.sd.instancer import DEFAULT_FIRST_ANSWER_TIMEOUT, InstancerHandle

__all__ = ["PASSWORD_ENV", "USER_ENV", "EtcdURL", "instancer_from_url", "parse_url"]

USER_ENV: Final = "KITSD_ETCD_USER"
"""Environment variable with the etcd user name when the URL has none."""
PASSWORD_ENV: Final = "KITSD_ETCD_PASSWORD"  # noqa: S105 - the variable's name, not a password
"""Environment variable with the etcd password when the URL has none."""

_DEFAULT_PORT: Final = 2379
_SECRET_PARAMS: Final = frozenset({"user", "username", "password", "pass", "token", "auth"})


class EtcdURL:
    """A parsed ``etcd://`` URL.  ``repr`` and ``str`` hide the password."""

    __slots__ = ("_password", "ca", "cert", "endpoints", "key", "liveness", "prefix", "timeout",
                 "user")

    def __init__(
        self,
        endpoints: list[str],
        prefix: str,
        *,
        user: str | None,
        password: str | None,
        timeout: float | None,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        liveness: float = DEFAULT_LIVENESS_TIMEOUT,
    ) -> None:
        self.endpoints = endpoints
        self.prefix = prefix
        self.user = user
        self._password = password
        self.timeout = timeout
        self.ca = ca
        self.cert = cert
        self.key = key
        self.liveness = liveness

    @property
    def tls(self) -> bool:
        """Whether the URL asks for TLS (it names a CA file)."""
        return self.ca is not None

    @property
    def password(self) -> str | None:
        """The password (from the URL or ``KITSD_ETCD_PASSWORD``); handle with care."""
        return self._password

    def __repr__(self) -> str:
        secret = "" if self._password is None else ", password='***'"
        tls = "" if self.ca is None else f", ca={self.ca!r}, cert={self.cert!r}, key={self.key!r}"
        return (
            f"EtcdURL(endpoints={self.endpoints!r}, prefix={self.prefix!r},"
            f" user={self.user!r}{secret}, timeout={self.timeout!r}{tls})"
        )

    __str__ = __repr__


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _split_hosts(netloc: str) -> list[str]:
    hosts = netloc.rpartition("@")[2]
    endpoints = []
    for item in hosts.split(","):
        text = item.strip()
        if not text:
            continue
        try:
            host, port = split_address(text, default_port=_DEFAULT_PORT)
        except InvalidInstanceError as error:
            raise MisuseError(f"bad etcd host {shown_address(text)}: want host:port"
                              f" ({error.reason})") from None
        endpoints.append(f"{host}:{port}")
    if not endpoints:
        raise MisuseError("etcd URL names no host, as etcd://127.0.0.1:2379/services/api/")
    return endpoints


def parse_url(parsed: urllib.parse.SplitResult) -> EtcdURL:
    """Parse an ``etcd://`` URL; raises :class:`~kitsd.core.errors.MisuseError`
    (a ``ValueError``)."""
    scheme = parsed.scheme.lower()
    if scheme not in ("etcd", "etcds"):
        raise MisuseError(f"not an etcd:// URL (scheme {parsed.scheme!r})")
    endpoints = _split_hosts(parsed.netloc)
    prefix = urllib.parse.unquote(parsed.path)
    if not prefix or prefix == "/":
        raise MisuseError("etcd URL needs a key prefix path, as etcd://host:2379/services/api/")
    userinfo, at, _ = parsed.netloc.rpartition("@")
    user: str | None = None
    password: str | None = None
    if at:
        raw_user, colon, raw_password = userinfo.partition(":")
        user = urllib.parse.unquote(raw_user) or None
        password = urllib.parse.unquote(raw_password) if colon else None
    if user is None:
        user = os.environ.get(USER_ENV) or None
    if password is None and user is not None:
        password = os.environ.get(PASSWORD_ENV)
    if (user is None) != (password is None):
        raise MisuseError(
            f"etcd URL has a user but no password (set it in the URL or {PASSWORD_ENV})"
        )
    seconds: dict[str, float] = {"timeout": 5.0, "liveness": DEFAULT_LIVENESS_TIMEOUT}
    files: dict[str, str] = {}
    for name, values in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items():
        if name in _SECRET_PARAMS:
            raise MisuseError(
                f"etcd URL parameter {name!r} is not accepted: give credentials in"
                f" {USER_ENV}/{PASSWORD_ENV} (or the URL's user:password@)")
        if name in ("ca", "cert", "key"):
            if not values[-1]:
                raise MisuseError(f"etcd URL parameter {name!r} needs a file path")
            files[name] = values[-1]
            continue
        if name not in seconds:
            raise MisuseError(
                f"unknown etcd URL parameter {shown_parameter(name)!r}"
                " (known: timeout, liveness, ca, cert, key)")
        value = _float_or_none(values[-1])
        if value is None:  # raised outside the except block: no context quoting the value
            raise MisuseError(f"etcd URL {name} must be a number of seconds")
        try:
            seconds[name] = validate.seconds(f"etcd URL {name}", value)
        except MisuseError as error:  # URL parameter values are never echoed
            raise MisuseError(without_value(error)) from None
    if ("cert" in files) != ("key" in files):
        raise MisuseError("etcd URL parameters cert and key go together")
    if "cert" in files and "ca" not in files:
        raise MisuseError("etcd URL parameters cert/key need ca (the server's CA file)")
    if scheme == "etcds" and "ca" not in files:
        raise MisuseError("etcds:// URLs need ca=PATH (the CA file of the server certificate)")
    return EtcdURL(endpoints, prefix, user=user, password=password, timeout=seconds["timeout"],
                   ca=files.get("ca"), cert=files.get("cert"), key=files.get("key"),
                   liveness=seconds["liveness"])


class _OwningEtcdInstancer(EtcdInstancer):
    """An :class:`EtcdInstancer` that closes its (private) client when stopped."""

    def __init__(self, client: Any, prefix: str, *, liveness_timeout: float,
                 first_answer_timeout: float) -> None:
        self._close_lock = threading.Lock()
        self._closed = False
        try:
            super().__init__(client, prefix, liveness_timeout=liveness_timeout,
                             first_answer_timeout=first_answer_timeout)
        except BaseException:
            close_client(client)
            raise

    def stop(self) -> None:
        """Stop the watch, then close the client it owns; idempotent."""
        super().stop()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        close_client(self.client)


def instancer_from_url(
    parsed: urllib.parse.SplitResult, *,
    first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT,
) -> InstancerHandle:
    """An :class:`~sd.etcd.EtcdInstancer` for an ``etcd://`` URL, on a client of its own
    (``first_answer_timeout`` as for the instancer).

    Raises :class:`~kitsd.core.errors.MisuseError` for a malformed URL; with
    credentials, :class:`~kitsd.core.errors.PermissionDeniedError` or
    :class:`~kitsd.core.errors.RegistryUnavailableError` when etcd refuses them or
    cannot be reached (authentication happens at once).
    """
    url = parse_url(parsed)
    client = connect(
        endpoints=url.endpoints, user=url.user, password=url.password, timeout=url.timeout,
        ca_cert=url.ca, cert_cert=url.cert, cert_key=url.key,
    )
    return _OwningEtcdInstancer(client, url.prefix, liveness_timeout=url.liveness,
                                first_answer_timeout=first_answer_timeout)
