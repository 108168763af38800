"""No token, secret or signing key in any log line, error, repr or metric label: every
credential is driven through success and failure with every logger at DEBUG, and
everything printable is searched for them."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import httpx
import prometheus_client
import pytest
from joserfc.jwk import OctKey

import kitsd
import kitsd.prometheus
from kitsd import auth, lb, sd
from tests.auth.conftest import TOKEN_KEY
from tests.auth.services import ProtectedService, basic_verifier, jwt_verifier
from tests.auth.tokenserver import TokenServer

HMAC = "hmac-signing-key-that-must-never-show-0123"
PASSWORD = "basic-Pa55word-never-shown"


def _printable(*things: Any) -> str:
    seen: list[str] = []
    for thing in things:
        seen.append(repr(thing))
        seen.append(str(thing))
        cause = getattr(thing, "__cause__", None)
        while cause is not None:
            seen.extend((repr(cause), str(cause)))
            cause = cause.__cause__
    return "\n".join(seen)


def test_nothing_secret_is_ever_printed(caplog: pytest.LogCaptureFixture,
                                        token_servers: Callable[..., TokenServer]) -> None:
    caplog.set_level(logging.DEBUG)
    server = token_servers(expiry=300)
    verify = jwt_verifier(OctKey.import_key(TOKEN_KEY), ["HS256"])
    revoked: set[str] = set()
    service = ProtectedService(lambda header: None if header in revoked else verify(header))
    basic_service = ProtectedService(basic_verifier("svc", PASSWORD))
    registry = sd.MemoryRegistry()
    registry.registrar("users", service.address).register()
    registry.registrar("basic", basic_service.address).register()
    metrics_registry = prometheus_client.CollectorRegistry()
    metrics = kitsd.prometheus.PrometheusObserver(metrics_registry)
    kitsd.core.observe.add_observer(metrics)
    errors: list[BaseException] = []
    credentials = auth.ClientCredentials(server.token_url, server.client_id,
                                         server.client_secret)
    wrong = auth.ClientCredentials(server.token_url, server.client_id, "wrong-" + PASSWORD)
    signer = auth.JWTSigner(HMAC, claims={"sub": "x"})
    basic = auth.BasicAuth("svc", PASSWORD)
    try:
        with httpx.Client(transport=kitsd.Transport(registry), auth=credentials) as client:
            assert client.get("http://users/").status_code == 200
            revoked.update(service.tokens)
            client.get("http://users/")  # 401, retried with a fresh token (maybe equal)
        with httpx.Client(transport=kitsd.Transport(registry), auth=basic) as client:
            assert client.get("http://basic/").status_code == 200
        with httpx.Client(transport=kitsd.Transport(registry), auth=signer) as client:
            assert client.get("http://users/").status_code == 401  # not the server's key
        endpointer: sd.Endpointer[Any] = sd.Endpointer(
            sd.FixedInstancer([service.address]),
            sd.http.factory("GET", "/", encode=lambda _r: {},
                            decode=lambda response: response.json(),
                            client_kwargs={"auth": wrong}))
        with endpointer:
            for failing in (wrong.token, lambda: lb.retry(1, 2.0, lb.RoundRobin(endpointer))(None)):
                try:
                    failing()
                except Exception as error:
                    errors.append(error)
    finally:
        kitsd.core.observe.remove_observer(metrics)
        credentials.close()
        wrong.close()
        service.close()
        basic_service.close()
    assert len(errors) == 2
    tokens = {header.split(" ", 1)[1] for header in service.tokens}
    assert tokens
    secrets = {server.client_secret, "wrong-" + PASSWORD, PASSWORD, HMAC, TOKEN_KEY,
               base64.b64encode(f"svc:{PASSWORD}".encode()).decode(), signer.token(), *tokens}
    text = "\n".join([
        caplog.text,
        "\n".join(record.getMessage() for record in caplog.records),
        _printable(credentials, wrong, signer, basic, *errors),
        prometheus_client.generate_latest(metrics_registry).decode(),
    ])
    assert "kitsd_attempts_total" in text  # the metrics were there to search
    assert "OAuth2 client" in text  # and the errors
    for secret in secrets:
        assert secret not in text
