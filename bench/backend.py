"""HTTP backends for the transport benchmarks: ``bench/backend/main.go`` (our own
program, standard library only) answering every request at once with a small
JSON body, so that what a benchmark times is the client, not a Python server
sharing its interpreter or its cores' time slices.

The binary is built on first use with the installed Go toolchain (no module is
downloaded) and cached in ``${KITSD_CACHE:-~/.cache/kitsd}/bench-backend-<hash>``;
``python -m bench.backend`` builds it and prints its path.  Without Go,
:class:`Backends` falls back to ``kitsd.demo_server`` instances in one child
interpreter (slower and noisier; the report says which it used).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "backend" / "main.go"

_PYTHON_SERVERS = """
import sys
from kitsd.demo_server import DemoInstance
servers = [DemoInstance() for _ in range(int(sys.argv[1]))]
for server in servers:
    print(server.instance, flush=True)
sys.stdin.read()
for server in servers:
    server.kill()
"""


class BuildError(RuntimeError):
    """The backend could not be built; the message says why."""


def binary() -> Path:
    """The backend binary, built first if it is not cached yet."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("KITSD_CACHE") or Path.home() / ".cache" / "kitsd")
    target = cache / f"bench-backend-{digest}" / "bench-backend"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent runs build once
        if not target.is_file():
            _build(target)
    return target


def _build(target: Path) -> None:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise BuildError("go is not installed")
    with tempfile.TemporaryDirectory(prefix="kitsd-bench-backend-") as work:
        root = Path(work)
        shutil.copy(SOURCE, root / "main.go")
        (root / "go.mod").write_text("module kitsd.invalid/benchbackend\n\ngo 1.22\n")
        env = {**os.environ, "CGO_ENABLED": "0", "GO111MODULE": "on", "GOWORK": "off",
               "GOFLAGS": "-mod=mod", "GOPROXY": "off"}
        partial = target.with_suffix(".tmp")
        result = subprocess.run(  # noqa: S603 - our own go command
            [go, "build", "-trimpath", "-buildvcs=false", "-o", str(partial), "."],
            cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
            stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise BuildError(f"go build failed: {result.stderr[-2000:]}")
        partial.replace(target)


class Backends:
    """``count`` HTTP instances on loopback in one child process (Go, or Python
    without Go); ``.instances`` are their ``host:port``; :meth:`close` stops them."""

    def __init__(self, count: int, *, kind: str = "go") -> None:
        command: list[str]
        self.kind = kind
        if kind == "go":
            try:
                command = [str(binary()), "-n", str(count)]
            except BuildError as error:
                print(f"[bench] no Go backend ({error}); using Python servers",
                      file=sys.stderr)
                self.kind = "python"
        if self.kind == "python":
            command = [sys.executable, "-c", _PYTHON_SERVERS, str(count)]
        self._process = subprocess.Popen(  # noqa: S603 - our own backend
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        self.instances = [self._process.stdout.readline().strip() for _ in range(count)]

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()  # the child serves until its stdin closes
        self._process.wait(timeout=10)


if __name__ == "__main__":
    print(binary())
