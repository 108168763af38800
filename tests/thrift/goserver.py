"""The real Thrift server of sd.thrift's tests: Apache Thrift's Go library serving
``goserver/store.thrift`` (``goserver/main.go``), built here when missing.

The build: Debian's ``thrift-compiler`` generates the Go code from the IDL (it is
installed with ``apt-get`` when ``thrift`` is missing), the Go module proxy
serves ``github.com/apache/thrift`` at the compiler's version (0.17.0 on Debian
12), and ``go build`` makes one static binary.  It is cached outside the
repository, like Consul's, in ``${KITSD_CACHE:-~/.cache/kitsd}/thrift-store-server-<hash>``
(the hash covers the sources and the versions), so the first run takes a few
seconds of compiling and later runs none.  ``python -m tests.thrift.goserver``
builds it and prints its path.

:class:`StoreServer` runs one: it listens on a free loopback port it picks
itself and says which (``listening HOST:PORT``), so there is no port race.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from kitsd.compose.gobuild import GoBuildError, cached_binary, run, say

SOURCE = Path(__file__).resolve().parent / "goserver"
IDL = SOURCE / "store.thrift"
MAIN = SOURCE / "main.go"
MODULE = "kitsd.invalid/thriftserver"


def thrift_compiler() -> tuple[str, str]:
    """``(path, version)`` of the Thrift compiler, installing Debian's when missing."""
    path = shutil.which("thrift")
    if path is None:
        say("thrift compiler missing: apt-get install -y thrift-compiler")
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            run([*sudo, "apt-get", "install", "-y", "-q", "thrift-compiler"], Path("/"), env)
        except GoBuildError:
            run([*sudo, "apt-get", "update", "-q"], Path("/"), env)
            run([*sudo, "apt-get", "install", "-y", "-q", "thrift-compiler"], Path("/"), env)
        path = shutil.which("thrift")
        if path is None:
            raise GoBuildError("thrift-compiler installed but no `thrift` on PATH")
    match = re.search(r"(\d+\.\d+\.\d+)", run([path, "--version"], Path("/")))
    if match is None:
        raise GoBuildError("cannot read the thrift compiler's version")
    return path, match.group(1)


def binary() -> Path:
    """The server binary, built first if it is not cached yet."""
    compiler, version = thrift_compiler()

    def generate(root: Path) -> None:  # the Go code of the IDL, beside main.go
        (root / "gen-go").mkdir()
        run([compiler, "--gen", f"go:package_prefix={MODULE}/gen-go/", "-out", "gen-go",
             IDL.name], root)
        shutil.rmtree(root / "gen-go" / "store" / "store-remote", ignore_errors=True)

    return cached_binary(
        "thrift-store-server", sources=[IDL, MAIN],
        requires={"github.com/apache/thrift": f"v{version}"}, module=MODULE, key=[b"build 1"],
        describe=f"the Go Thrift test server (thrift {version}, "
                 f"github.com/apache/thrift v{version})", prepare=generate)


class StoreServer:
    """One Go Thrift server process.  ``.address`` is ``host:port``; :meth:`kill`
    (SIGKILL), :meth:`pause` / :meth:`resume` (SIGSTOP / SIGCONT: a hung
    instance whose kernel still accepts connections), :meth:`close`."""

    def __init__(self, path: Path, *, transport: str = "buffered", protocol: str = "binary",
                 listen: str = "127.0.0.1:0") -> None:
        self.transport = transport
        self.protocol = protocol
        self.process = subprocess.Popen(
            [str(path), "-listen", listen, "-transport", transport, "-protocol", protocol],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            self.address = self._listening()
        except BaseException:
            self.close()
            raise

    def _listening(self, timeout: float = 20.0) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, left))
            if not ready:
                raise RuntimeError("the Thrift test server did not say where it listens")
            chunk = os.read(self.process.stdout.fileno(), 1)
            if not chunk:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"the Thrift test server exited: {err}")
            line += chunk
        return line.decode().split()[1]

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
        self.kill()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


if __name__ == "__main__":
    print(binary())
