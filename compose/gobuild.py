"""Small Go programs of our own, built once with the installed Go toolchain and cached.

The tests and benchmarks that need a real peer written in Go (the Thrift and OAuth2
test servers, the go-kit watcher, the HTTP benchmark backend) build it the same way
the Consul installer builds Consul: a throwaway module outside the repository (its
``go.mod`` names the libraries at fixed versions, which the Go module proxy serves),
``go build`` to one static binary, cached in ``${KITSD_CACHE:-~/.cache/kitsd}/<name>-<hash>``
where the hash covers the sources and the versions.  Concurrent runs build once (a
file lock beside the binary); a half-written binary is never left under its name.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

__all__ = ["GoBuildError", "cache_dir", "cached_binary", "go_toolchain", "run", "say"]

_GO_FALLBACK = Path("/usr/local/go/bin/go")


class GoBuildError(RuntimeError):
    """A program could not be built; the message says which step and its output."""


def say(line: str) -> None:
    """One progress line on stderr (builds take seconds to minutes: say so)."""
    print(f"[kitsd-build] {line}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """``$KITSD_CACHE``, else ``~/.cache/kitsd``: where built binaries are kept."""
    return Path(os.environ.get("KITSD_CACHE") or Path.home() / ".cache" / "kitsd")


def go_toolchain() -> str:
    """The ``go`` command, or :class:`GoBuildError` when Go is not installed."""
    found = shutil.which("go") or (str(_GO_FALLBACK) if _GO_FALLBACK.exists() else None)
    if found is None:
        raise GoBuildError("go is not installed (the Go toolchain builds this program)")
    return found


def run(command: list[str], cwd: Path, env: Mapping[str, str] | None = None) -> str:
    """Run one build step; its output, or :class:`GoBuildError` with its last lines."""
    result = subprocess.run(
        command, cwd=cwd, env=None if env is None else dict(env), capture_output=True,
        text=True, timeout=900, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise GoBuildError(f"{' '.join(command)} failed ({result.returncode}):\n{tail}")
    return result.stdout + result.stderr


def cached_binary(name: str, *, sources: Iterable[Path], requires: Mapping[str, str],
                  module: str, describe: str, key: Iterable[bytes] = (),
                  prepare: Callable[[Path], None] | None = None) -> Path:
    """The binary ``<cache>/<name>-<hash>/<name>``, built first if it is missing.

    ``sources`` are copied into a fresh module ``module`` whose ``go.mod`` requires
    ``requires`` (path -> version; empty: the standard library only, and nothing is
    downloaded); ``prepare(root)`` may add generated files before the build; ``key``
    is anything else the binary depends on (a code generator's version).
    """
    sources = [Path(source) for source in sources]
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    digest.update(repr(sorted(requires.items())).encode())
    for part in key:
        digest.update(part)
    target = cache_dir() / f"{name}-{digest.hexdigest()[:12]}" / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent runs build once
        if not target.is_file():
            _build(target, sources, requires, module, describe, prepare)
    return target


def _build(target: Path, sources: list[Path], requires: Mapping[str, str], module: str,
           describe: str, prepare: Callable[[Path], None] | None) -> None:
    go = go_toolchain()
    started = time.monotonic()
    say(f"building {describe} into {target}")
    with tempfile.TemporaryDirectory(prefix=f"kitsd-build-{target.name}-") as work:
        root = Path(work)
        for source in sources:
            shutil.copy(source, root / source.name)
        if prepare is not None:
            prepare(root)
        lines = "".join(f"\t{path} {version}\n" for path, version in sorted(requires.items()))
        (root / "go.mod").write_text(
            f"module {module}\n\ngo 1.22\n" + (f"\nrequire (\n{lines})\n" if lines else ""))
        env = {**os.environ, "CGO_ENABLED": "0", "GO111MODULE": "on", "GOWORK": "off",
               "GOFLAGS": "-mod=mod"}
        if requires:
            run([go, "mod", "tidy"], root, env)
        else:
            env["GOPROXY"] = "off"  # the standard library only: nothing to fetch
        partial = target.with_suffix(".tmp")
        run([go, "build", "-trimpath", "-buildvcs=false", "-o", str(partial), "."], root, env)
        partial.replace(target)
    say(f"built in {time.monotonic() - started:.0f}s")
