"""Real etcd servers on loopback: one member or a static three-member cluster.

:class:`EtcdCluster` starts ``/usr/bin/etcd`` (3.4) members on free
``127.0.0.1`` client and peer ports, each with its data directory and log file
inside one :class:`tempfile.TemporaryDirectory`, and waits until every member
answers ``/health``.  Members can be stopped (SIGTERM), killed (SIGKILL) and
restarted on the same ports with the same data directory, which is how the
integration tests simulate an etcd restart, a crash and a leader change.
Leaving the context manager (or calling :meth:`EtcdCluster.close`) kills every
member still running and removes the temporary directory: nothing is left
behind.

etcd's own logs stay in the temporary directory; :meth:`EtcdMember.log_tail`
returns the end of one, and a member that fails to start raises an error that
carries it, so logs are shown only when something went wrong.

Using a server you already run
------------------------------
Set ``KITSD_ETCD_ENDPOINT=host:port`` and :func:`single_member` returns an
:class:`ExternalEtcd` for that server instead of starting one.  An external
server cannot be stopped, killed or restarted by us, so tests that need that
must skip (``ExternalEtcd.can_restart`` is ``False``).  Tests write under unique
key prefixes and do not clean a shared server beyond their own keys, but the
compaction test compacts the server's history.

TLS
---
``EtcdCluster(1, tls=True)`` generates a throwaway CA, a server certificate for
``127.0.0.1``/``localhost`` and a client certificate (:func:`make_tls_files`,
with the ``cryptography`` package if installed, else the ``openssl`` command)
in the cluster's temporary directory, and starts members whose client
listeners speak TLS and require a client certificate signed by that CA
(``--cert-file``, ``--key-file``, ``--trusted-ca-file``,
``--client-cert-auth``).  ``cluster.tls`` holds the file paths.

Not thread-safe: drive a cluster from one thread.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kitsd.compose.process import (
    LOOPBACK,
    ExternalServer,
    ServerGroup,
    ServerProcess,
    free_ports,
    wait_until,
)

__all__ = [
    "ENDPOINT_ENV",
    "ETCD_BINARY",
    "EtcdCluster",
    "EtcdMember",
    "ExternalEtcd",
    "TLSFiles",
    "make_tls_files",
    "single_member",
]

ENDPOINT_ENV = "KITSD_ETCD_ENDPOINT"
"""Environment variable naming an existing etcd (``host:port``) to use instead of starting one."""

ETCD_BINARY = os.environ.get("KITSD_ETCD_BINARY", "/usr/bin/etcd")
"""The etcd server binary (``KITSD_ETCD_BINARY`` overrides ``/usr/bin/etcd``)."""
_START_TIMEOUT = 20.0


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a throwaway CA, a server certificate and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts the CA and presents the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def make_tls_files(directory: Path) -> TLSFiles:
    """Write a CA, a server certificate (``127.0.0.1``, ``localhost``) and a client
    certificate into ``directory``; valid for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem",
                     directory / "client.pem", directory / "client-key.pem")
    try:
        _make_tls_files_with_cryptography(files)
    except ImportError:
        _make_tls_files_with_openssl(files, directory)
    return files


def _make_tls_files_with_cryptography(files: TLSFiles) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("kitsd test CA")).issuer_name(name("kitsd test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for common, usage, cert_path, key_path in (
        ("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, files.server_cert, files.server_key),
        ("kitsd-client", ExtendedKeyUsageOID.CLIENT_AUTH, files.client_cert, files.client_key),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(name(common)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, key_path)


def _make_tls_files_with_openssl(files: TLSFiles, directory: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                       timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca-key.pem", "-out", str(files.ca), "-days", "1", "-subj", "/CN=kitsd test CA")
    for common, usage, cert_path, key_path in (
        ("127.0.0.1", "serverAuth", files.server_cert, files.server_key),
        ("kitsd-client", "clientAuth", files.client_cert, files.client_key),
    ):
        extensions = directory / f"{common}.ext"
        extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                              f"extendedKeyUsage={usage}\n")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key_path), "-out", f"{common}.csr", "-subj", f"/CN={common}")
        run("x509", "-req", "-in", f"{common}.csr", "-CA", str(files.ca), "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-out", str(cert_path), "-days", "1", "-extfile", str(extensions))


class EtcdMember(ServerProcess):
    """One etcd process of an :class:`EtcdCluster`.

    ``endpoint`` is its ``host:port`` client address.  :meth:`stop`,
    :meth:`kill` and :meth:`restart` keep the ports and the data directory.
    """

    kind = "etcd member"
    start_timeout = _START_TIMEOUT

    def __init__(
        self,
        name: str,
        *,
        client_port: int,
        peer_port: int,
        workdir: Path,
        initial_cluster: str,
        cluster_token: str,
        extra_args: Sequence[str] = (),
        tls: TLSFiles | None = None,
    ) -> None:
        super().__init__(name, workdir=workdir)
        self.tls = tls
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = workdir / f"{name}.data"
        self._initial_cluster = initial_cluster
        self._cluster_token = cluster_token
        self._extra_args = tuple(extra_args)

    can_restart = True
    """A member we started can be stopped, killed and restarted."""

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client listener."""
        return f"{self.host}:{self.client_port}"

    address = endpoint

    @property
    def client_url(self) -> str:
        """``http://host:port`` (``https://`` with TLS) of the client listener."""
        return f"{'https' if self.tls is not None else 'http'}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        """``http://host:port`` of the peer listener."""
        return f"http://{self.host}:{self.peer_port}"

    def command(self) -> list[str]:
        """The command line this member runs."""
        return [
            ETCD_BINARY,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self._initial_cluster,
            "--initial-cluster-token", self._cluster_token,
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-outputs", "stderr",
            *self._tls_args(),
            *self._extra_args,
        ]

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return ["--cert-file", str(self.tls.server_cert), "--key-file", str(self.tls.server_key),
                "--trusted-ca-file", str(self.tls.ca), "--client-cert-auth"]

    def _open(self, request: str | urllib.request.Request, timeout: float) -> bytes:
        context = self.tls.client_context() if self.tls is not None else None
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:  # noqa: S310 - our own server's URL
            body: bytes = answer.read()
        return body

    def healthy(self) -> bool:
        """Whether ``/health`` answers ``{"health": "true"}`` (needs a leader)."""
        if not self.running:
            return False
        try:
            body = json.loads(self._open(f"{self.client_url}/health", 1.0))
        except (OSError, ValueError):
            return False
        return str(body.get("health")) == "true"

    ready = healthy

    def wait_healthy(self, timeout: float = _START_TIMEOUT) -> None:
        """Block until healthy; raise ``RuntimeError`` with the log tail if it is not."""
        self.wait_ready(timeout)

    def status(self) -> dict[str, object]:
        """The member's ``Maintenance.Status`` answer (JSON gateway); raises ``OSError`` if down."""
        request = urllib.request.Request(  # noqa: S310 - our own http:// URL
            f"{self.client_url}/v3/maintenance/status", data=b"{}", method="POST"
        )
        result: dict[str, object] = json.loads(self._open(request, 2.0))
        return result

    def member_id(self) -> str:
        """This member's id (decimal string), from its status."""
        header = self.status().get("header")
        if not isinstance(header, dict):
            raise TypeError(f"unexpected status answer from {self.endpoint}: {header!r}")
        return str(header["member_id"])


class EtcdCluster(ServerGroup[EtcdMember]):
    """``size`` etcd members bootstrapped statically (``--initial-cluster``).

    ``EtcdCluster(1)`` is a single member.  Starts on construction (or on
    ``__enter__``); raises ``RuntimeError`` carrying the log tails if a member
    does not become healthy.  ``close()`` leaves no process and no directory.
    """

    def __init__(
        self,
        size: int = 1,
        *,
        extra_args: Sequence[str] = (),
        start: bool = True,
        tmp_root: str | None = None,
        tls: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one member, not {size}")
        if not Path(ETCD_BINARY).exists() and shutil.which(ETCD_BINARY) is None:
            from kitsd.compose.install import hint

            raise FileNotFoundError(f"etcd binary not found at {ETCD_BINARY} (KITSD_ETCD_BINARY "
                                    f"names another): {hint('etcd')}")
        super().__init__("kitsd-etcd-", tmp_root)
        ports = free_ports(2 * size)
        names = [f"m{index}" for index in range(size)]
        initial = ",".join(
            f"{name}=http://{LOOPBACK}:{ports[2 * index + 1]}" for index, name in enumerate(names)
        )
        token = f"kitsd-{os.getpid()}-{time.monotonic_ns()}"
        self.tls = make_tls_files(self.workdir / "tls") if tls else None
        self.members = [
            EtcdMember(
                name,
                client_port=ports[2 * index],
                peer_port=ports[2 * index + 1],
                workdir=self.workdir,
                initial_cluster=initial,
                cluster_token=token,
                extra_args=extra_args,
                tls=self.tls,
            )
            for index, name in enumerate(names)
        ]
        if start:
            self._start_or_close()

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` of every member's client listener."""
        return [member.endpoint for member in self.members]

    @property
    def endpoint(self) -> str:
        """The first member's ``host:port``."""
        return self.members[0].endpoint

    def heal(self) -> None:
        """Start any member that is not running and wait until all are healthy."""
        self.start()

    def leader(self, timeout: float = 10.0) -> EtcdMember:
        """The current leader, waiting up to ``timeout`` seconds for one to be elected."""
        found: list[EtcdMember] = []

        def probe() -> bool:
            by_id = {}
            leaders = set()
            for member in self.members:
                if not member.running:
                    continue
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    status = member.status()
                    by_id[member.member_id()] = member
                    if str(status.get("leader", "0")) != "0":
                        leaders.add(str(status["leader"]))
            if len(leaders) != 1:
                return False
            leader = by_id.get(leaders.pop())
            if leader is None:
                return False
            found[:] = [leader]
            return True

        try:
            wait_until(probe, timeout, "an etcd leader")
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n{self.log_tails()}") from error
        return found[0]


class ExternalEtcd(ExternalServer):
    """An etcd someone else runs (``KITSD_ETCD_ENDPOINT``): address only, no process control."""

    kind = "etcd"

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint, ENDPOINT_ENV)
        self.client_port = self.port

    @property
    def endpoint(self) -> str:
        """``host:port`` of the server."""
        return self.address

    @property
    def endpoints(self) -> list[str]:
        """A one-element list with :attr:`endpoint`."""
        return [self.endpoint]


def single_member(*, extra_args: Sequence[str] = ()) -> EtcdCluster | ExternalEtcd:
    """A one-member :class:`EtcdCluster`, or an :class:`ExternalEtcd` if ``KITSD_ETCD_ENDPOINT``
    is set."""
    external = os.environ.get(ENDPOINT_ENV, "").strip()
    if external:
        return ExternalEtcd(external)
    return EtcdCluster(1, extra_args=extra_args)
