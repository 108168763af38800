"""go-kit's Consul watcher for the benchmarks: ``bench/gokit_consul/main.go`` (our own
small program importing go-kit's ``sd/consul`` Instancer and ``sd.Endpointer``), built
when missing.

The build: a throwaway Go module outside the repository, whose ``go.mod`` names the
go-kit and Consul API versions below; the Go module proxy serves them and ``go build``
makes one static binary, cached like Consul's in
``${KITSD_CACHE:-~/.cache/kitsd}/gokit-consul-<hash>`` (the hash covers the source and
the versions), so only the first run compiles.  No go-kit code enters the repository.
``python -m bench.gokit`` builds it and prints its path.

:func:`command` is its command line, for :class:`bench.watchers.WatcherProcess`.
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

SOURCE = Path(__file__).resolve().parent / "gokit_consul" / "main.go"
MODULE = "kitsd.invalid/gokitbench"
REQUIRES = {
    "github.com/go-kit/kit": "v0.13.0",
    "github.com/go-kit/log": "v0.2.1",
    "github.com/hashicorp/consul/api": "v1.14.0",
}


class BuildError(RuntimeError):
    """The watcher could not be built; the message says which step and its output."""


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,  # noqa: S603 - our own go command
                            timeout=900, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise BuildError(f"{' '.join(command)} failed ({result.returncode}):\n{tail}")


def binary() -> Path:
    """The watcher binary, built first if it is not cached yet."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(repr(sorted(REQUIRES.items())).encode())
    cache = Path(os.environ.get("KITSD_CACHE") or Path.home() / ".cache" / "kitsd")
    target = cache / f"gokit-consul-{digest.hexdigest()[:12]}" / "gokit-consul"
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
        raise BuildError("go is not installed (it builds the go-kit watcher)")
    print(f"[bench] building the go-kit watcher (go-kit {REQUIRES['github.com/go-kit/kit']})"
          f" into {target}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="kitsd-gokit-build-") as work:
        root = Path(work)
        shutil.copy(SOURCE, root / "main.go")
        requires = "".join(f"\t{path} {version}\n" for path, version in REQUIRES.items())
        (root / "go.mod").write_text(f"module {MODULE}\n\ngo 1.22\n\nrequire (\n{requires})\n")
        env = {**os.environ, "CGO_ENABLED": "0", "GO111MODULE": "on", "GOWORK": "off",
               "GOFLAGS": "-mod=mod"}
        _run([go, "mod", "tidy"], root, env)
        partial = target.with_suffix(".tmp")
        _run([go, "build", "-trimpath", "-buildvcs=false", "-o", str(partial), "."], root, env)
        partial.replace(target)


def command(agent: str, service: str) -> list[str]:
    """The command line of a go-kit watcher of ``service`` on ``agent`` (``host:port``):
    it prints ``ready``, then ``add|remove <instance> <unix ns>`` per change its
    Endpointer applies (see :mod:`bench.watchers`)."""
    return [str(binary()), "-addr", agent, "-service", service]


if __name__ == "__main__":
    print(binary())
