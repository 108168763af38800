"""The one Consul health watch, run by both instancers.

Theory of operation
-------------------
:func:`run_watch` is a coroutine: it makes the watch's private client (see
:func:`sd.consul.client.private_client`), then loops::

    policy = WatchPolicy(required_tags=tags[1:], token_sent=...)      (sd.consul.index)
    loop:
        try:   (X-Consul-Index, entries) = await client.health.service(
                   service, index=policy.index, wait=W, passing=passing_only, tag=tags[0])
               decision = policy.answered(X-Consul-Index, entries,
                                          default_deny=<X-Consul-Default-Acl-Policy: deny>)
        except error: decision = policy.failed(map_error(error),  (index back to 0)
                                               reached=reached_agent(error))
        publish decision.event or decision.error (keeping the last instances)
        sleep decision.delay (backoff after errors and odd indexes, else 0)

py-consul builds each request and judges each answer (status, index header);
httpx sends it, through :class:`sd.consul._http11.Http11Transport` (h11 over
asyncio streams: an answer is parsed in the task its bytes wake, ~0.5 ms of
CPU sooner than through httpcore); the body of a changed answer is decoded by
:mod:`sd.consul.decode` (by msgspec into the few fields the watch reads, when
installed).  An answer whose index says it repeats the last one is not even
decoded (:attr:`sd.consul.index.BlockingIndex.unchanged_at`).
``ConsulInstancer`` runs this coroutine on a private loop in its own thread
(:class:`sd._loop_thread.LoopThread`),
``AsyncConsulInstancer`` as a task of your loop: one algorithm, one transport,
two thin drivers.  Cancelling the task (``stop()``) abandons a held blocking
query at once and closes the private client.

A client that is not py-consul's (a test double of
:class:`sd.consul.client.ConsulClient`) is called as it is on the watch's
loop; its answers carry no headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kitsd.sd.consul.client import (
    ConsulClient,
    go_duration,
    map_error,
    maybe_await,
    private_client,
    reached_agent,
)
from kitsd.sd.consul.decode import Decoder, decode_entries
from kitsd.sd.consul.index import WatchPolicy
from kitsd.sd.consul.transport import AgentSettings, AsyncHttpxConsul
from kitsd.sd.instancer import Broadcaster

__all__ = ["HealthQuery", "run_watch"]

logger = logging.getLogger(__name__)

ACL_POLICY_HEADER = "X-Consul-Default-Acl-Policy"


@dataclass(frozen=True, slots=True)
class HealthQuery:
    """What one watch asks Consul: checked by the instancers before anything starts."""

    service: str
    tags: tuple[str, ...]
    passing_only: bool
    wait: float


class _Steps:
    """Carries out the policy's decisions: log, publish, signal the first answer."""

    def __init__(self, query: HealthQuery, agent: str, token_sent: bool,
                 broadcaster: Broadcaster, answered: Callable[[], object]) -> None:
        self._doing = f"watching service {query.service!r}"
        self._agent = agent
        self.policy = WatchPolicy(required_tags=query.tags[1:],
                                  where=f"{self._doing} at Consul agent {agent}",
                                  token_sent=token_sent)
        self._broadcaster = broadcaster
        self._answered = answered

    def after(self, answer: tuple[object, object] | Exception,
              headers: Mapping[str, str]) -> float:
        if isinstance(answer, Exception):
            decision = self.policy.failed(map_error(answer, doing=self._doing,
                                                    agent=self._agent),
                                          reached=reached_agent(answer))
        else:
            deny = headers.get(ACL_POLICY_HEADER, "").strip().lower() == "deny"
            decision = self.policy.answered(*answer, default_deny=deny)
        if decision.log is not None:
            logger.warning("%s", decision.log)
        if decision.event is not None:
            self._broadcaster.publish(decision.event)
        if decision.error is not None:
            self._broadcaster.publish_error(decision.error)
        self._answered()
        return decision.delay


async def run_watch(
    source: ConsulClient | AgentSettings,
    query: HealthQuery,
    broadcaster: Broadcaster,
    answered: Callable[[], object],
    *,
    decode: Decoder = decode_entries,
) -> None:
    """Watch ``query`` through a private client for ``source`` until cancelled.

    ``source``: a py-consul client whose settings to use, the settings
    themselves, or a narrow-protocol object used as it is.  ``answered()`` is
    called after each answer or error is published.  ``decode``: how the
    private client decodes a changed answer's body (:mod:`sd.consul.decode`;
    the benchmark compares them).  Never raises but ``CancelledError``.
    """
    client: Any
    settings: AgentSettings | None
    if isinstance(source, AgentSettings):
        client, settings = source.async_client(), source
    else:
        client, settings = private_client(source)
    agent = settings.base_url if settings is not None else type(source).__name__
    token_sent = bool(settings.token) if settings is not None else True
    steps = _Steps(query, agent, token_sent, broadcaster, answered)
    wait = go_duration(query.wait)
    tag = query.tags[0] if query.tags else None
    passing = True if query.passing_only else None
    no_headers: Mapping[str, str] = {}
    if isinstance(client, AsyncHttpxConsul):
        client.http.decode = decode
    try:
        while True:
            index = steps.policy.index
            if isinstance(client, AsyncHttpxConsul):
                client.http.unchanged_at = steps.policy.unchanged_at
                client.http.held_read_timeout = steps.policy.read_timeout
            answer: tuple[object, object] | Exception
            try:
                answer = await maybe_await(client.health.service(
                    query.service, index=str(index) if index > 0 else None, wait=wait,
                    passing=passing, tag=tag,
                ))
            except Exception as error:  # noqa: BLE001 - every failure becomes an error event
                answer = error
            headers = client.http.last_headers if isinstance(client, AsyncHttpxConsul) \
                else no_headers
            delay = steps.after(answer, headers)
            # Let go of the decoded answer before the next one is decoded: tens of
            # thousands of live containers make every garbage collection that the
            # next decode triggers that much slower (2x the raw loop at 10,000 entries).
            del answer
            # Always yield to the loop, even without a delay: a sync client's call
            # does not, and stop() is delivered through the loop.
            await asyncio.sleep(delay)
    finally:
        if isinstance(client, AsyncHttpxConsul):
            await client.aclose()
