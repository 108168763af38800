"""The real OAuth2 token endpoint of kitsd.auth's tests: go-oauth2/oauth2 (a Go
OAuth2 server library) serving the client credentials grant with HS256 JWT access
tokens (``tokenserver/main.go``), built here when missing and cached in
``${KITSD_CACHE:-~/.cache/kitsd}`` like the Thrift test server
(:mod:`tests.thrift.goserver`).  ``python -m tests.auth.tokenserver`` builds it.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from kitsd.compose.gobuild import cached_binary
from tests.thrift.goserver import StoreServer

MAIN = Path(__file__).resolve().parent / "tokenserver" / "main.go"
REQUIRES = {"github.com/go-oauth2/oauth2/v4": "v4.5.4"}  # the describe line names it
MODULE = "kitsd.invalid/tokenserver"


def binary() -> Path:
    """The token server binary, built first if it is not cached yet."""
    return cached_binary("oauth2-token-server", sources=[MAIN], requires=REQUIRES,
                         module=MODULE, describe="the OAuth2 token test server (go-oauth2 v4.5.4)")


class TokenServer(StoreServer):
    """One token server process: ``.address``, ``.token_url``, :meth:`requests`
    (token requests so far), ``.client_id`` / ``.client_secret`` / ``.key``."""

    def __init__(self, path: Path, *, client_id: str = "kitsd-test",
                 client_secret: str = "s3cret-client-Secret-42", key: str = "sIgNiNg-KeY-7",
                 expiry: float = 2.0, delay: float = 0.0) -> None:
        import subprocess

        self.client_id, self.client_secret, self.key = client_id, client_secret, key
        self.process = subprocess.Popen(
            [str(path), "-listen", "127.0.0.1:0", "-client-id", client_id, "-client-secret",
             client_secret, "-key", key, "-expiry", f"{expiry}s", "-delay", f"{delay}s"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            self.address = self._listening()
        except BaseException:
            self.close()
            raise
        self.token_url = f"http://{self.address}/token"

    def requests(self) -> int:
        with urllib.request.urlopen(f"http://{self.address}/requests", timeout=5) as answer:
            return int(answer.read())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


if __name__ == "__main__":
    print(binary())
