"""Installing the real servers kitsd starts on loopback: ``kitsd servers install NAME``.

One table, :data:`SERVERS`, names every server the launchers of this package start
(for the pytest plugin's fixtures, ``kitsd chaos`` and kitsd's own test suite), where
its binary is looked for, and the installer that puts it there.  The installers are
shell scripts shipped in the package (``installers/<name>.sh``), so a wheel can
follow every hint it prints:

* **etcd** — Debian's ``etcd-server`` package (usually under a minute).
* **zookeeper** — Debian's ``zookeeper`` package and a Java runtime (1-2 min).
* **consul** — HashiCorp Consul built from its Go module with this machine's Go
  toolchain (5-15 min the first time on 2 cores, then restored from the cache in
  ``~/.cache/kitsd`` in a second).
* **kube-apiserver** — Kubernetes' API server and the etcd 3.7 it stores in
  (``kube-etcd``), built from their Go modules (6-10 min the first time, then from
  the cache in ``~/.cache/kitsd``).

Three callers, one code path: the command line (``kitsd servers install consul``,
:func:`install`), ``.ci/run`` (the same command), and the test run, which installs
what its selected tests need before the first test starts (:func:`ensure`).

Nothing is installed when the tests use servers of your own (``KITSD_ETCD_ENDPOINT``,
``KITSD_CONSUL_HTTP_ADDR``, ``KITSD_ZK_HOSTS``; kube-apiserver has none: its tests
restart, kill and compact it), when the binary is already there,
or when ``KITSD_NO_INSTALL=1`` (the tests then fail loudly, saying how to install).
The scripts need root (``apt-get``, ``/usr/local/bin``) or passwordless ``sudo``.

Adding a server: one :class:`Server` row in :data:`SERVERS` and its script in
``installers/`` (idempotent; ``KITSD_INSTALL_FORCE=1`` in its environment means
"install even if present"; progress lines start with ``[install NAME]``).  The
command line, ``.ci/run`` and the hints pick it up from the table.

``python -m kitsd.compose.install NAME...`` does what ``kitsd servers install`` does,
without the rest of kitsd (``.ci/`` can use it before the package is installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "INSTALLERS",
    "NO_INSTALL_ENV",
    "SERVERS",
    "InstallError",
    "Server",
    "ensure",
    "hint",
    "install",
    "main",
    "missing",
    "status",
]

INSTALLERS = Path(__file__).resolve().parent / "installers"
"""Where the install scripts are (inside the installed package)."""

NO_INSTALL_ENV = "KITSD_NO_INSTALL"
"""Set to ``1``: the test run installs nothing (the tests that need a server fail)."""

FORCE_ENV = "KITSD_INSTALL_FORCE"


class InstallError(RuntimeError):
    """An installer failed; the message names it and its last output lines."""


@dataclass(frozen=True)
class Server:
    """A server kitsd can install: where its binary is looked for, its installer, and
    what to tell the user."""

    name: str
    """What the command line calls it (``kitsd servers install NAME``)."""
    binary_env: str
    """The variable that points the launchers at another binary (or jar)."""
    default_binary: str
    """Where the launchers look for it by default."""
    external_env: str
    """The variable naming a running server to use instead of starting one (``""``:
    none can be)."""
    script: str
    """The installer's file name in :data:`INSTALLERS`."""
    how_long: str
    """What installing does and takes, for the user waiting."""
    companions: tuple[tuple[str, str], ...] = ()
    """Other binaries the same installer puts in place and the launchers need, as
    ``(variable, default path)`` pairs (kube-apiserver's ``kube-etcd``): one missing
    means the server is not installed."""

    @property
    def binary(self) -> str:
        """The binary (or jar) the launchers use."""
        return os.environ.get(self.binary_env, self.default_binary)

    @property
    def binaries(self) -> list[str]:
        """:attr:`binary` and each companion binary the launchers use."""
        return [self.binary, *(os.environ.get(env, default) for env, default in self.companions)]

    @property
    def absent(self) -> list[str]:
        """The binaries of :attr:`binaries` that are not there."""
        return [binary for binary in self.binaries
                if not Path(binary).is_file() and shutil.which(binary) is None]

    @property
    def installer(self) -> Path:
        """The install script."""
        return INSTALLERS / self.script

    def installed(self) -> bool:
        """Whether :attr:`binary` and its companions are there (paths, or commands on
        ``PATH``)."""
        return not self.absent

    def external(self) -> bool:
        """Whether :attr:`external_env` names a server to use instead."""
        return bool(self.external_env) and bool(os.environ.get(self.external_env, "").strip())


SERVERS: dict[str, Server] = {
    "etcd": Server(
        name="etcd", binary_env="KITSD_ETCD_BINARY", default_binary="/usr/bin/etcd",
        external_env="KITSD_ETCD_ENDPOINT", script="etcd.sh",
        how_long="Debian's etcd-server package; usually under a minute",
    ),
    "consul": Server(
        name="consul", binary_env="KITSD_CONSUL_BINARY", default_binary="/usr/local/bin/consul",
        external_env="KITSD_CONSUL_HTTP_ADDR", script="consul.sh",
        how_long="built from its Go module: 5-15 min the first time on 2 cores, "
                 "seconds from the cache in ~/.cache/kitsd afterwards",
    ),
    "kube-apiserver": Server(
        name="kube-apiserver", binary_env="KITSD_KUBE_APISERVER_BINARY",
        default_binary="/usr/local/bin/kube-apiserver",
        external_env="",  # the k8s tests restart, kill and compact: always a server of theirs
        script="kube-apiserver.sh",
        how_long="kube-apiserver and etcd built from their Go modules: 6-10 min the first "
                 "time on 2 cores (2.4 GB of memory), seconds from ~/.cache/kitsd afterwards",
        # the etcd it stores in: compose/kubernetes.py starts it beside the API server
        companions=(("KITSD_KUBE_ETCD_BINARY", "/usr/local/bin/kube-etcd"),),
    ),
    "zookeeper": Server(
        name="zookeeper", binary_env="KITSD_ZK_JAR",
        default_binary="/usr/share/java/zookeeper.jar",
        external_env="KITSD_ZK_HOSTS", script="zookeeper.sh",
        how_long="Debian's zookeeper package (and a Java runtime); usually 1-2 minutes",
    ),
}
"""Every server kitsd can install, by the name the command line takes."""


def hint(name: str) -> str:
    """How to install ``name`` (for the launchers' "not found" errors)."""
    server = SERVERS[name]
    how = f"install it with `kitsd servers install {name}` ({server.how_long})"
    if server.external_env:
        how += f", or set {server.external_env}=host:port to use a running server"
    return how


def status(server: Server) -> str:
    """One line: where ``server`` is, or that it is missing and how to install it."""
    if server.external():
        return f"external: {server.external_env}={os.environ[server.external_env].strip()}"
    if server.installed():
        found = server.binary if Path(server.binary).is_file() else shutil.which(server.binary)
        return f"installed: {found}"
    return f"missing: {', '.join(server.absent)} (kitsd servers install {server.name})"


def missing(names: Iterable[str]) -> list[Server]:
    """The servers among ``names`` that are neither installed nor external."""
    return [SERVERS[name] for name in sorted(set(names))
            if not SERVERS[name].external() and not SERVERS[name].installed()]


def install(server: Server, say: Callable[[str], None], *, force: bool = False) -> None:
    """Install ``server`` unless it is installed (or ``force``), telling ``say`` what
    happens; raises :class:`InstallError` if the installer fails or leaves no binary."""
    if server.installed() and not force:
        say(f"kitsd: {server.name} is installed ({server.binary})")
        return
    say(f"kitsd: installing {server.name} ({server.how_long})")
    started = time.monotonic()
    _run(server, say, force=force)
    if not server.installed():
        raise InstallError(f"the {server.name} installer finished but "
                           f"{', '.join(server.absent)} still missing")
    say(f"kitsd: {server.name} installed in {time.monotonic() - started:.0f}s")


def ensure(names: Iterable[str], say: Callable[[str], None]) -> None:
    """Install every server among ``names`` that is missing (what a test run does
    before its first test), telling ``say`` what happens.

    Raises :class:`InstallError` when an installer fails (its last lines in the
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
        say(f"kitsd: {server.name} is not installed and selected tests need it")
        install(server, say)


def _run(server: Server, say: Callable[[str], None], *, force: bool) -> None:
    tail: list[str] = []
    env = {**os.environ, FORCE_ENV: "1"} if force else None
    with subprocess.Popen(
        ["bash", str(server.installer)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, env=env,
    ) as process:
        for line in process.stdout or ():
            line = line.rstrip()
            tail = [*tail[-19:], line]
            if line.startswith("[install "):  # the scripts' own progress lines
                say(f"  {line}")
        code = process.wait()
    if code != 0:
        raise InstallError(f"installing {server.name} ({server.installer}) failed with exit "
                           f"status {code}:\n" + "\n".join(tail))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kitsd.compose.install NAME...``: install the named servers."""
    names = list(sys.argv[1:] if argv is None else argv)
    unknown = [name for name in names if name not in SERVERS]
    if not names or unknown:
        print(f"usage: python -m kitsd.compose.install NAME... (NAME: {', '.join(SERVERS)})",
              file=sys.stderr)
        return 2
    try:
        for name in names:
            install(SERVERS[name], lambda line: print(line, file=sys.stderr, flush=True))
    except InstallError as error:
        print(f"kitsd: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
