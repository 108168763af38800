"""Fixtures of kitsd.auth's tests: the Go OAuth2 token server and verifying services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OctKey

from kitsd.compose.gobuild import GoBuildError
from tests.auth.services import ProtectedService, jwt_verifier
from tests.auth.tokenserver import TokenServer, binary

#: The token server's signing key (HS256): 32 bytes, as RFC 7518 asks.
TOKEN_KEY = "token-server-signing-key-0123456"


@pytest.fixture(scope="session")
def token_server_binary() -> Path:
    try:
        return binary()
    except GoBuildError as error:
        pytest.fail(f"could not build the OAuth2 token test server: {error}")


@pytest.fixture
def token_servers(token_server_binary: Path) -> Iterator[Callable[..., TokenServer]]:
    """``start(expiry=2.0, delay=0.0)`` starts a token server; all stop after the test."""
    started: list[TokenServer] = []

    def start(**options: Any) -> TokenServer:
        server = TokenServer(token_server_binary, key=TOKEN_KEY, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def oauth_services() -> Iterator[Callable[[int], list[ProtectedService]]]:
    """``start(n)``: n services accepting the token server's JWTs (verified by joserfc)."""
    started: list[ProtectedService] = []
    verify = jwt_verifier(OctKey.import_key(TOKEN_KEY), ["HS256"])

    def start(count: int) -> list[ProtectedService]:
        new = [ProtectedService(verify) for _ in range(count)]
        started.extend(new)
        return new

    yield start
    for service in started:
        service.close()
