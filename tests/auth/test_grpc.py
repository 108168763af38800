"""kitsd.auth credentials as gRPC call metadata for sd.grpc, verified by a grpcio
server with joserfc (JWTSigner, OAuth2 client credentials) or by hand (Basic)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from joserfc.jwk import OctKey

from kitsd import auth, lb, sd
from tests.auth.conftest import TOKEN_KEY
from tests.auth.services import Verify, basic_verifier, jwt_verifier
from tests.auth.tokenserver import TokenServer

METHOD = "/test.Who/Am"
HMAC = "hmac-secret-for-kitsd-grpc-tests-0123456"


class WhoServer:
    """Answers ``sub`` of the verified credential, or aborts UNAUTHENTICATED.
    ``accepted`` and ``refused`` count calls; ``tokens`` are the credentials accepted;
    a credential in ``revoked`` is refused (revoked before its expiry)."""

    def __init__(self, verify: Verify) -> None:
        self.verify = verify
        self.accepted = 0
        self.refused = 0
        self.tokens: set[str] = set()
        self.revoked: set[str] = set()
        self._lock = threading.Lock()
        self._pool = futures.ThreadPoolExecutor(max_workers=4)
        self.server = grpc.server(self._pool)
        handler = grpc.method_handlers_generic_handler(
            "test.Who", {"Am": grpc.unary_unary_rpc_method_handler(self._call)})
        self.server.add_generic_rpc_handlers((handler,))
        port = self.server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials())
        self.address = f"127.0.0.1:{port}"
        self.server.start()

    def _call(self, request: bytes, context: Any) -> bytes:
        metadata = dict(context.invocation_metadata())
        authorization = metadata.get("authorization", "")
        with self._lock:
            claims = None if authorization in self.revoked else self.verify(authorization)
            if claims is None:
                self.refused += 1
            else:
                self.accepted += 1
                self.tokens.add(authorization)
        if claims is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "who are you?")
            raise AssertionError("abort raises")
        audience = claims.get("aud")
        return str(claims.get("sub") or (audience[0] if isinstance(audience, list)
                                         else audience)).encode()

    def close(self) -> None:
        self.server.stop(grace=None).wait(5)
        self._pool.shutdown(wait=True)


@pytest.fixture
def who() -> Iterator[Callable[[Verify], WhoServer]]:
    made: list[WhoServer] = []

    def start(verify: Verify) -> WhoServer:
        made.append(WhoServer(verify))
        return made[-1]

    yield start
    for server in made:
        server.close()


def _credentials(credential: auth.HeaderAuth) -> Any:
    return auth.grpc_channel_credentials(credential, grpc.local_channel_credentials())


def test_jwt_as_call_metadata(who: Callable[[Verify], WhoServer]) -> None:
    server = who(jwt_verifier(OctKey.import_key(HMAC), ["HS256"]))
    signer = auth.JWTSigner(HMAC, claims={"sub": "billing"})
    factory = sd.grpc.factory(METHOD, credentials=_credentials(signer))
    with sd.Endpointer(sd.FixedInstancer([server.address]), factory) as endpointer:
        assert lb.retry(2, 5.0, lb.RoundRobin(endpointer))(b"") == b"billing"
    unauthenticated = sd.grpc.factory(METHOD, credentials=grpc.local_channel_credentials())
    with sd.Endpointer(sd.FixedInstancer([server.address]), unauthenticated) as endpointer, \
            pytest.raises(sd.grpc.GRPCStatusError, match="UNAUTHENTICATED"):
        endpointer.endpoints()[0](b"")


def test_oauth2_and_basic_as_call_metadata(who: Callable[[Verify], WhoServer],
                                           token_servers: Callable[..., TokenServer]) -> None:
    token_server = token_servers(expiry=300)
    server = who(jwt_verifier(OctKey.import_key(TOKEN_KEY), ["HS256"]))
    with auth.ClientCredentials(token_server.token_url, token_server.client_id,
                                token_server.client_secret) as credentials:
        factory = sd.grpc.factory(METHOD, credentials=_credentials(credentials))
        with sd.Endpointer(sd.FixedInstancer([server.address]), factory) as endpointer:
            call = lb.retry(2, 5.0, lb.RoundRobin(endpointer))
            assert [call(b"") for _ in range(5)] == [token_server.client_id.encode()] * 5
    assert token_server.requests() == 1
    basic = who(basic_verifier("svc", "pa55"))
    factory = sd.grpc.factory(METHOD, credentials=_credentials(auth.BasicAuth("svc", "pa55")))
    with sd.Endpointer(sd.FixedInstancer([basic.address]), factory) as endpointer:
        assert endpointer.endpoints()[0](b"") == b"svc"


async def test_grpc_aio_channel(who: Callable[[Verify], WhoServer]) -> None:
    server = who(jwt_verifier(OctKey.import_key(HMAC), ["HS256"]))
    signer = auth.JWTSigner(HMAC, claims={"sub": "async"})
    factory = sd.grpc.async_factory(METHOD, credentials=_credentials(signer))
    async with sd.Endpointer(sd.FixedInstancer([server.address]), factory) as endpointer:
        answers = await asyncio.gather(*(lb.retry_async(2, 5.0, lb.RoundRobin(endpointer))(b"")
                                         for _ in range(10)))
    assert answers == [b"async"] * 10


def test_a_failing_credential_fails_the_call_without_secrets(
        who: Callable[[Verify], WhoServer], token_servers: Callable[..., TokenServer]) -> None:
    token_server = token_servers()
    server = who(jwt_verifier(OctKey.import_key(TOKEN_KEY), ["HS256"]))
    with auth.ClientCredentials(token_server.token_url, token_server.client_id,
                                "wrong-Secret-123") as credentials:
        factory = sd.grpc.factory(METHOD, credentials=_credentials(credentials))
        with sd.Endpointer(sd.FixedInstancer([server.address]), factory) as endpointer, \
                pytest.raises(sd.grpc.GRPCStatusError) as caught:
            endpointer.endpoints()[0](b"")
    assert "wrong-Secret-123" not in str(caught.value)


def test_async_only_credentials_are_refused() -> None:
    credentials = auth.AsyncClientCredentials("http://oauth/token", "id", "secret")
    with pytest.raises(TypeError, match="asynchronous"):
        auth.grpc_credentials(credentials)
    with pytest.raises(TypeError, match=r"kitsd\.auth credential"):
        auth.grpc_credentials(object())  # type: ignore[arg-type]


# A call refused UNAUTHENTICATED (a token revoked before its expiry) is sent once more
# with a fresh token, the gRPC twin of an HTTP 401; the refused token is dropped once
# for every caller (one token request), and a second UNAUTHENTICATED is the answer.

CALLERS = 200


def _revoke_current(server: WhoServer, token_server: TokenServer, fetched_at: float) -> str:
    """Revoke the one token ``server`` accepted so far, once the clock's second has
    turned since it was fetched: go-oauth2 puts no ``jti`` in its JWTs and ``exp`` is
    whole seconds, so a token fetched in the same second would be the same string
    (revoked too).  Polls the clock, not a synchronisation."""
    assert token_server.requests() == 1
    [revoked] = server.tokens
    while int(time.time()) <= int(fetched_at):
        time.sleep(0.02)
    server.revoked.add(revoked)
    return revoked


def test_unauthenticated_is_retried_once_with_one_fresh_token_for_200_threads(
        who: Callable[[Verify], WhoServer], token_servers: Callable[..., TokenServer],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token_server = token_servers(expiry=300)
    server = who(jwt_verifier(OctKey.import_key(TOKEN_KEY), ["HS256"]))
    with auth.ClientCredentials(token_server.token_url, token_server.client_id,
                                token_server.client_secret) as credentials:
        factory = sd.grpc.factory(METHOD, credentials=_credentials(credentials), timeout=60)
        with sd.Endpointer(sd.FixedInstancer([server.address]), factory) as endpointer:
            endpoint = endpointer.endpoints()[0]
            assert endpoint(b"") == token_server.client_id.encode()
            revoked = _revoke_current(server, token_server, time.time())
            barrier = threading.Barrier(CALLERS)
            answers: list[bytes] = []
            failures: list[BaseException] = []

            def call() -> None:
                barrier.wait(timeout=60)
                try:
                    answers.append(endpoint(b""))
                except Exception as error:  # counted, then asserted
                    failures.append(error)

            threads = [threading.Thread(target=call) for _ in range(CALLERS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
    assert failures == []
    assert answers == [token_server.client_id.encode()] * CALLERS
    assert token_server.requests() == 2  # the first token and one fresh one, not 200
    assert server.tokens - {revoked}  # a fresh token was accepted
    assert 1 <= server.refused <= CALLERS  # each caller refused at most once
    assert server.accepted == 1 + CALLERS
    assert "refused UNAUTHENTICATED" in caplog.text  # logged, without a secret or token
    for secret in (token_server.client_secret, *(t.partition(" ")[2] for t in server.tokens)):
        assert secret not in caplog.text


async def test_unauthenticated_is_retried_once_on_grpc_aio_for_200_tasks(
        who: Callable[[Verify], WhoServer], token_servers: Callable[..., TokenServer]) -> None:
    token_server = token_servers(expiry=300)
    server = who(jwt_verifier(OctKey.import_key(TOKEN_KEY), ["HS256"]))
    with auth.ClientCredentials(token_server.token_url, token_server.client_id,
                                token_server.client_secret) as credentials:
        factory = sd.grpc.async_factory(METHOD, credentials=_credentials(credentials),
                                        timeout=60)
        async with sd.Endpointer(sd.FixedInstancer([server.address]), factory) as endpointer:
            endpoint = endpointer.endpoints()[0]
            assert await endpoint(b"") == token_server.client_id.encode()
            revoked = _revoke_current(server, token_server, time.time())
            outcomes = await asyncio.gather(*(endpoint(b"") for _ in range(CALLERS)),
                                            return_exceptions=True)
    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    assert outcomes == [token_server.client_id.encode()] * CALLERS
    assert token_server.requests() == 2
    assert server.tokens - {revoked}  # a fresh token was accepted
    assert 1 <= server.refused <= CALLERS  # each caller refused at most once
    assert server.accepted == 1 + CALLERS


def test_a_second_unauthenticated_is_the_answer(
        who: Callable[[Verify], WhoServer], token_servers: Callable[..., TokenServer]) -> None:
    token_server = token_servers(expiry=300)
    server = who(lambda authorization: None)  # refuses every token
    with auth.ClientCredentials(token_server.token_url, token_server.client_id,
                                token_server.client_secret) as credentials:
        factory = sd.grpc.factory(METHOD, credentials=_credentials(credentials), timeout=30)
        with sd.Endpointer(sd.FixedInstancer([server.address]), factory) as endpointer:
            with pytest.raises(sd.grpc.GRPCStatusError) as caught:
                endpointer.endpoints()[0](b"")
            tokens = token_server.requests()
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert (server.refused, tokens) == (2, 2)  # once more with a fresh token, no loop
    assert token_server.client_secret not in repr(caught.value) + str(caught.value)


async def test_a_second_unauthenticated_is_the_answer_on_grpc_aio(
        who: Callable[[Verify], WhoServer], token_servers: Callable[..., TokenServer]) -> None:
    token_server = token_servers(expiry=300)
    server = who(lambda authorization: None)
    with auth.ClientCredentials(token_server.token_url, token_server.client_id,
                                token_server.client_secret) as credentials:
        factory = sd.grpc.async_factory(METHOD, credentials=_credentials(credentials),
                                        timeout=30)
        async with sd.Endpointer(sd.FixedInstancer([server.address]), factory) as endpointer:
            with pytest.raises(sd.grpc.GRPCStatusError) as caught:
                await endpointer.endpoints()[0](b"")
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert (server.refused, token_server.requests()) == (2, 2)


def test_basic_auth_and_other_statuses_are_not_resent(
        who: Callable[[Verify], WhoServer]) -> None:
    refusing = who(lambda authorization: None)
    basic = _credentials(auth.BasicAuth("svc", "pa55"))
    factory = sd.grpc.factory(METHOD, credentials=basic, timeout=30)
    with sd.Endpointer(sd.FixedInstancer([refusing.address]), factory) as endpointer, \
            pytest.raises(sd.grpc.GRPCStatusError, match="UNAUTHENTICATED"):
        endpointer.endpoints()[0](b"")
    assert refusing.refused == 1  # a password cannot become fresh: the answer as it is
    signer = auth.JWTSigner(HMAC, claims={"sub": "billing"})
    factory = sd.grpc.factory("/test.Who/Missing", credentials=_credentials(signer),
                              timeout=30)
    with sd.Endpointer(sd.FixedInstancer([refusing.address]), factory) as endpointer, \
            pytest.raises(sd.grpc.GRPCStatusError, match="UNIMPLEMENTED"):
        endpointer.endpoints()[0](b"")


def test_channel_credentials_outside_sd_grpc_still_send_the_token(
        who: Callable[[Verify], WhoServer]) -> None:
    server = who(jwt_verifier(OctKey.import_key(HMAC), ["HS256"]))
    signer = auth.JWTSigner(HMAC, claims={"sub": "plain"})
    with grpc.secure_channel(server.address, _credentials(signer)) as channel:
        assert channel.unary_unary(METHOD)(b"", timeout=30) == b"plain"
