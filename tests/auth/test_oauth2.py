"""OAuth2 client credentials against a real token endpoint (go-oauth2/oauth2 in Go,
tests/auth/tokenserver), services verifying its JWTs with joserfc: one token for
every call and instance, single flight under 200 callers, 401 retried once, the
endpoint found through kitsd, and load with tokens expiring every 2 s."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from joserfc.jwk import OctKey

import kitsd
from kitsd import auth, sd
from tests.auth.conftest import TOKEN_KEY
from tests.auth.services import ProtectedService, jwt_verifier
from tests.auth.tokenserver import TokenServer

Start = Callable[..., TokenServer]
Services = Callable[[int], list[ProtectedService]]


def _registry(services: list[ProtectedService]) -> sd.MemoryRegistry:
    registry = sd.MemoryRegistry()
    for service in services:
        registry.registrar("users", service.address).register()
    return registry


def test_one_token_for_every_call_and_instance(token_servers: Start,
                                               oauth_services: Services) -> None:
    server = token_servers(expiry=300)
    services = oauth_services(3)
    credentials = auth.ClientCredentials(server.token_url, server.client_id,
                                         server.client_secret)
    with credentials, httpx.Client(transport=kitsd.Transport(_registry(services)),
                                   auth=credentials) as client:
        answers = [client.get("http://users/").json() for _ in range(30)]
    assert {answer["instance"] for answer in answers} == {s.address for s in services}
    assert {answer["aud"][0] for answer in answers} == {server.client_id}
    assert server.requests() == 1
    assert len(set().union(*(service.tokens for service in services))) == 1


def test_refused_token_is_replaced_once(token_servers: Start) -> None:
    server = token_servers(expiry=300)
    verify = jwt_verifier(OctKey.import_key(TOKEN_KEY), ["HS256"])
    revoked: set[str] = set()
    service = ProtectedService(lambda header: None if header in revoked else verify(header))
    credentials = auth.ClientCredentials(server.token_url, server.client_id,
                                         server.client_secret)
    try:
        with httpx.Client(auth=credentials) as client:
            assert client.get(f"http://{service.address}/").status_code == 200
            revoked.update(service.tokens)  # the server side revokes the token in use
            time.sleep(1.1)  # the next token must differ: JWT times are whole seconds
            assert client.get(f"http://{service.address}/").status_code == 200
            assert service.refused == 1
            assert server.requests() == 2
            revoked.update(service.tokens)
            service.verify = lambda header: None  # now it refuses everything
            assert client.get(f"http://{service.address}/").status_code == 401  # once, no loop
            assert service.refused == 3
    finally:
        credentials.close()
        service.close()


def test_wrong_secret_is_a_clear_error_without_the_secret(token_servers: Start) -> None:
    server = token_servers()
    with auth.ClientCredentials(server.token_url, server.client_id, "not-the-secret") as bad, \
            pytest.raises(auth.TokenEndpointError) as caught:
        bad.token()
    error = caught.value
    assert (error.status_code, error.error) == (401, "invalid_client")
    assert "not-the-secret" not in str(error)
    assert server.client_id in str(error)
    with auth.ClientCredentials(f"http://{server.address}/nowhere", server.client_id,
                                server.client_secret) as lost, \
            pytest.raises(auth.TokenEndpointError, match="404"):
        lost.token()


def test_token_endpoint_found_through_kitsd(token_servers: Start,
                                            oauth_services: Services) -> None:
    server = token_servers(expiry=300)
    (service,) = oauth_services(1)
    oauth = sd.MemoryRegistry()
    oauth.registrar("oauth", server.address).register()
    credentials = auth.ClientCredentials("http://oauth/token", server.client_id,
                                         server.client_secret, transport=kitsd.Transport(oauth))
    with credentials, httpx.Client(auth=credentials) as client:
        assert client.get(f"http://{service.address}/").status_code == 200
    assert server.requests() == 1


def test_200_threads_at_once_one_token_request(token_servers: Start) -> None:
    server = token_servers(expiry=300, delay=0.3)
    credentials = auth.ClientCredentials(server.token_url, server.client_id,
                                         server.client_secret)
    barrier = threading.Barrier(200)
    tokens: list[str] = []

    def call() -> None:
        barrier.wait()
        tokens.append(credentials.token())

    threads = [threading.Thread(target=call) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    credentials.close()
    assert len(tokens) == 200
    assert len(set(tokens)) == 1
    assert server.requests() == 1


async def test_200_tasks_at_refresh_time_one_token_request(token_servers: Start) -> None:
    """Past the refresh point -- or past expiry, if this machine is slow: either way one
    request for 200 callers."""
    server = token_servers(expiry=2.0, delay=0.2)
    async with auth.AsyncClientCredentials(server.token_url, server.client_id,
                                           server.client_secret) as credentials:
        first = await credentials.atoken()
        fetched = time.monotonic()
        await asyncio.sleep(max(0.0, 1.85 - (time.monotonic() - fetched)))
        tokens = await asyncio.gather(*(credentials.atoken() for _ in range(200)))
    assert server.requests() == 2
    assert set(tokens) - {first}  # the refresher got the new one


async def test_200_tasks_at_once_one_token_request(token_servers: Start) -> None:
    server = token_servers(expiry=300, delay=0.3)
    async with auth.AsyncClientCredentials(server.token_url, server.client_id,
                                           server.client_secret) as credentials:
        tokens = await asyncio.gather(*(credentials.atoken() for _ in range(200)))
    assert len(set(tokens)) == 1
    assert server.requests() == 1


LOAD_SECONDS = 6.0
EXPIRY = 2.0


def _check_load(server: TokenServer, calls: int, failures: list[BaseException],
                elapsed: float) -> None:
    assert failures == []
    requests = server.requests()
    print(f"calls={calls} token_requests={requests} elapsed={elapsed:.1f}s")
    refresh_every = EXPIRY * 0.9  # refreshed a tenth of its lifetime early
    assert requests <= math.ceil(elapsed / refresh_every) + 2, (requests, calls)
    assert requests >= math.floor(elapsed / EXPIRY), (requests, calls)
    assert calls > 20 * requests  # tokens follow expiries, not calls


def test_load_with_tokens_expiring_every_2s(token_servers: Start,
                                            oauth_services: Services) -> None:
    server = token_servers(expiry=EXPIRY)
    services = oauth_services(3)
    credentials = auth.ClientCredentials(server.token_url, server.client_id,
                                         server.client_secret)
    failures: list[BaseException] = []
    calls = 0
    lock = threading.Lock()
    stop = threading.Event()
    with credentials, httpx.Client(transport=kitsd.Transport(_registry(services)),
                                   auth=credentials) as client:

        def load() -> None:
            nonlocal calls
            while not stop.is_set():
                try:
                    response = client.get("http://users/")
                    if response.status_code != 200:
                        failures.append(RuntimeError(f"HTTP {response.status_code}"))
                except Exception as error:
                    failures.append(error)
                with lock:
                    calls += 1

        threads = [threading.Thread(target=load) for _ in range(16)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        stop.wait(LOAD_SECONDS)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    _check_load(server, calls, failures, elapsed)


async def test_async_load_with_tokens_expiring_every_2s(token_servers: Start,
                                                        oauth_services: Services) -> None:
    server = token_servers(expiry=EXPIRY)
    services = oauth_services(3)
    failures: list[BaseException] = []
    calls = 0
    stop = asyncio.Event()
    async with auth.AsyncClientCredentials(
            server.token_url, server.client_id, server.client_secret) as credentials, \
            httpx.AsyncClient(transport=kitsd.AsyncTransport(_registry(services)),
                              auth=credentials) as client:

        async def load() -> None:
            nonlocal calls
            while not stop.is_set():
                try:
                    response = await client.get("http://users/")
                    if response.status_code != 200:
                        failures.append(RuntimeError(f"HTTP {response.status_code}"))
                except Exception as error:
                    failures.append(error)
                calls += 1

        started = time.monotonic()
        # 32 tasks: the verifying services share this process (and its GIL) on 2 cores;
        # with 200, a call waits longer than a token lives.  200 callers at refresh time
        # are the next test.
        tasks = [asyncio.create_task(load()) for _ in range(32)]
        await asyncio.sleep(LOAD_SECONDS)
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
    _check_load(server, calls, failures, elapsed)


