"""Per-instance client certificates: each https instance (which requires one) sees the
certificate named for it, through kitsd.Transport and its asyncio twin."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

import kitsd
from kitsd import auth, sd
from kitsd.core.errors import MisuseError


class TLSInstance:
    """An https instance that requires a client certificate from ``ca`` and answers
    the DNS name in it."""

    def __init__(self, ca: trustme.CA, server_cert: trustme.LeafCert) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
        server_cert.configure_cert(context)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                connection: Any = self.connection
                peer: Any = connection.getpeercert()
                names = [value for kind, value in peer.get("subjectAltName", ()) if kind == "DNS"]
                address: Any = self.server.server_address
                body = json.dumps({"client": names[0], "port": address[1]})
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05})
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[dict[str, Any]]:
    ca = trustme.CA()
    server_cert = ca.issue_cert("users", "127.0.0.1")
    files: dict[str, Any] = {"ca": str(tmp_path / "ca.pem")}
    ca.cert_pem.write_to_path(files["ca"])
    for name in ("client-a.kitsd.test", "client-b.kitsd.test"):
        path = tmp_path / f"{name}.pem"
        ca.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(str(path))
        files[name] = str(path)
    instances = [TLSInstance(ca, server_cert) for _ in range(2)]
    files["instances"] = instances
    yield files
    for instance in instances:
        instance.close()


def _certificates(pki: dict[str, Any]) -> dict[str, str]:
    first, second = pki["instances"]
    return {first.address: pki["client-a.kitsd.test"], second.address: pki["client-b.kitsd.test"]}


def test_each_instance_gets_its_own_certificate(pki: dict[str, Any]) -> None:
    registry = sd.MemoryRegistry()
    for instance in pki["instances"]:
        registry.registrar("users", instance.address).register()
    inner = auth.MTLSTransport(_certificates(pki), verify=pki["ca"])
    with httpx.Client(transport=kitsd.Transport(registry, transport=inner)) as client:
        seen = {(answer["port"], answer["client"])
                for answer in (client.get("https://users/").json() for _ in range(6))}
    first, second = pki["instances"]
    assert seen == {(int(first.address.rsplit(":", 1)[1]), "client-a.kitsd.test"),
                    (int(second.address.rsplit(":", 1)[1]), "client-b.kitsd.test")}


async def test_async_twin(pki: dict[str, Any]) -> None:
    registry = sd.MemoryRegistry()
    for instance in pki["instances"]:
        registry.registrar("users", instance.address).register()
    inner = auth.AsyncMTLSTransport(_certificates(pki), verify=pki["ca"])
    async with httpx.AsyncClient(transport=kitsd.AsyncTransport(registry,
                                                                transport=inner)) as client:
        clients = {(await client.get("https://users/")).json()["client"] for _ in range(6)}
    assert clients == {"client-a.kitsd.test", "client-b.kitsd.test"}


def test_no_certificate_is_refused_by_the_instance(pki: dict[str, Any]) -> None:
    first, _ = pki["instances"]
    with auth.MTLSTransport(lambda _instance: None, verify=pki["ca"]) as inner, \
            httpx.Client(transport=inner) as client, pytest.raises(httpx.HTTPError):
        client.get(f"https://{first.address}/", extensions={"sni_hostname": "users"})


def test_an_unreadable_certificate_names_the_file(pki: dict[str, Any], tmp_path: Path) -> None:
    first, _ = pki["instances"]
    missing = str(tmp_path / "missing.pem")
    with auth.MTLSTransport({first.address: missing}, verify=pki["ca"]) as inner, \
            httpx.Client(transport=inner) as client, \
            pytest.raises(MisuseError, match=r"missing\.pem"):
        client.get(f"https://{first.address}/")
