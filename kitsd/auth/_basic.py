"""HTTP Basic authentication (go-kit's ``auth/basic``, client side)."""

from __future__ import annotations

import base64

from kitsd.auth._header import HeaderAuth
from kitsd.core.errors import MisuseError, clip

__all__ = ["BasicAuth"]


def _controls(text: str) -> bool:
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)


class BasicAuth(HeaderAuth):
    """``Authorization: Basic base64(username:password)`` on every request (an
    ``httpx.Auth``) or gRPC call (:func:`kitsd.auth.grpc_credentials`).  The
    password is never shown: ``repr()`` names the user only.  A 401 is the answer
    (retrying the same password is pointless)."""

    scheme = "Basic"
    retry_unauthorized = False

    def __init__(self, username: str, password: str) -> None:
        if not isinstance(username, str) or not username or ":" in username \
                or _controls(username):
            raise MisuseError("username must be a non-empty string without ':' or control "
                              "characters")
        if not isinstance(password, str):
            raise TypeError("password must be a string")
        if _controls(password):  # RFC 7617: never shown, not even which character
            raise MisuseError("password must not contain control characters")
        self.username = username
        self._token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")

    def token(self) -> str:
        return self._token

    def __repr__(self) -> str:
        return f"<kitsd.auth.BasicAuth user={clip(self.username, 40)!r}>"
