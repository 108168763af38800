"""kitsd.auth attacked: a token endpoint answering junk, 10 MB, an endless body, one byte
every 0.1 s, tokens that expire as they arrive; bad arguments; a streamed body refused
with 401; Ctrl-C during a fetch.  Each test failed before its fix."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kitsd.auth import (
    AsyncClientCredentials,
    BasicAuth,
    ClientCredentials,
    JWTSigner,
    MTLSTransport,
    TokenEndpointError,
    TokenError,
)
from kitsd.core.errors import MisuseError
from tests.hostile_http import HostilePeer, endless, reply, silent, trickle

pytestmark = pytest.mark.usefixtures("no_thread_leaks")

SECRET = "client-S3CRET-never-shown"
TOKEN_ANSWER = b'{"access_token":"tok-never-shown","expires_in":300}'


def credentials(peer: HostilePeer, timeout: float = 1.0) -> ClientCredentials:
    return ClientCredentials(peer.url + "/token", "billing", SECRET, timeout=timeout)


# -- what the endpoint sends ------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (endless(), "longer than 1048576 bytes"),  # before: read for ever into memory
        (reply(200, b'{"access_token":"T","pad":"' + b"x" * (10 << 20) + b'"}'),
         "longer than 1048576 bytes"),  # before: 10 MB read, the token accepted
        (reply(200, b"[" * 100_000 + b"]" * 100_000), "not a JSON object"),  # RecursionError
        (reply(200, b"<html>sign in</html>", b"text/html"), "not a JSON object"),
    ],
    ids=["endless", "10MB", "nested", "html"],
)
def test_a_junk_answer_is_a_token_endpoint_error(
        answer: object, says: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with HostilePeer(answer) as peer, credentials(peer) as auth:  # type: ignore[arg-type]
        started = time.monotonic()
        with pytest.raises(TokenEndpointError, match=says) as raised:
            auth.token()
        assert time.monotonic() - started < 3
    assert SECRET not in str(raised.value) + caplog.text + repr(auth)


@pytest.mark.parametrize(
    "answer",
    [trickle(b"HTTP/1.1 200 OK\r\ncontent-length: 60\r\n\r\n" + TOKEN_ANSWER),
     trickle(b"HTTP/1.1 200 OK\r\nx-padding: " + b"a" * 400),
     silent],
    ids=["trickled-body", "trickled-head", "silent"],
)
def test_the_whole_token_request_ends_by_timeout(answer: object) -> None:
    # before: each read waited up to timeout, so a trickle took 24-34 s for timeout=1
    with HostilePeer(answer) as peer, credentials(peer, timeout=1.0) as auth:  # type: ignore[arg-type]
        started = time.monotonic()
        with pytest.raises(TokenError, match="timeout=1s"):
            auth.token()
        assert time.monotonic() - started < 2.5


async def test_the_async_token_request_ends_by_timeout_too() -> None:
    answer = trickle(b"HTTP/1.1 200 OK\r\ncontent-length: 60\r\n\r\n" + TOKEN_ANSWER)
    with HostilePeer(answer) as peer:
        async with AsyncClientCredentials(peer.url + "/token", "billing", SECRET,
                                          timeout=1.0) as auth:
            started = time.monotonic()
            with pytest.raises(TokenError, match="timeout=1s"):
                await auth.atoken()
            assert time.monotonic() - started < 2.5
        async with AsyncClientCredentials(peer.url + "/token", "billing", SECRET,
                                          timeout=5.0) as auth:
            with HostilePeer(endless()) as flood:
                auth._exchange.token_url = flood.url + "/token"  # same client, other peer
                with pytest.raises(TokenEndpointError, match="longer than"):
                    await auth.atoken()


def test_a_token_that_expires_as_it_arrives_costs_one_request_per_wave() -> None:
    issued = iter(range(10_000))

    def answer(sock: object, head: bytes) -> None:
        time.sleep(0.5)  # the wave: every caller arrives while the one request is out
        body = json.dumps({"access_token": f"T{next(issued)}", "expires_in": 0.001}).encode()
        reply(200, body)(sock, head)  # type: ignore[arg-type]

    with HostilePeer(answer) as peer, credentials(peer, timeout=5.0) as auth:
        errors: list[BaseException] = []
        together = threading.Barrier(200)  # one wave, however slowly threads start

        def call() -> None:
            together.wait()
            try:
                auth.token()
            except TokenError as error:
                errors.append(error)

        threads = [threading.Thread(target=call) for _ in range(200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        # the fetcher and its 199 waiters: before, every waiter fetched again (200 requests)
        assert peer.requests <= 3


def test_expires_in_zero_means_no_expiry_as_in_go_oauth2() -> None:
    with HostilePeer(reply(200, b'{"access_token":"T","expires_in":0}')) as peer, \
            credentials(peer) as auth:
        assert [auth.token() for _ in range(5)] == ["T"] * 5
        assert peer.requests == 1  # before: one request per call


# -- requests the credential sends ----------------------------------------------------


def test_a_streamed_body_refused_with_401_is_not_replayed() -> None:
    with HostilePeer(reply(200, TOKEN_ANSWER)) as tokens, \
            HostilePeer(reply(401, b"{}")) as api, credentials(tokens) as auth, \
            httpx.Client(auth=auth) as client:

        def body() -> Iterator[bytes]:
            yield b"part one, "
            yield b"part two"

        # before: httpx.StreamConsumed out of the auth flow's retry
        assert client.post(api.url + "/orders", content=body()).status_code == 401
        assert api.requests == 1
        assert client.post(api.url + "/orders", content=b"in memory").status_code == 401
        assert api.requests == 3  # a body in memory is replayed once with a fresh token


def test_a_file_body_refused_with_401_is_not_replayed_empty(tmp_path: Path) -> None:
    seen: list[bytes] = []

    def answer(sock: object, head: bytes) -> None:
        seen.append(head)
        reply(401, b"{}")(sock, head)  # type: ignore[arg-type]

    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"x" * 1000)
    with HostilePeer(reply(200, TOKEN_ANSWER)) as tokens, HostilePeer(answer) as api, \
            credentials(tokens) as auth, httpx.Client(auth=auth) as client, \
            upload.open("rb") as content:
        assert client.post(api.url + "/upload", content=content).status_code == 401
    assert len(seen) == 1  # before: sent again with what was left of the file: nothing


def test_ctrl_c_during_a_fetch_is_not_turned_into_a_token_error() -> None:
    auth = ClientCredentials("http://127.0.0.1:9/token", "billing", SECRET)
    calls = 0

    def interrupted() -> object:
        nonlocal calls
        calls += 1
        raise KeyboardInterrupt

    auth._flight._fetch = interrupted  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):  # before: TokenError "(KeyboardInterrupt)"
        auth.token()
    with pytest.raises(KeyboardInterrupt):  # and the flight is not left "fetching"
        auth.token()
    assert calls == 2
    auth.close()


# -- arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"timeout": 1e300}, MisuseError, "timeout"),  # OverflowError in the first wait
        ({"scope": 5}, TypeError, "scope"),  # "can only join an iterable"
        ({"scope": [1, 2]}, TypeError, "scope"),
        ({"audience": 5}, TypeError, "audience"),  # was sent as "5"
        ({"params": 5}, TypeError, "params"),  # AttributeError: 'int' ... 'items'
        ({"params": {"a": 1}}, TypeError, "params"),
        ({"params": {"scope": "x"}, "scope": "y"}, MisuseError, "scope"),
        ({"transport": "junk"}, TypeError, "transport"),  # failed at the first token
    ],
)
def test_bad_client_credentials_arguments(kwargs: dict[str, object], error: type[Exception],
                                          named: str) -> None:
    with pytest.raises(error, match=named):
        ClientCredentials("http://oauth/token", "billing", SECRET, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["http://", "http://oauth/token\n", "http://h:port/t",
                                 "ftp://u:hunter2@oauth/t", "http://u:hunter2@/token"])
def test_bad_token_urls_are_refused_without_showing_a_password(url: str) -> None:
    with pytest.raises(MisuseError, match="token_url") as raised:
        ClientCredentials(url, "billing", SECRET)
    assert "hunter2" not in str(raised.value)


def test_bad_signer_basic_and_mtls_arguments() -> None:
    with pytest.raises(TypeError, match="cache"):
        JWTSigner("k" * 32, cache="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock"):
        JWTSigner("k" * 32, clock=5)  # type: ignore[arg-type]
    with pytest.raises(MisuseError, match="algorithm"):
        JWTSigner("k" * 32, algorithm=["HS256"])  # type: ignore[arg-type]
    with pytest.raises(MisuseError, match="username"):
        BasicAuth("admin\r\nX-Evil: 1", "pw")
    with pytest.raises(MisuseError, match="password") as raised:
        BasicAuth("admin", "hunter2\n")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(MisuseError, match="verify"):
        MTLSTransport({}, verify="/nonexistent/ca.pem")  # was FileNotFoundError, later
    with pytest.raises(MisuseError, match="verify"):
        MTLSTransport({}, verify="")  # was the system's CAs, silently


def test_an_mtls_transport_refuses_requests_after_close() -> None:
    transport = MTLSTransport({})
    transport.close()
    transport.close()
    with pytest.raises(RuntimeError, match="closed"):  # before: a new pool, never closed
        transport.handle_request(httpx.Request("GET", "http://127.0.0.1:9/"))


async def test_200_tasks_and_a_cancelled_fetcher_share_two_requests() -> None:
    def answer(sock: object, head: bytes) -> None:
        time.sleep(0.3)
        reply(200, TOKEN_ANSWER)(sock, head)  # type: ignore[arg-type]

    with HostilePeer(answer) as peer:
        async with AsyncClientCredentials(peer.url + "/token", "billing", SECRET,
                                          timeout=5) as auth:
            tasks = [asyncio.create_task(auth.atoken()) for _ in range(200)]
            await asyncio.sleep(0.1)
            tasks[0].cancel()  # the fetcher: a waiter fetches instead
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(results[0], asyncio.CancelledError)
            assert set(results[1:]) == {"tok-never-shown"}
            assert peer.requests == 2


def test_grpc_channel_credentials_check_the_channel() -> None:
    from kitsd.auth import grpc_channel_credentials

    with pytest.raises(TypeError, match="channel"):  # was AttributeError '_credentials'
        grpc_channel_credentials(BasicAuth("admin", "pw"), 5)


async def test_a_closed_credential_says_so() -> None:
    sync = ClientCredentials("http://127.0.0.1:9/token", "billing", SECRET)
    sync.close()
    sync.close()
    with pytest.raises(TokenError, match="closed"):  # was "fetching ... (RuntimeError)"
        sync.token()
    async_ = AsyncClientCredentials("http://127.0.0.1:9/token", "billing", SECRET)
    await async_.aclose()
    await async_.aclose()
    with pytest.raises(TokenError, match="closed"):
        await async_.atoken()
