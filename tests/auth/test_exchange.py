"""The pure OAuth2 client credentials exchange (kitsd/auth/_exchange.py)."""

from __future__ import annotations

import base64
import json

import pytest

from kitsd.auth import TokenEndpointError
from kitsd.auth._exchange import Exchange
from kitsd.core.errors import MisuseError

SECRET = "p@ss word/+:&"


def _exchange(**given: object) -> Exchange:
    options: dict[str, object] = {"scope": None, "audience": None, "params": None,
                                  "auth_method": "client_secret_basic", **given}
    return Exchange("https://auth.example/token", "billing", SECRET, **options)  # type: ignore[arg-type]


def test_basic_request_encodes_id_and_secret_first() -> None:
    method, url, headers, form = _exchange(scope=["read", "write"], audience="api").request()
    assert (method, url) == ("POST", "https://auth.example/token")
    assert form == {"grant_type": "client_credentials", "scope": "read write", "audience": "api"}
    scheme, _, encoded = headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "billing:p%40ss+word%2F%2B%3A%26"


def test_post_request_carries_the_secret_in_the_form() -> None:
    _, _, headers, form = _exchange(auth_method="client_secret_post").request()
    assert "Authorization" not in headers
    assert form["client_id"] == "billing"
    assert form["client_secret"] == SECRET


@pytest.mark.parametrize(("answer", "token", "lifetime"), [
    ({"access_token": "t1", "token_type": "Bearer", "expires_in": 3600}, "t1", 3600.0),
    ({"access_token": "t2", "token_type": "bearer", "expires_in": "60"}, "t2", 60.0),
    ({"access_token": "t3"}, "t3", None),
])
def test_good_answers(answer: dict[str, object], token: str, lifetime: float | None) -> None:
    assert _exchange().read(200, json.dumps(answer).encode()) == (token, lifetime)


@pytest.mark.parametrize(("status", "body", "message"), [
    (401, b'{"error": "invalid_client", "error_description": "bad secret"}',
     "refused (401 invalid_client): bad secret"),
    (200, b'{"error": "invalid_scope"}', "refused (200 invalid_scope)"),
    (502, b"<html>bad gateway</html>", "the answer is not a JSON object"),
    (200, b'{"token_type": "Bearer"}', "no access_token"),
    (200, b'{"access_token": "x", "token_type": "mac"}', "is not Bearer"),
    (200, b'{"access_token": "x", "expires_in": -1}', "is not seconds"),
])
def test_bad_answers(status: int, body: bytes, message: str) -> None:
    with pytest.raises(TokenEndpointError, match=message.replace("(", r"\(").replace(")", r"\)")
                       ) as caught:
        _exchange().read(status, body)
    assert SECRET not in str(caught.value)
    assert str(caught.value).startswith("OAuth2 client 'billing' at https://auth.example/token: ")


def test_bad_arguments() -> None:
    with pytest.raises(MisuseError, match="token_url"):
        Exchange("ftp://x", "id", "s", scope=None, audience=None, params=None,
                 auth_method="client_secret_basic")
    with pytest.raises(MisuseError, match="auth_method"):
        _exchange(auth_method="private_key_jwt")
    with pytest.raises(MisuseError, match="grant_type"):
        _exchange(params={"grant_type": "password"})
    with pytest.raises(MisuseError, match="token_url") as caught:
        Exchange("user:hunter2@host/token", "id", "s", scope=None, audience=None,
                 params=None, auth_method="client_secret_basic")
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(Exchange("https://u:hunter2@auth/token", "id", "s",
                                          scope=None, audience=None, params=None,
                                          auth_method="client_secret_basic"))
