"""kitsd.auth credentials as gRPC call metadata for sd.grpc, verified by a grpcio
server with joserfc (JWTSigner, OAuth2 client credentials) or by hand (Basic)."""

from __future__ import annotations

import asyncio
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
    """Answers ``sub`` of the verified credential, or aborts UNAUTHENTICATED."""

    def __init__(self, verify: Verify) -> None:
        self.verify = verify
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
        claims = self.verify(metadata.get("authorization", ""))
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
