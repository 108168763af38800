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

from pathlib import Path

from kitsd.compose.gobuild import cached_binary

SOURCE = Path(__file__).resolve().parent / "gokit_consul" / "main.go"
MODULE = "kitsd.invalid/gokitbench"
REQUIRES = {
    "github.com/go-kit/kit": "v0.13.0",
    "github.com/go-kit/log": "v0.2.1",
    "github.com/hashicorp/consul/api": "v1.14.0",
}


def binary() -> Path:
    """The watcher binary, built first if it is not cached yet."""
    version = REQUIRES["github.com/go-kit/kit"]
    return cached_binary("gokit-consul", sources=[SOURCE], requires=REQUIRES, module=MODULE,
                         describe=f"the go-kit watcher (go-kit {version})")


def command(agent: str, service: str) -> list[str]:
    """The command line of a go-kit watcher of ``service`` on ``agent`` (``host:port``):
    it prints ``ready``, then ``add|remove <instance> <unix ns>`` per change its
    Endpointer applies (see :mod:`bench.watchers`)."""
    return [str(binary()), "-addr", agent, "-service", service]


if __name__ == "__main__":
    print(binary())
