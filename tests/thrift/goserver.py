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

import fcntl
import hashlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

SOURCE = Path(__file__).resolve().parent / "goserver"
IDL = SOURCE / "store.thrift"
MAIN = SOURCE / "main.go"
MODULE = "kitsd.invalid/thriftserver"


class BuildError(RuntimeError):
    """The server could not be built; the message says which step and its output."""


def _say(line: str) -> None:
    print(f"[kitsd-test-server] {line}", file=sys.stderr, flush=True)


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=900, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise BuildError(f"{' '.join(command)} failed ({result.returncode}):\n{tail}")
    return result.stdout + result.stderr


def thrift_compiler() -> tuple[str, str]:
    """``(path, version)`` of the Thrift compiler, installing Debian's when missing."""
    path = shutil.which("thrift")
    if path is None:
        _say("thrift compiler missing: apt-get install -y thrift-compiler")
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            _run([*sudo, "apt-get", "install", "-y", "-q", "thrift-compiler"], Path("/"), env)
        except BuildError:
            _run([*sudo, "apt-get", "update", "-q"], Path("/"), env)
            _run([*sudo, "apt-get", "install", "-y", "-q", "thrift-compiler"], Path("/"), env)
        path = shutil.which("thrift")
        if path is None:
            raise BuildError("thrift-compiler installed but no `thrift` on PATH")
    match = re.search(r"(\d+\.\d+\.\d+)", _run([path, "--version"], Path("/")))
    if match is None:
        raise BuildError("cannot read the thrift compiler's version")
    return path, match.group(1)


def _go() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go"
                                   if Path("/usr/local/go/bin/go").exists() else None)
    if found is None:
        raise BuildError("go is not installed (the Go toolchain builds the test server)")
    return found


def binary() -> Path:
    """The server binary, built first if it is not cached yet."""
    compiler, version = thrift_compiler()
    digest = hashlib.sha256()
    for part in (IDL.read_bytes(), MAIN.read_bytes(), version.encode(), b"build 1"):
        digest.update(part)
    cache = Path(os.environ.get("KITSD_CACHE") or Path.home() / ".cache" / "kitsd")
    target = cache / f"thrift-store-server-{digest.hexdigest()[:12]}" / "store-server"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs build once
        if not target.is_file():
            _build(compiler, version, target)
    return target


def _build(compiler: str, version: str, target: Path) -> None:
    go = _go()
    started = time.monotonic()
    _say(f"building the Go Thrift test server (thrift {version}, "
         f"github.com/apache/thrift v{version}) into {target}")
    with tempfile.TemporaryDirectory(prefix="kitsd-thrift-build-") as work:
        root = Path(work)
        shutil.copy(IDL, root / IDL.name)
        shutil.copy(MAIN, root / MAIN.name)
        (root / "gen-go").mkdir()
        _run([compiler, "--gen", f"go:package_prefix={MODULE}/gen-go/", "-out", "gen-go",
              IDL.name], root)
        shutil.rmtree(root / "gen-go" / "store" / "store-remote", ignore_errors=True)
        (root / "go.mod").write_text(
            f"module {MODULE}\n\ngo 1.22\n\nrequire github.com/apache/thrift v{version}\n")
        env = {**os.environ, "CGO_ENABLED": "0", "GO111MODULE": "on", "GOWORK": "off",
               "GOFLAGS": "-mod=mod"}
        _run([go, "mod", "tidy"], root, env)
        partial = target.with_suffix(".tmp")
        _run([go, "build", "-trimpath", "-buildvcs=false", "-o", str(partial), "."], root, env)
        partial.replace(target)
    _say(f"built in {time.monotonic() - started:.0f}s")


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
