"""Installing the real servers the integration tests need, when they are missing.

A fresh machine has neither etcd nor Consul.  Rather than fail the first
integration test with "binary not found", the test run installs what its
selected tests need before the first test starts, printing what it does and
how long that usually takes:

* **etcd** — Debian's ``etcd-server`` package (``.ci/install-etcd``; ~30 s).
* **ZooKeeper** — Debian's ``zookeeper`` package (``.ci/install-zookeeper``; ~1 min).
* **Consul** — HashiCorp Consul built from its Go module with this machine's
  Go toolchain (``.ci/install-consul``; 5-15 min the first time on 2 cores,
  then restored from the cache in ``~/.cache/kitsd`` in a second).
* **kube-apiserver** — Kubernetes v1.37.2 and the etcd 3.7 it stores in, built
  from their Go modules (``.ci/install-kube-apiserver``; 6-10 min the first time,
  then from the cache in ``~/.cache/kitsd``).

Nothing is installed when the tests use servers of your own
(``KITSD_ETCD_ENDPOINT`` / ``KITSD_CONSUL_HTTP_ADDR``), when the binary is
already there, or when ``KITSD_NO_INSTALL=1`` (the tests then fail loudly,
saying how to install).  The scripts need root (``apt-get``, ``/usr/local/bin``)
or passwordless ``sudo``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SERVERS", "InstallError", "Server", "ensure", "missing"]

_REPO = Path(__file__).resolve().parents[1]

NO_INSTALL_ENV = "KITSD_NO_INSTALL"


class InstallError(RuntimeError):
    """An install script failed; the message names it and its last output lines."""


@dataclass(frozen=True)
class Server:
    """A server the tests can install: its binary, the script, and what to tell the user."""

    name: str
    binary_env: str
    default_binary: str
    external_env: str
    script: str
    how_long: str

    @property
    def binary(self) -> str:
        return os.environ.get(self.binary_env, self.default_binary)

    def installed(self) -> bool:
        return Path(self.binary).is_file() or shutil.which(self.binary) is not None

    def external(self) -> bool:
        return bool(self.external_env) and bool(os.environ.get(self.external_env, "").strip())


SERVERS = {
    "etcd": Server(
        name="etcd", binary_env="KITSD_ETCD_BINARY", default_binary="/usr/bin/etcd",
        external_env="KITSD_ETCD_ENDPOINT", script=".ci/install-etcd",
        how_long="Debian's etcd-server package; usually under a minute",
    ),
    "consul": Server(
        name="consul", binary_env="KITSD_CONSUL_BINARY", default_binary="/usr/local/bin/consul",
        external_env="KITSD_CONSUL_HTTP_ADDR", script=".ci/install-consul",
        how_long="built from its Go module: 5-15 min the first time on 2 cores, "
                 "seconds from the cache in ~/.cache/kitsd afterwards",
    ),
    "kube-apiserver": Server(
        name="kube-apiserver", binary_env="KITSD_KUBE_APISERVER_BINARY",
        default_binary="/usr/local/bin/kube-apiserver",
        external_env="",  # the k8s tests restart, kill and compact: always a server of theirs
        script=".ci/install-kube-apiserver",
        how_long="kube-apiserver and etcd built from their Go modules: 6-10 min the first "
                 "time on 2 cores (2.4 GB of memory), seconds from ~/.cache/kitsd afterwards",
    ),
    "zk": Server(
        name="zookeeper", binary_env="KITSD_ZK_JAR", default_binary="/usr/share/java/zookeeper.jar",
        external_env="KITSD_ZK_HOSTS", script=".ci/install-zookeeper",
        how_long="Debian's zookeeper package (and a Java runtime); usually 1-2 minutes",
    ),
}


def missing(names: Iterable[str]) -> list[Server]:
    """The servers among ``names`` that are neither installed nor external."""
    return [SERVERS[name] for name in sorted(set(names))
            if not SERVERS[name].external() and not SERVERS[name].installed()]


def ensure(names: Iterable[str], say: Callable[[str], None]) -> None:
    """Install every server among ``names`` that is missing, telling ``say`` what happens.

    Raises :class:`InstallError` when a script fails (its last lines in the
    message).  With ``KITSD_NO_INSTALL=1`` it installs nothing.
    """
    todo = missing(names)
    if not todo:
        return
    if os.environ.get(NO_INSTALL_ENV, "").strip() not in ("", "0"):
        say(f"kitsd: {', '.join(s.name for s in todo)} missing and {NO_INSTALL_ENV} is set: "
            "not installing (the tests that need them will fail saying how to install)")
        return
    for server in todo:
        script = _REPO / server.script
        say(f"kitsd: {server.name} is not installed; installing it with {server.script} "
            f"({server.how_long})")
        started = time.monotonic()
        _run(script, say)
        if not server.installed():
            raise InstallError(f"{server.script} finished but {server.binary} is still missing")
        say(f"kitsd: {server.name} installed in {time.monotonic() - started:.0f}s")


def _run(script: Path, say: Callable[[str], None]) -> None:
    tail: list[str] = []
    with subprocess.Popen(
        ["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, cwd=_REPO,
    ) as process:
        for line in process.stdout or ():
            line = line.rstrip()
            tail = [*tail[-19:], line]
            if line.startswith("[install-"):  # the scripts' own progress lines
                say(f"  {line}")
        code = process.wait()
    if code != 0:
        raise InstallError(f"{script.name} failed with exit status {code}:\n" + "\n".join(tail))
