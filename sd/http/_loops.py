"""Where the sync and asyncio HTTP endpoints genuinely differ: the event loop a
client belongs to.  ``sd/http/_async/endpoint.py`` imports the ``async_`` names, its
generated sync twin the plain ones, with the same interface:

* :data:`ASYNC_CLIENTS` / :data:`SYNC_CLIENTS` — what kind of httpx client it makes;
* :func:`async_running_loop` / :func:`running_loop` — the loop a new client will
  belong to (the running one; none for a sync client);
* :func:`async_close_client` / :func:`close_client` — close a client: an
  ``httpx.AsyncClient`` on its own loop (here if that is the running loop, else
  on that loop if it still runs in another thread; if it has stopped, its
  connections cannot be closed cleanly: a warning, and they are left to the
  garbage collector); an ``httpx.Client`` at once.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

__all__ = [
    "ASYNC_CLIENTS",
    "SYNC_CLIENTS",
    "async_close_client",
    "async_running_loop",
    "close_client",
    "running_loop",
]

#: Whether an endpoint makes ``httpx.AsyncClient`` (:class:`~sd.http.AsyncHTTPEndpoint`)
#: or ``httpx.Client`` (:class:`~sd.http.HTTPEndpoint`).
ASYNC_CLIENTS = True
SYNC_CLIENTS = False

logger = logging.getLogger(__name__)


def async_running_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop (a new async client belongs to it)."""
    return asyncio.get_running_loop()


def running_loop() -> asyncio.AbstractEventLoop | None:
    """``None``: a sync client belongs to no event loop."""
    return None


async def async_close_client(
    client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop | None, owner: object
) -> None:
    """Close ``client`` on ``loop``, the loop it was used on (see the module docstring)."""
    if loop is None or loop is asyncio.get_running_loop():
        await client.aclose()
    elif loop.is_running():
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(client.aclose(), loop))
    else:
        logger.warning(
            "%r: the event loop its client was used on has stopped; "
            "its connections could not be closed cleanly",
            owner,
        )


def close_client(
    client: httpx.Client, loop: asyncio.AbstractEventLoop | None, owner: object
) -> None:
    """Close ``client`` (a sync client belongs to no loop)."""
    client.close()
