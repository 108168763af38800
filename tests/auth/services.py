"""Services that check identity, for kitsd.auth's tests: they verify JWTs with
joserfc -- another library than the signers (PyJWT in kitsd.auth, golang-jwt in the
Go token server) -- and Basic credentials, and count what they accepted and refused.

:class:`ProtectedService` is an HTTP service on a free loopback port (stdlib
``ThreadingHTTPServer``: its threads stop with :meth:`close`); ``GET /`` answers
200 with the token's ``sub`` / ``aud`` and the instance, or 401.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Collection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from joserfc import jwt
from joserfc.errors import JoseError

Verify = Callable[[str], dict[str, Any] | None]


def jwt_verifier(key: Any, algorithms: Collection[str], *, leeway: int = 1) -> Verify:
    """``verify(authorization) -> claims or None`` for ``Bearer <jwt>`` signed with
    ``key`` (a joserfc key), its ``exp`` required and checked with ``leeway``
    seconds (JWT ``exp`` is whole seconds)."""
    registry = jwt.JWTClaimsRegistry(leeway=leeway, exp={"essential": True})

    def verify(authorization: str) -> dict[str, Any] | None:
        scheme, _, value = authorization.partition(" ")
        if scheme != "Bearer" or not value:
            return None
        try:
            token = jwt.decode(value, key, algorithms=list(algorithms))
            registry.validate(token.claims)
        except (JoseError, ValueError):
            return None
        return dict(token.claims)

    return verify


def basic_verifier(username: str, password: str) -> Verify:
    expected = base64.b64encode(f"{username}:{password}".encode()).decode()

    def verify(authorization: str) -> dict[str, Any] | None:
        return {"sub": username} if authorization == f"Basic {expected}" else None

    return verify


class ProtectedService:
    """An HTTP instance that answers 200 only to verified requests.  ``accepted`` and
    ``refused`` count requests; ``tokens`` is the set of credentials it accepted."""

    def __init__(self, verify: Verify) -> None:
        self.verify = verify
        self.accepted = 0
        self.refused = 0
        self.tokens: set[str] = set()
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 2.0

            def do_GET(self) -> None:
                authorization = self.headers.get("Authorization", "")
                claims = service.verify(authorization)
                with service._lock:
                    if claims is None:
                        service.refused += 1
                    else:
                        service.accepted += 1
                        service.tokens.add(authorization)
                status = 401 if claims is None else 200
                body = json.dumps({"instance": service.address, **(claims or {})}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.block_on_close = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="protected",
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
