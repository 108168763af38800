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

import subprocess
import sys
from pathlib import Path

from kitsd.compose.gobuild import GoBuildError, cached_binary

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


def binary() -> Path:
    """The backend binary, built first if it is not cached yet."""
    return cached_binary("bench-backend", sources=[SOURCE], requires={},
                         module="kitsd.invalid/benchbackend",
                         describe="the Go HTTP benchmark backend")


class Backends:
    """``count`` HTTP instances on loopback in one child process (Go, or Python
    without Go); ``.instances`` are their ``host:port``; :meth:`close` stops them."""

    def __init__(self, count: int, *, kind: str = "go") -> None:
        command: list[str]
        self.kind = kind
        if kind == "go":
            try:
                command = [str(binary()), "-n", str(count)]
            except GoBuildError as error:
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
