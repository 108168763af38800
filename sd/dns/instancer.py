"""``SRVInstancer``: the instances a DNS SRV name points at, re-resolved as the TTL says.

Theory of operation
-------------------
One :class:`SRVWatch` per (name, resolver, options) -- shared by every
:class:`SRVInstancer` handle through :class:`sd.instancer.SharedWatches` --
runs :func:`watch_srv`, a coroutine, on a private event loop in its own
thread:

1. look the name up (:func:`sd.dns.resolver.lookup`, dnspython's asyncio
   resolver), with the targets' addresses unless ``resolve=False``: targets
   without glue at most :data:`sd.dns.resolver.MAX_TARGET_LOOKUPS` at a time,
   within one lookup ``timeout``, remembered as :class:`sd.dns.srv.TargetCache`
   says (negative answers too); a target whose lookup fails is left out (or
   keeps its last addresses), the others are published;
2. translate the answer (:func:`sd.dns.srv.translate`: bad records skipped
   with a warning, once while they stay) and publish the instances, with each
   record's weight, priority and target as metadata (:func:`sd.dns.srv.infos_of`);
   NXDOMAIN or no SRV records publishes an empty set;
3. wait as :class:`sd.dns.srv.RefreshPolicy` says (the TTL clamped to
   ``[min_ttl, max_ttl]``, or a fixed ``interval``), and go back to 1;
4. a timeout, SERVFAIL or refusal publishes an :class:`~sd.event.Event`
   carrying a :class:`~kitsd.core.errors.RegistryUnavailableError` with the last
   instances kept, and retries after a jittered backoff (100 ms doubling,
   never longer than the longest regular wait).

``stop()`` cancels the coroutine -- a lookup in flight included, so it never
waits out a DNS timeout -- and joins the thread; the loop is closed with it.
The coroutine is the whole algorithm; the thread is only its driver.
:class:`AsyncSRVInstancer` is the other driver: the same coroutine as a task
on the caller's running loop, no thread at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable
from typing import Any, Final

from kitsd.core import validate
from kitsd.core.errors import RegistryUnavailableError
from kitsd.sd._async_watch import AsyncWatchHandle
from kitsd.sd._cancel import cancel_until_done
from kitsd.sd.backoff import Backoff
from kitsd.sd.dns.resolver import (
    NoRecords,
    check_name,
    describe,
    lookup,
    make_resolver,
    parse_server,
)
from kitsd.sd.dns.srv import (
    RefreshPolicy,
    SRVInstance,
    TargetCache,
    infos_of,
    instances_of,
    translate,
)
from kitsd.sd.event import Event
from kitsd.sd.instancer import (
    DEFAULT_FIRST_ANSWER_TIMEOUT,
    Broadcaster,
    InstancerHandle,
    SharedWatches,
    check_first_answer_timeout,
)

__all__ = ["AsyncSRVInstancer", "SRVInstancer", "SRVWatch", "watch_srv"]

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT: Final = 0.9

_WATCHES = SharedWatches()


async def watch_srv(
    broadcaster: Broadcaster,
    resolver: Any,
    name: str,
    *,
    resolve: bool,
    policy: RefreshPolicy,
    rng: random.Random,
    tcp: bool = True,
    on_answer: Callable[[tuple[SRVInstance, ...]], None] | None = None,
) -> None:
    """Keep ``broadcaster`` in step with SRV name ``name`` until cancelled (see the module
    docstring).  ``on_answer`` receives every translated answer (priorities and weights
    included)."""
    backoff = Backoff(curve=policy.retry_curve(), rng=rng)
    targets = TargetCache(max_ttl=policy.longest)  # what glue-less targets resolved to
    where = describe(resolver)
    source = f"SRV {name} at {where}"
    warned: set[str] = set()  # bad records of the last answer: logged once, not per refresh
    while True:
        try:
            answer = await lookup(resolver, name, resolve=resolve, tcp=tcp, targets=targets)
        except NoRecords:
            translated: tuple[SRVInstance, ...] = ()
            delay = policy.after_empty()
        except RegistryUnavailableError as error:
            delay = backoff.next_delay()
            logger.warning("%s; keeping the last instances, retrying in %.2fs", error, delay)
            broadcaster.publish_error(error)
            await asyncio.sleep(delay)
            continue
        except Exception as error:  # the watch must outlive any failure
            delay = backoff.next_delay()
            logger.exception("SRV lookup of %s at %s failed unexpectedly; retrying in %.2fs",
                             name, where, delay)
            mapped = RegistryUnavailableError(f"SRV lookup of {name} at {where} failed: "
                                              f"{type(error).__name__}")
            mapped.__cause__ = error
            broadcaster.publish_error(mapped)
            await asyncio.sleep(delay)
            continue
        else:
            skipped: list[str] = []
            translated = translate(answer.records, answer.addresses, source=source,
                                   skipped=skipped, failed=answer.failed_targets)
            for message in skipped:
                if message not in warned:
                    logger.warning("%s", message)
            warned = set(skipped)
            delay = policy.after_answer(answer.ttl)
        backoff.reset()
        if on_answer is not None:
            on_answer(translated)
        broadcaster.publish(Event(instances_of(translated), info=infos_of(translated)))
        await asyncio.sleep(delay)


class SRVWatch:
    """Runs :func:`watch_srv` on a private event loop in a thread of its own.

    Started on construction; :meth:`stop` is idempotent and prompt (it cancels a
    lookup in flight) and joins the thread.  Thread-safe.  Users hold an
    :class:`SRVInstancer`, not this.
    """

    def __init__(
        self, broadcaster: Broadcaster, name: str, *, server: tuple[str, int] | None,
        resolve: bool, policy: RefreshPolicy, timeout: float, tcp: bool = True,
    ) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._stopped = False
        self._records: tuple[SRVInstance, ...] = ()
        self._loop = asyncio.new_event_loop()
        try:
            resolver = make_resolver(server, timeout=timeout)
            self._task = self._loop.create_task(watch_srv(
                broadcaster, resolver, name, resolve=resolve, policy=policy,
                rng=random.Random(), tcp=tcp, on_answer=self._remember,
            ))
            self._thread = threading.Thread(
                target=self._run, name=f"kitsd-dns-watch {name}", daemon=True
            )
            self._thread.start()
        except BaseException:
            self._close_loop()
            raise

    @property
    def records(self) -> tuple[SRVInstance, ...]:
        """The last answer, translated: instances with their SRV priority and weight."""
        return self._records

    def _remember(self, records: tuple[SRVInstance, ...]) -> None:
        self._records = records

    def _run(self) -> None:
        try:
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(self._task)
        finally:
            self._close_loop()
            logger.debug("DNS watch of %s stopped", self._name)

    def _close_loop(self) -> None:
        if self._loop.is_closed():
            return
        task: asyncio.Task[None] | None = getattr(self, "_task", None)
        if task is not None and not task.done():
            cancel_until_done(task)
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(task)
        with contextlib.suppress(RuntimeError):
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def stop(self) -> None:
        """Cancel the watch (and a lookup in flight) and end the thread; idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        with contextlib.suppress(RuntimeError):  # the loop already ended
            # (again and again: a cancellation can be lost inside dnspython, sd._cancel)
            self._loop.call_soon_threadsafe(cancel_until_done, self._task)
        if threading.current_thread() is self._thread:
            return  # stopped from a subscriber callback: the loop ends on its own
        self._thread.join(_JOIN_TIMEOUT)
        if self._thread.is_alive():
            logger.warning("DNS watch of %s did not stop within %.1fs", self._name,
                           _JOIN_TIMEOUT)


def _settings(
    name: str, resolver: str | None, resolve: bool, min_ttl: float, max_ttl: float,
    interval: float | None, timeout: float, tcp: bool,
) -> tuple[str, tuple[str, int] | None, RefreshPolicy, float]:
    """Check every argument before anything starts; raises ``TypeError``/``MisuseError``."""
    checked = check_name(name)
    server = None if resolver is None else parse_server(resolver)
    validate.flag("resolve", resolve)
    validate.flag("tcp", tcp)
    policy = RefreshPolicy(min_ttl=min_ttl, max_ttl=max_ttl, interval=interval)
    return checked, server, policy, validate.seconds("timeout", timeout)


class SRVInstancer(InstancerHandle):
    """The instances DNS SRV name ``name`` points at (go-kit's ``dnssrv.Instancer``, with TTLs).

    * ``resolver``: the name server as ``ip`` or ``ip:port`` (Consul's DNS:
      ``127.0.0.1:8600``); ``None`` uses the system's (``/etc/resolv.conf``).
    * ``resolve``: ``True`` (default) publishes each target's addresses
      (``10.0.0.1:8080``), ``False`` the target names (``web-0.svc:8080``).
    * ``min_ttl``/``max_ttl``: bounds on the record TTL that decides when to
      look again (a TTL of 0, as Consul sends, means every ``min_ttl``);
      ``interval``: a fixed period instead, as go-kit.
    * ``timeout``: seconds one lookup may take.
    * ``first_answer_timeout`` (seconds, default 5; 0 does not wait): how long
      the constructor waits for the first lookup (as go-kit's), so subscribers
      start from a real answer or an error, never from an empty set nobody read.
    * ``tcp``: ``True`` (default) asks over TCP, so the answer is complete:
      Consul's DNS sends at most 3 records over UDP (``udp_answer_limit``), a
      different 3 each time, without marking the answer truncated.  ``False``
      asks over UDP and falls back to TCP only for answers marked truncated.

    NXDOMAIN or no SRV records publishes an empty set; a timeout, SERVFAIL or
    refusal publishes an :class:`~sd.event.Event` whose ``error`` is a
    :class:`~kitsd.core.errors.RegistryUnavailableError`, keeping the last instances.
    :attr:`records` keeps the SRV priority and weight of each instance.

    Every ``SRVInstancer`` with the same settings shares one watch; ``stop()``
    releases this handle's share and is prompt.  Raises ``TypeError`` or
    :class:`~kitsd.core.errors.MisuseError` (a ``ValueError``) naming the argument for
    a bad name, resolver or duration, before anything starts; ``ImportError``
    without dnspython (``pip install 'kitsd[dns]'``).  Thread-safe.
    """

    def __init__(
        self,
        name: str,
        *,
        resolver: str | None = None,
        resolve: bool = True,
        min_ttl: float = 1.0,
        max_ttl: float = 300.0,
        interval: float | None = None,
        timeout: float = 5.0,
        tcp: bool = True,
        first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT,
    ) -> None:
        checked, server, policy, seconds = _settings(
            name, resolver, resolve, min_ttl, max_ttl, interval, timeout, tcp
        )
        first_wait = check_first_answer_timeout(first_answer_timeout)
        self._name = checked
        self._server = server
        key = (checked.lower().rstrip("."), server, resolve, policy, seconds, tcp)
        broadcaster, watch, release = _WATCHES.acquire(
            key,
            lambda broadcaster: SRVWatch(broadcaster, checked, server=server, resolve=resolve,
                                         policy=policy, timeout=seconds, tcp=tcp),
            kind="dns", service=checked, pending=True,  # kitsd.observe labels
        )
        self._watch = watch
        super().__init__(broadcaster, release, first_answer_timeout=first_wait,
                         source=f"SRV {checked} at {_where(server)}")

    @property
    def name(self) -> str:
        """The SRV name looked up."""
        return self._name

    @property
    def records(self) -> tuple[SRVInstance, ...]:
        """The last answer's instances with their SRV priority and weight (empty before it)."""
        return self._watch.records

    def __repr__(self) -> str:
        return f"SRVInstancer({self._name!r}, resolver={_where(self._server)!r})"


def _where(server: tuple[str, int] | None) -> str:
    if server is None:
        return "system resolver"
    host = f"[{server[0]}]" if ":" in server[0] else server[0]
    return f"{host}:{server[1]}"


class AsyncSRVInstancer(AsyncWatchHandle):
    """:class:`SRVInstancer` for asyncio: the same watch coroutine as a task on the running
    loop, no thread.  Same arguments and behaviour; subscribers are called on the loop.

    Must be created inside a running loop.  ``stop()`` cancels the task (from any
    thread); ``await aclose()`` (or leaving ``async with``) also waits until it has
    ended, so nothing is left running.  Not shared between instancers.

    ``subscribe()`` cannot wait for the first lookup (it runs on the caller's
    loop): subscribers are sent the first answer when it arrives, or after
    ``first_answer_timeout`` seconds without one a
    :class:`~kitsd.core.errors.RegistryUnavailableError` saying so; never an
    empty set nobody read.
    """

    def __init__(
        self,
        name: str,
        *,
        resolver: str | None = None,
        resolve: bool = True,
        min_ttl: float = 1.0,
        max_ttl: float = 300.0,
        interval: float | None = None,
        timeout: float = 5.0,
        tcp: bool = True,
        first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT,
    ) -> None:
        checked, server, policy, seconds = _settings(
            name, resolver, resolve, min_ttl, max_ttl, interval, timeout, tcp
        )
        first_wait = check_first_answer_timeout(first_answer_timeout)
        asyncio.get_running_loop()  # RuntimeError before anything is made
        self._name = checked
        self._records: tuple[SRVInstance, ...] = ()
        broadcaster = Broadcaster(kind="dns", service=checked,  # kitsd.observe labels
                                  pending=True)
        super().__init__(
            broadcaster,
            lambda: watch_srv(broadcaster, make_resolver(server, timeout=seconds), checked,
                              resolve=resolve, policy=policy, rng=random.Random(), tcp=tcp,
                              on_answer=self._remember),
            name=f"kitsd-dns-watch {checked}", first_answer_timeout=first_wait,
            source=f"SRV {checked} at {_where(server)}")

    def _remember(self, records: tuple[SRVInstance, ...]) -> None:
        self._records = records

    @property
    def records(self) -> tuple[SRVInstance, ...]:
        """The last answer's instances with their SRV priority and weight."""
        return self._records

    def __repr__(self) -> str:
        return f"AsyncSRVInstancer({self._name!r})"


def _running_watches() -> int:
    """How many shared watches are running (for tests)."""
    return len(_WATCHES.keys())
