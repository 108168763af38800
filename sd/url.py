"""``instancer_from_url``: build an instancer from one URL (``instancer_from_url_async``:
the same without blocking the running event loop).

* ``static://h1:p1,h2:p2`` — a :class:`~sd.instancer.FixedInstancer`.
* ``etcd://host:port/prefix/`` — :class:`sd.etcd.EtcdInstancer` (needs ``kitsd[etcd]``).
* ``consul://host:port/service?tag=a&tag=b&passing=1`` —
  :class:`sd.consul.ConsulInstancer` (needs ``kitsd[consul]``).
* ``k8s://[namespace/]service[:port]`` — :class:`sd.k8s.EndpointSliceInstancer`
  (needs ``kitsd[k8s]`` for a kubeconfig).
* ``dnssrv://``, ``zk://`` — :class:`sd.dns.SRVInstancer`, :class:`sd.zk.ZKInstancer`.

Building one may block: a driver connects (a host name to resolve, an etcd login, a
Kubernetes credential plugin to run, files to read), and the instancer waits up to
``first_answer_timeout`` for the registry's first answer.  From asyncio code use
:func:`instancer_from_url_async`: the building runs on a worker thread and the wait
on the loop, which keeps running.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import urllib.parse
from collections.abc import Callable
from typing import Protocol, cast

from kitsd.core.errors import MisuseError, shown_value
from kitsd.core.redact import redact_url, shown_parameter, shown_url
from kitsd.sd.instancer import (
    DEFAULT_FIRST_ANSWER_TIMEOUT,
    FixedInstancer,
    InstancerHandle,
    check_first_answer_timeout,
)

__all__ = [
    "instancer_from_url",
    "instancer_from_url_async",
    "redact_url",
    "shown_parameter",
    "shown_url",
]

_DRIVERS = {
    "etcd": ("kitsd.sd.etcd.url", "etcd"),
    "etcds": ("kitsd.sd.etcd.url", "etcd"),
    "consul": ("kitsd.sd.consul.url", "consul"),
    "consuls": ("kitsd.sd.consul.url", "consul"),
    "dnssrv": ("kitsd.sd.dns.url", "dns"),
    "zk": ("kitsd.sd.zk.url", "zk"),
    "k8s": ("kitsd.sd.k8s.url", "k8s"),
}


#: Schemes a newcomer writes for ours (the names of the registries, not their schemes).
_MEANT = {"dns": "dnssrv", "srv": "dnssrv", "zookeeper": "zk", "kubernetes": "k8s",
          "etcd3": "etcd"}

_WANT = ("(want static://, etcd://, etcds://, consul://, consuls://, dnssrv://, zk:// "
         "or k8s://)")


class _FromURL(Protocol):
    def instancer_from_url(
        self, url: urllib.parse.SplitResult, *, first_answer_timeout: float
    ) -> InstancerHandle: ...


def instancer_from_url(
    url: str, *, first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT
) -> InstancerHandle:
    """An instancer for ``url`` (see the module docstring), read once before it is
    returned: the constructor waits up to ``first_answer_timeout`` seconds (default 5,
    at most 600; 0 does not wait) for the registry's first answer, else its first
    state is a :class:`~kitsd.core.errors.RegistryUnavailableError` saying so.

    Raises :class:`~kitsd.core.errors.MisuseError` (a ``ValueError``) for a scheme or
    URL it cannot use, or a driver whose extra is not installed, and ``TypeError``
    for a ``first_answer_timeout`` that is not a number.  Blocks (see the module
    docstring): from a coroutine, await :func:`instancer_from_url_async` instead.
    """
    wait = check_first_answer_timeout(first_answer_timeout) or 0.0
    if not isinstance(url, str) or "://" not in url:
        shown = redact_url(url) if isinstance(url, str) else shown_value(url)
        raise MisuseError(f"not an instancer URL: {shown} {_WANT}")
    try:
        parsed = urllib.parse.urlsplit(url)
    except ValueError as error:
        raise MisuseError(f"not a valid URL: {redact_url(url)} ({error})") from error
    scheme = parsed.scheme.lower()
    if scheme == "static":
        body = url.split("://", 1)[1]
        items = [item for item in body.split(",") if item.strip()]
        if not items:
            raise MisuseError(f"static URL names no instances, as static://10.0.0.1:8080,"
                              f"10.0.0.2:8080: {redact_url(url)}")
        return FixedInstancer(items)
    if scheme in _DRIVERS:
        module_name, extra = _DRIVERS[scheme]
        try:
            module = cast(_FromURL, importlib.import_module(module_name))
        except ImportError as error:
            raise MisuseError(
                f"{scheme}:// needs the {extra} driver: pip install 'kitsd[{extra}]' ({error})"
            ) from error
        try:
            return module.instancer_from_url(parsed, first_answer_timeout=wait)
        except MisuseError:
            raise
        except ValueError as error:  # e.g. urlsplit's lazy port check, in the driver
            # neither its text nor the error itself: urlsplit's says "as 'S3CRET'"
            raise MisuseError(f"not a valid {scheme} URL: {redact_url(url)}"
                              f" ({type(error).__name__})") from None
    meant = _MEANT.get(scheme)
    raise MisuseError(
        f"unknown instancer URL scheme {parsed.scheme!r} in {redact_url(url)}"
        + (f": did you mean {meant}://?" if meant else "") + f" {_WANT}"
    )


async def instancer_from_url_async(
    url: str, *, first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT
) -> InstancerHandle:
    """:func:`instancer_from_url` for asyncio code: the same instancer, built without
    blocking the running loop.  What may block (connecting) runs on a worker thread
    of the loop's default executor; the first answer is awaited on the loop
    (:meth:`~sd.instancer.InstancerHandle.wait_first_answer_async`), up to
    ``first_answer_timeout`` seconds, with the same late-answer error.  The
    instancer's watch runs on its own thread, as :func:`instancer_from_url`'s does:
    subscribers are called there (:class:`sd.aio.EventStream` brings the events onto
    the loop); ``stop()`` may block briefly (it joins the watch), so a coroutine calls
    it through ``asyncio.to_thread``.

    Cancelled, it leaves nothing running: an instancer still being built is stopped
    once it is.  Raises what :func:`instancer_from_url` raises.
    """
    wait = check_first_answer_timeout(first_answer_timeout)
    instancer = await _off_loop(lambda: instancer_from_url(url, first_answer_timeout=0))
    try:
        if wait is not None:
            await instancer.wait_first_answer_async(wait)
    except BaseException:
        await asyncio.shield(asyncio.to_thread(instancer.stop))
        raise
    return instancer


async def _off_loop(build: Callable[[], InstancerHandle]) -> InstancerHandle:
    """``build()`` on a worker thread; when the caller is cancelled meanwhile, the
    instancer it returns is stopped (on a worker thread too) instead of lost."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, build)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        def abandon(done: asyncio.Future[InstancerHandle]) -> None:
            if not done.cancelled() and done.exception() is None:
                # a thread of its own: the loop's executor may be shutting down with it
                threading.Thread(target=done.result().stop, name="kitsd-abandoned-instancer",
                                 daemon=True).start()

        future.add_done_callback(abandon)
        raise
