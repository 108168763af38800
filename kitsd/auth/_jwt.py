"""JWT signing, as go-kit's ``auth/jwt`` ``NewSigner``, on PyJWT (extra ``auth``).

A :class:`JWTSigner` signs a token with the claims you give plus ``iat`` and
``exp`` (``lifetime`` seconds); with ``cache=True`` (the default) one token serves
every call until shortly before it expires (:mod:`kitsd.auth._token`'s rule),
then one caller signs the next while the others go on using the current one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

try:
    import jwt
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(f"kitsd.auth.JWTSigner needs PyJWT: pip install 'kitsd[auth]' ({error})",
                      name="jwt") from error

from kitsd.auth._errors import TokenError
from kitsd.auth._header import HeaderAuth
from kitsd.auth._source import SingleFlight
from kitsd.auth._token import Token, refresh_point
from kitsd.core import validate
from kitsd.core.errors import MisuseError, clip

__all__ = ["ALGORITHMS", "JWTSigner"]

#: What :class:`JWTSigner` accepts (PyJWT's names; RS*/PS*/ES*/EdDSA need ``cryptography``).
ALGORITHMS = frozenset({"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
                        "PS512", "ES256", "ES384", "ES512", "EdDSA"})
_OWN_CLAIMS = ("iat", "exp")

Claims = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


class JWTSigner(HeaderAuth):
    """Signs JWTs (``Authorization: Bearer <jwt>``): an ``httpx.Auth``, and gRPC call
    credentials through :func:`kitsd.auth.grpc_credentials`.

    * ``key``: the HMAC secret (``str``/``bytes``) for HS*, else a private key (PEM
      ``str``/``bytes`` or a ``cryptography`` key object).  Checked at
      construction by signing once: a key that does not fit ``algorithm`` raises
      :class:`kitsd.core.errors.MisuseError`, which never shows the key.
    * ``claims``: a mapping, or a function returning one (called for each token);
      ``iat`` and ``exp`` are the signer's (``exp`` = ``iat`` + ``lifetime``;
      ``lifetime=None``: no ``exp``).  ``key_id`` goes in the ``kid`` header.
    * ``cache``: reuse a token until ``leeway`` seconds before its ``exp`` (at most a
      tenth of its lifetime early); ``False``: sign per call.

    Thread-safe; ``repr()`` names the algorithm only.  :meth:`token` raises
    :class:`kitsd.auth.TokenError` if signing fails (a ``claims`` function that
    raises, a claim that is not JSON).
    """

    def __init__(self, key: Any, *, algorithm: str = "HS256", claims: Claims | None = None,
                 lifetime: float | None = 300.0, cache: bool = True, leeway: float = 30.0,
                 key_id: str | None = None, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
            raise MisuseError(f"algorithm must be one of {', '.join(sorted(ALGORITHMS))}, "
                              f"got {clip(repr(algorithm), 40)}")
        if claims is not None and not (callable(claims) or isinstance(claims, Mapping)):
            raise TypeError("claims must be a mapping or a function returning one")
        if isinstance(claims, Mapping):
            owned = [name for name in _OWN_CLAIMS if name in claims]
            if owned:
                raise MisuseError(f"claims must not set {owned[0]!r}: the signer sets it "
                                  "(see lifetime)")
        validate.optional_seconds("lifetime", lifetime)
        validate.seconds("leeway", leeway, zero=True)
        validate.flag("cache", cache)
        if key_id is not None and not isinstance(key_id, str):
            raise TypeError("key_id must be a string")
        if not callable(clock):
            raise TypeError("clock must be a function returning seconds since the epoch")
        self.algorithm = algorithm
        self._key = key
        self._claims = claims
        self._lifetime = None if lifetime is None else float(lifetime)
        self._leeway = float(leeway)
        self._headers = {"kid": key_id} if key_id else None
        self._clock = clock
        try:
            jwt.encode({"probe": True}, key, algorithm=algorithm, headers=self._headers)
        except Exception as error:  # noqa: BLE001 - PyJWT and cryptography raise many kinds
            raise MisuseError(f"key does not fit algorithm {algorithm} "
                              f"({type(error).__name__})") from None
        self._flight = SingleFlight(self._signed, name=f"JWT signer ({algorithm})",
                                    wait=5.0) if cache else None

    def sign(self) -> str:
        """A newly signed token (never cached)."""
        return self._signed().value

    def _signed(self) -> Token:
        issued = self._clock()
        now = time.monotonic()
        try:
            given = self._claims() if callable(self._claims) else self._claims
        except Exception as error:  # noqa: BLE001 - the user's function; its message unseen
            raise TokenError(f"JWT signer ({self.algorithm})",
                             f"the claims function failed ({type(error).__name__})") from None
        payload = dict(given or {})
        if any(name in payload for name in _OWN_CLAIMS):
            raise MisuseError("claims must not set 'iat' or 'exp': the signer sets them")
        payload["iat"] = math.floor(issued)
        if self._lifetime is not None:
            payload["exp"] = math.floor(issued + self._lifetime)
        try:
            value = jwt.encode(payload, self._key, algorithm=self.algorithm,
                               headers=self._headers)
        except Exception as error:  # noqa: BLE001 - PyJWT and cryptography raise many kinds
            raise TokenError(f"JWT signer ({self.algorithm})",
                             f"signing failed ({type(error).__name__})") from None
        lifetime = None
        if self._lifetime is not None:
            # exp is whole seconds: the token lives until then, not a fraction longer
            lifetime = math.floor(issued + self._lifetime) - issued
        expires_at, refresh_at = refresh_point(now, lifetime, self._leeway)
        return Token(value, expires_at, refresh_at)

    def token(self) -> str:
        """The token to send now: the cached one, or a new one."""
        if self._flight is None:
            return self._signed().value
        return self._flight.token()

    def invalidate(self, token: str) -> None:
        if self._flight is not None:
            self._flight.invalidate(token)

    def __repr__(self) -> str:
        return f"<kitsd.auth.JWTSigner {self.algorithm}>"


JWTSigner.__module__ = "kitsd.auth"  # the name users import it by (kitsd.auth imports it lazily)
