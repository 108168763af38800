"""JWTSigner (PyJWT) verified by joserfc, as services do: HS256, RS256, ES256;
cached or per call; as httpx auth through sd.http and kitsd.Transport."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

import kitsd
from kitsd import auth, lb, sd
from kitsd.core.errors import MisuseError
from tests.auth.services import ProtectedService, jwt_verifier

HMAC = "hmac-secret-for-kitsd-tests-0123456789"


def _pem(private: Any) -> tuple[bytes, bytes]:
    return (private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
            private.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))


@pytest.fixture(scope="module", params=["HS256", "RS256", "ES256"])
def keys(request: pytest.FixtureRequest) -> tuple[str, Any, Any]:
    """``(algorithm, signing key for PyJWT, verifying key for joserfc)``."""
    if request.param == "HS256":
        return "HS256", HMAC, OctKey.import_key(HMAC)
    if request.param == "RS256":
        private, public = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return "RS256", private, RSAKey.import_key(public)
    private, public = _pem(ec.generate_private_key(ec.SECP256R1()))
    return "ES256", private, ECKey.import_key(public)


def test_signed_tokens_verify_with_another_library(keys: tuple[str, Any, Any]) -> None:
    algorithm, key, public = keys
    signer = auth.JWTSigner(key, algorithm=algorithm, claims={"sub": "billing", "aud": "users"},
                            lifetime=60, key_id="k1")
    token = jwt.decode(signer.token(), public, algorithms=[algorithm])
    assert token.header["kid"] == "k1"
    assert token.claims["sub"] == "billing"
    assert token.claims["exp"] - token.claims["iat"] == 60
    assert signer.token() == signer.token()  # cached
    assert algorithm in repr(signer)


def test_per_call_and_claims_function(keys: tuple[str, Any, Any]) -> None:
    algorithm, key, public = keys
    counter = iter(range(1000))
    signer = auth.JWTSigner(key, algorithm=algorithm, cache=False,
                            claims=lambda: {"sub": "billing", "n": next(counter)})
    first, second = (jwt.decode(signer.token(), public, algorithms=[algorithm]).claims
                     for _ in range(2))
    assert (first["n"], second["n"]) == (0, 1)


def test_cached_token_is_replaced_before_it_expires() -> None:
    signer = auth.JWTSigner(HMAC, lifetime=2, leeway=30)
    first = signer.token()
    deadline = time.monotonic() + 5
    while signer.token() == first:
        assert time.monotonic() < deadline, "never refreshed"
        time.sleep(0.05)
    claims = jwt.decode(first, OctKey.import_key(HMAC), algorithms=["HS256"]).claims
    assert time.time() < claims["exp"] + 0.5  # replaced before (or as) the first one expired


def test_bad_arguments_never_show_the_key() -> None:
    private, _ = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(MisuseError, match="key does not fit algorithm ES256") as caught:
        auth.JWTSigner(private, algorithm="ES256")
    assert b"PRIVATE" not in str(caught.value).encode()
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    with pytest.raises(MisuseError, match="algorithm must be one of"):
        auth.JWTSigner(HMAC, algorithm="none")
    with pytest.raises(MisuseError, match="must not set 'exp'"):
        auth.JWTSigner(HMAC, claims={"exp": 1})
    with pytest.raises(MisuseError, match="lifetime"):
        auth.JWTSigner(HMAC, lifetime=0)
    assert HMAC not in repr(auth.JWTSigner(HMAC))


def test_claims_function_errors_are_token_errors() -> None:
    def broken() -> dict[str, Any]:
        raise ValueError("claims for user hunter2")

    with pytest.raises(auth.TokenError, match="the claims function failed") as caught:
        auth.JWTSigner(HMAC, claims=broken).token()
    assert "hunter2" not in str(caught.value)


def test_through_sd_http_and_the_transport() -> None:
    signer = auth.JWTSigner(HMAC, claims={"sub": "billing"})
    with ProtectedService(jwt_verifier(OctKey.import_key(HMAC), ["HS256"])) as service:
        factory: Any = sd.http.factory("GET", "/", encode=lambda _request: {},
                                  decode=lambda response: response.json(),
                                  client_kwargs={"auth": signer})
        with sd.Endpointer(sd.FixedInstancer([service.address]), factory) as endpointer:
            assert lb.retry(2, 5.0, lb.RoundRobin(endpointer))(None)["sub"] == "billing"
        registry = sd.MemoryRegistry()
        registry.registrar("users", service.address).register()
        with httpx.Client(transport=kitsd.Transport(registry), auth=signer) as client:
            assert client.get("http://users/").json()["sub"] == "billing"
        with httpx.Client(transport=kitsd.Transport(registry)) as client:
            assert client.get("http://users/").status_code == 401
        assert service.accepted == 2
        assert service.refused == 1


async def test_async_through_the_transport() -> None:
    signer = auth.JWTSigner(HMAC, claims={"sub": "billing"})
    with ProtectedService(jwt_verifier(OctKey.import_key(HMAC), ["HS256"])) as service:
        registry = sd.MemoryRegistry()
        registry.registrar("users", service.address).register()
        async with httpx.AsyncClient(transport=kitsd.AsyncTransport(registry),
                                     auth=signer) as client:
            assert (await client.get("http://users/")).json()["sub"] == "billing"
