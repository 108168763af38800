"""The OAuth2 client credentials exchange (RFC 6749 §4.4), without I/O: the token
request to send, and what the token endpoint's answer means.

* The request: ``POST token_url`` with ``grant_type=client_credentials`` (and
  ``scope``, ``audience`` and any extra parameters) as a form; the client
  authenticates with HTTP Basic (``client_secret_basic``, RFC 6749 §2.3.1: id and
  secret form-encoded first) or with ``client_id`` / ``client_secret`` in the
  form (``client_secret_post``).
* The answer: 200 with a JSON object holding a string ``access_token``, a
  ``token_type`` of ``Bearer`` (or none), and ``expires_in`` seconds (absent or
  ``0``: the token does not expire, and only a 401 replaces it -- ``0`` as
  Go's ``golang.org/x/oauth2`` reads it); anything else is a
  :class:`kitsd.auth.TokenEndpointError` carrying the endpoint's ``error`` and
  ``error_description`` -- never the request, which holds the secret.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from typing import Literal
from urllib.parse import quote, urlsplit

from kitsd.auth._errors import TokenEndpointError
from kitsd.core.errors import MisuseError, clip, shown_value

__all__ = ["AuthMethod", "Exchange"]

AuthMethod = Literal["client_secret_basic", "client_secret_post"]


def _form_encoded(text: str) -> str:
    return quote(text, safe="").replace("%20", "+")


def _check_url(token_url: object) -> str:
    """``token_url`` if it is an http(s) URL with a host and no whitespace or control
    characters; raises :class:`MisuseError` (showing it redacted) otherwise."""
    problem = not isinstance(token_url, str) or any(ord(char) <= 0x20 or char == "\x7f"
                                                    for char in token_url)
    if not problem:
        assert isinstance(token_url, str)  # noqa: S101 - for mypy
        try:
            parts = urlsplit(token_url)
            problem = parts.scheme not in ("http", "https") or not parts.hostname
            _ = parts.port  # a port that is not a number raises
        except ValueError:
            problem = True
    if problem:
        raise MisuseError(f"token_url must be an http(s) URL with a host, got "
                          f"{shown_value(token_url)}")
    return token_url  # type: ignore[return-value]


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    return value


def _check_scope(scope: object) -> str | None:
    if scope is None or isinstance(scope, str):
        return scope
    if isinstance(scope, Sequence) and all(isinstance(item, str) and item and " " not in item
                                           for item in scope):
        return " ".join(scope)
    raise TypeError("scope must be a string or a sequence of scope strings (each without "
                    "spaces)")


class Exchange:
    """One client's token request and the reading of its answers.  Immutable;
    ``repr()`` shows the client id and the URL (user information redacted)."""

    __slots__ = ("_form", "_headers", "client_id", "name", "token_url")

    def __init__(self, token_url: object, client_id: object, client_secret: object, *,
                 scope: str | Sequence[str] | None, audience: str | None,
                 params: Mapping[str, str] | None, auth_method: object) -> None:
        token_url = _check_url(token_url)
        if not isinstance(client_id, str) or not client_id:
            raise MisuseError("client_id must be a non-empty string")
        if not isinstance(client_secret, str):
            raise TypeError("client_secret must be a string")
        if auth_method not in ("client_secret_basic", "client_secret_post"):
            raise MisuseError("auth_method must be 'client_secret_basic' or 'client_secret_post'")
        form: dict[str, str] = {"grant_type": "client_credentials"}
        scopes = _check_scope(scope)
        if scopes is not None:
            form["scope"] = scopes
        if audience is not None:
            form["audience"] = _check_text("audience", audience)
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping of strings, not {type(params).__name__}")
        for key, value in (params or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("params must map strings to strings")
            if key in ("grant_type", "client_id", "client_secret"):
                raise MisuseError(f"params must not set {clip(repr(key), 40)}")
            if key in form:
                raise MisuseError(f"params must not set {clip(repr(key), 40)}: "
                                  f"give it as {key}=")
            form[key] = value
        headers = {"Accept": "application/json"}
        if auth_method == "client_secret_basic":
            pair = f"{_form_encoded(client_id)}:{_form_encoded(client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = client_id
            form["client_secret"] = client_secret
        self.token_url = token_url
        self.client_id = client_id
        self.name = f"OAuth2 client {clip(client_id, 60)!r} at {shown_value(token_url)[1:-1]}"
        self._form = form
        self._headers = headers

    def request(self) -> tuple[str, str, dict[str, str], dict[str, str]]:
        """``(method, url, headers, form)`` of the token request.  The headers and the
        form may hold the secret: send them, never log them."""
        return "POST", self.token_url, dict(self._headers), dict(self._form)

    def read(self, status: int, body: bytes) -> tuple[str, float | None]:
        """``(access_token, expires_in seconds or None)`` from the endpoint's answer;
        raises :class:`TokenEndpointError` for anything else."""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nesting too deep
            document = None
        if not isinstance(document, dict):
            raise TokenEndpointError(self.name, status, None,
                                     "the answer is not a JSON object")
        if status != 200 or "error" in document:
            error = document.get("error")
            description = document.get("error_description")
            raise TokenEndpointError(self.name, status,
                                     error if isinstance(error, str) else None,
                                     description if isinstance(description, str) else None)
        token = document.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenEndpointError(self.name, None, None, "the answer has no access_token")
        kind = document.get("token_type", "Bearer")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            raise TokenEndpointError(self.name, None, None,
                                     f"token_type {clip(repr(kind), 30)} is not Bearer")
        expires = document.get("expires_in")
        if isinstance(expires, str) and expires.strip().isdigit():
            expires = int(expires)
        if expires is None or (expires == 0 and not isinstance(expires, bool)):
            return token, None
        if (isinstance(expires, bool) or not isinstance(expires, int | float)
                or not math.isfinite(expires) or expires < 0):
            raise TokenEndpointError(self.name, None, None,
                                     f"expires_in {clip(repr(expires), 30)} is not seconds")
        return token, float(expires)

    def __repr__(self) -> str:
        return f"<{self.name}>"
