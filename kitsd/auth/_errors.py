"""kitsd.auth's errors.  None of them ever holds a token, a secret or a key::

    KitsdError
    ├── MisuseError                    a bad argument (named; its value is never shown)
    └── AuthError                      authentication could not be done
        └── TokenError                 no token could be had (``.source`` names the source)
            └── TokenEndpointError     the token endpoint refused: ``.status_code``,
                                       ``.error`` (the OAuth2 error code), ``.description``
"""

from __future__ import annotations

from kitsd.core.errors import KitsdError, clip

__all__ = ["AuthError", "TokenEndpointError", "TokenError"]


class AuthError(KitsdError):
    """Authentication could not be done."""


class TokenError(AuthError):
    """No token could be had from ``.source`` (a description such as
    ``"OAuth2 client 'billing' at http://oauth/token"``); the cause is chained."""

    def __init__(self, source: str, what: str) -> None:
        super().__init__(f"{source}: {what}")
        self.source = source


class TokenEndpointError(TokenError):
    """The token endpoint answered with an error: ``.status_code`` (``None`` when it
    answered 2xx without a usable token), ``.error`` (``"invalid_client"``, ...) and
    ``.description`` as it sent them (clipped)."""

    def __init__(self, source: str, status_code: int | None, error: str | None,
                 description: str | None) -> None:
        what = f"the token endpoint refused ({status_code or 'no token'}"
        what += f" {clip(error, 60)})" if error else ")"
        if description:
            what += f": {clip(description, 200)}"
        super().__init__(source, what)
        self.status_code = status_code
        self.error = error
        self.description = description
