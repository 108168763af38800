"""A real ZooKeeper server on loopback, for the ZooKeeper driver's integration tests.

:class:`ZooKeeperServer` runs Debian's ZooKeeper (``/usr/share/java/zookeeper.jar``,
the ``zookeeper`` package, installed by ``kitsd servers install zookeeper``) as a
standalone server (``ZooKeeperServerMain``) on a free ``127.0.0.1`` client
port, with its data directory, configuration and log inside one
:class:`tempfile.TemporaryDirectory`.  Starting waits until the server accepts a
session: :func:`session_handshake` opens one with ZooKeeper's own ``ConnectRequest``
and closes it again (``ruok`` answers ``imok`` earlier, while the server still drops
new sessions: a client connecting then lost its first session).  The server can be stopped
(SIGTERM), killed (SIGKILL) and restarted on the same port with the same data
directory -- its sessions survive a restart that is shorter than their timeout,
as on a real ensemble.  Leaving the context manager (or ``close()``) kills the
server and removes the directory: nothing is left behind.

The admin HTTP server is disabled (it would take port 8080), and the tick is
short (``tickTime`` 200 ms) so that session timeouts as short as 0.4 s are
allowed and expiry tests run quickly.

Using a server you already run
------------------------------
Set ``KITSD_ZK_HOSTS=host:port`` and :func:`standalone` returns an
:class:`ExternalZooKeeper` for it instead (``can_restart`` is ``False``: tests
that must restart the server skip, saying why).

Not thread-safe: drive a server from one thread.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
from pathlib import Path

from kitsd.compose.process import LOOPBACK, ExternalServer, ServerGroup, ServerProcess, free_ports

__all__ = [
    "HOSTS_ENV",
    "ZK_JAR",
    "ExternalZooKeeper",
    "ZooKeeperNotInstalled",
    "ZooKeeperServer",
    "four_letter",
    "session_handshake",
    "standalone",
]

HOSTS_ENV = "KITSD_ZK_HOSTS"
"""Environment variable naming an existing ZooKeeper (``host:port``) to use instead."""

ZK_JAR = os.environ.get("KITSD_ZK_JAR", "/usr/share/java/zookeeper.jar")
"""The ZooKeeper server jar (Debian's manifest names its dependencies' jars)."""

_LOGGING_JARS = ("/usr/share/java/slf4j-log4j12.jar", "/usr/share/java/log4j-1.2.jar")
_LOG_CONFIG_DIR = "/etc/zookeeper/conf"  # log4j.properties of the package
_TICK_MS = 200


class ZooKeeperNotInstalled(FileNotFoundError):
    """ZooKeeper or Java is missing; the message says how to install them."""


def _require() -> tuple[str, str]:
    java = shutil.which(os.environ.get("JAVA", "java"))
    if java is None or not Path(ZK_JAR).is_file():
        from kitsd.compose.install import hint

        raise ZooKeeperNotInstalled(
            f"ZooKeeper not found (jar {ZK_JAR}, java {java}): {hint('zookeeper')}")
    return java, ZK_JAR


def four_letter(address: tuple[str, int], command: str, timeout: float = 1.0) -> str:
    """Send a four-letter command (``ruok``, ``srvr``, ``mntr``) and return the answer."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(command.encode("ascii"))
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def _frame(sock: socket.socket) -> bytes:
    (length,) = struct.unpack(">i", _receive(sock, 4))
    return _receive(sock, length)


def session_handshake(address: tuple[str, int], timeout: float = 2.0) -> bool:
    """Whether the server accepts sessions now: opens one (a ``ConnectRequest``, as
    every client sends first), checks that it got a session id, and closes it
    (``closeSession``), leaving nothing behind.  ``False`` if the server drops the
    connection or answers without a session; ``OSError`` if it cannot be reached."""
    # ConnectRequest: protocolVersion, lastZxidSeen, timeOut (ms), sessionId, passwd, readOnly
    connect = struct.pack(">iqiqi16s?", 0, 0, 4 * _TICK_MS, 0, 16, b"", False)
    close = struct.pack(">ii", 1, -11)  # RequestHeader: xid 1, type closeSession
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(struct.pack(">i", len(connect)) + connect)
            # ConnectResponse: protocolVersion, timeOut, sessionId, passwd, readOnly
            _version, granted, session = struct.unpack(">iiq", _frame(sock)[:16])
            if session == 0 or granted <= 0:
                return False
            sock.sendall(struct.pack(">i", len(close)) + close)
            xid, _zxid, error = struct.unpack(">iqi", _frame(sock)[:16])  # ReplyHeader
        except (ConnectionError, struct.error):
            return False
    return bool(xid == 1 and error == 0)


class ZooKeeperServer(ServerGroup["_ZooKeeperProcess"]):
    """A standalone ZooKeeper on a free loopback port; starts on construction.

    ``address`` (``host:port``) is what clients connect to.  :meth:`restart`
    keeps the port and the data.  Raises :class:`ZooKeeperNotInstalled`
    without ZooKeeper or Java, and ``RuntimeError`` (with the log tail) if the
    server does not become ready.
    """

    can_restart = True

    def __init__(self, *, start: bool = True, tmp_root: str | None = None) -> None:
        java, jar = _require()
        super().__init__("kitsd-zookeeper-", tmp_root)
        self.process = _ZooKeeperProcess(
            "zk", workdir=self.workdir, port=free_ports(1)[0], java=java, jar=jar
        )
        self.members = [self.process]
        if start:
            self._start_or_close()

    @property
    def address(self) -> str:
        """``host:port`` of the client port."""
        return self.process.address

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process.running

    def __repr__(self) -> str:
        return f"ZooKeeperServer({self.process!r})"


class _ZooKeeperProcess(ServerProcess):
    kind = "ZooKeeper server"
    start_timeout = 30.0

    def __init__(self, name: str, *, workdir: Path, port: int, java: str, jar: str) -> None:
        super().__init__(name, workdir=workdir)
        self.port = port
        self._java = java
        self._jar = jar
        self.data_dir = workdir / f"{name}.data"
        self.config = workdir / f"{name}.cfg"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        self.data_dir.mkdir(exist_ok=True)
        self.config.write_text(
            f"tickTime={_TICK_MS}\n"
            f"dataDir={self.data_dir}\n"
            f"clientPort={self.port}\n"
            f"clientPortAddress={LOOPBACK}\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=ruok,srvr,mntr,cons\n"
            f"minSessionTimeout={2 * _TICK_MS}\n"
            "maxSessionTimeout=60000\n"
            "maxClientCnxns=0\n",
            encoding="utf-8",
        )
        classpath = ":".join(
            [_LOG_CONFIG_DIR, self._jar, *(jar for jar in _LOGGING_JARS if Path(jar).is_file())]
        )
        return [
            self._java,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-Dzookeeper.root.logger=INFO,CONSOLE",
            "-Dzookeeper.console.threshold=INFO",
            "-cp", classpath,
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(self.config),
        ]

    def ready(self) -> bool:
        """Whether the server accepts a session (see :func:`session_handshake`)."""
        if not self.running:
            return False
        try:
            return session_handshake((self.host, self.port))
        except OSError:
            return False


class ExternalZooKeeper(ExternalServer):
    """A ZooKeeper someone else runs (``KITSD_ZK_HOSTS``): address only, no process control."""

    kind = "ZooKeeper"

    def __init__(self, address: str) -> None:
        super().__init__(address, HOSTS_ENV)


def standalone() -> ZooKeeperServer | ExternalZooKeeper:
    """A started :class:`ZooKeeperServer`, or an :class:`ExternalZooKeeper` if
    ``KITSD_ZK_HOSTS`` is set."""
    external = os.environ.get(HOSTS_ENV, "").strip()
    if external:
        return ExternalZooKeeper(external)
    return ZooKeeperServer()
