"""``zk://`` URLs for :func:`sd.url.instancer_from_url`.

Form: ``zk://host[:port][,host[:port]...]/path/of/service[?timeout=SECONDS]``

* several comma-separated hosts make one ensemble; the port defaults to 2181;
* the path is the node whose children hold the instances (as
  ``zk://127.0.0.1:2181/services/users``); percent-escapes are decoded;
* ``timeout`` is the session timeout in seconds (default 10).

Digest credentials come from the environment, ``KITSD_ZK_AUTH=user:password``,
never from the URL (a URL ends up in logs and shell history): a URL with a
``user:password@`` part is refused without being echoed.  They are never
logged and never appear in a ``repr``.  The instancer built from a URL owns
its client and stops it on ``stop()``.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, Final

from kitsd.core import validate
from kitsd.core.errors import InvalidInstanceError, MisuseError
from kitsd.core.redact import shown_address, shown_parameter, shown_url, without_value
from kitsd.sd.instance import split_address
from kitsd.sd.instancer import DEFAULT_FIRST_ANSWER_TIMEOUT, InstancerHandle
from kitsd.sd.zk.client import close_client, connect
from kitsd.sd.zk.instancer import ZKInstancer
from kitsd.sd.zk.view import check_path

__all__ = ["AUTH_ENV", "ZKURL", "instancer_from_url", "parse_url"]

AUTH_ENV: Final = "KITSD_ZK_AUTH"
"""Environment variable with the digest credential ``user:password``."""

_DEFAULT_PORT: Final = 2181


@dataclass(frozen=True, slots=True)
class ZKURL:
    """The settings a ``zk://`` URL carries (credentials are never one of them)."""

    hosts: str
    path: str
    timeout: float = 10.0


def parse_url(parsed: urllib.parse.SplitResult) -> ZKURL:
    """Parse a ``zk://`` URL; raises :class:`~kitsd.core.errors.MisuseError` (a ``ValueError``)."""
    shown = shown_url(parsed)
    if "@" in parsed.netloc:
        raise MisuseError(f"credentials do not belong in a zk:// URL ({shown}): set "
                          f"{AUTH_ENV}=user:password instead")
    hosts = []
    for item in parsed.netloc.split(","):
        text = item.strip()
        if not text:
            continue
        try:
            host, port = split_address(text, default_port=_DEFAULT_PORT)
        except InvalidInstanceError as error:
            raise MisuseError(f"bad ZooKeeper host {shown_address(text)} in {shown}: want"
                              f" host:port ({error.reason})") from None
        hosts.append(f"{host}:{port}")
    if not hosts:
        raise MisuseError(f"zk:// URL names no host, as zk://127.0.0.1:2181/services/api: "
                          f"{shown}")
    try:
        path = check_path(urllib.parse.unquote(parsed.path))
    except MisuseError as error:
        raise MisuseError(f"{error} (in {shown})") from None
    timeout = 10.0
    for name, values in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items():
        if name != "timeout":
            raise MisuseError(
                f"unknown zk:// URL parameter {shown_parameter(name)!r} in {shown} (known: timeout)"
            )
        # the value is not echoed (see kitsd.core.redact): the message names the rule
        try:
            timeout = float(values[-1])
        except ValueError:
            raise MisuseError(f"zk:// URL timeout must be seconds, in {shown}") from None
        try:
            validate.seconds("zk:// URL timeout", timeout)
        except MisuseError as error:  # URL parameter values are never echoed
            raise MisuseError(f"{without_value(error)}, in {shown}") from None
    return ZKURL(",".join(hosts), path, timeout)


def _auth() -> str | None:
    value = os.environ.get(AUTH_ENV, "").strip()
    if not value:
        return None
    if ":" not in value:
        raise MisuseError(f"{AUTH_ENV} must be user:password")
    return value


class _OwningZKInstancer(ZKInstancer):
    """A :class:`ZKInstancer` that stops its (private) client when stopped."""

    def __init__(self, client: Any, path: str, *, first_answer_timeout: float) -> None:
        self._close_lock = threading.Lock()
        self._closed = False
        try:
            super().__init__(client, path, first_answer_timeout=first_answer_timeout)
        except BaseException:
            close_client(client)
            raise

    def stop(self) -> None:
        """Stop the watch, then the client it owns; idempotent."""
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
    """A :class:`~sd.zk.ZKInstancer` for a ``zk://`` URL, on a client of its own
    (``first_answer_timeout`` as for the instancer).

    Raises :class:`~kitsd.core.errors.MisuseError` for a malformed URL.  The client
    connects in the background: an unreachable ensemble shows up as error
    events, not as an exception here.
    """
    url = parse_url(parsed)
    try:
        client = connect(url.hosts, auth=_auth(), timeout=url.timeout)
    except ImportError as error:
        raise MisuseError(f"zk:// needs the zk driver: {error}") from error
    return _OwningZKInstancer(client, url.path, first_answer_timeout=first_answer_timeout)
