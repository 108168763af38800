"""A real Kubernetes API server on loopback, for the Kubernetes driver's tests and chaos.

:class:`KubeAPIServer` starts two processes in one temporary directory:

* ``kube-etcd`` (etcd 3.7, built from ``go.etcd.io/etcd/server/v3``: the
  apiserver's WatchList and bookmarks need etcd >= 3.5.13, Debian's is 3.4) on
  free loopback ports, with ``--unsafe-no-fsync`` (test data);
* ``kube-apiserver`` (Kubernetes v1.37.2, built from ``k8s.io/kubernetes``) on a
  free ``127.0.0.1`` port, serving a certificate for ``127.0.0.1`` signed by a
  throwaway CA (:func:`compose.etcd.make_tls_files`), with
  ``--endpoint-reconciler-type=none`` (it then needs no routable address),
  ``--authorization-mode=RBAC``, a static token file, client certificates
  signed by the same CA, and service account tokens signed by a throwaway key.
  ``apiservers=2`` starts a second one on the same etcd (a highly available
  control plane: one can be down while the other takes writes).

Both binaries come from ``kitsd servers install kube-apiserver``
(``kitsd servers install kube-apiserver``: built from their Go modules, cached in
``~/.cache/kitsd``).  There is no controller-manager, scheduler or kubelet: nothing
creates EndpointSlices, default service accounts, or finishes a namespace
deletion, so tests write the slices themselves (:class:`KubeAdmin`) in a fresh
namespace each.

Users (static tokens, random per server, never printed): ``admin``
(``system:masters``) and :data:`USERS` (no permission until a test grants one with
:meth:`KubeAdmin.grant`); ``kitsd-client`` through the client certificate.

Starting waits until ``/readyz`` answers ``ok`` (3-5 s).  The API server can be
stopped, killed and restarted on the same port with the same etcd data; etcd's
history can be compacted (:meth:`KubeAPIServer.compact`).  Leaving the context
manager (or ``close()``) kills both and removes the directory.

Not thread-safe: drive a server from one thread.  :class:`KubeAdmin` is a plain
httpx client, safe to use from several threads.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import ssl
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from kitsd.compose.etcd import TLSFiles, make_tls_files
from kitsd.compose.process import LOOPBACK, ServerGroup, ServerProcess, free_ports

__all__ = [
    "APISERVER_BINARY",
    "ETCD_BINARY",
    "USERS",
    "KubeAPIServer",
    "KubeAdmin",
    "KubeNotInstalled",
    "endpoint",
    "host_address",
]

APISERVER_BINARY = os.environ.get("KITSD_KUBE_APISERVER_BINARY", "/usr/local/bin/kube-apiserver")
"""The kube-apiserver binary (``KITSD_KUBE_APISERVER_BINARY`` overrides it)."""
ETCD_BINARY = os.environ.get("KITSD_KUBE_ETCD_BINARY", "/usr/local/bin/kube-etcd")
"""The etcd the API server stores in (``KITSD_KUBE_ETCD_BINARY`` overrides it)."""

USERS = ("reader", "rotated", "lister", "nobody")
"""Users with a static token and, until a test grants them some, no permission."""

_SERVICE_LABEL = "kubernetes.io/service-name"
_SLICES = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


class KubeNotInstalled(FileNotFoundError):
    """kube-apiserver or kube-etcd is missing; the message says how to install them."""


def _require() -> None:
    missing = [path for path in (APISERVER_BINARY, ETCD_BINARY) if not Path(path).is_file()]
    if missing:
        raise KubeNotInstalled(
            f"{' and '.join(missing)} not found. Install them with `kitsd servers install "
            "kube-apiserver`: built from their Go "
            "modules, 6-10 min the first time on 2 cores, seconds from ~/.cache/kitsd after.")


def host_address() -> str | None:
    """A non-loopback IPv4 address of this machine, or ``None``: the API server refuses
    loopback endpoint addresses, so test "pods" listen on this one."""
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        candidates += [str(info[4][0]) for info in socket.getaddrinfo(
            socket.gethostname(), None, socket.AF_INET)]
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.254", 9))  # no packet is sent: this only picks a route
        candidates.append(probe.getsockname()[0])
    except OSError:
        pass
    finally:
        probe.close()
    for address in candidates:
        if address.startswith(("127.", "169.254.", "0.")):
            continue
        test = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            test.bind((address, 0))
        except OSError:
            continue
        finally:
            test.close()
        return address
    return None


def _signing_key(path: Path) -> Path:
    """A throwaway RSA key signing service account tokens (the API server reads RSA keys
    and SEC1 EC keys, not the PKCS#8 EC keys of :func:`compose.etcd.make_tls_files`)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        subprocess.run(["openssl", "genrsa", "-out", str(path), "2048"], check=True,
                       capture_output=True, timeout=60)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def endpoint(address: str, *, ready: bool | None = True, serving: bool | None = None,
             terminating: bool | None = None, zone: str | None = None, node: str | None = None,
             pod: str | None = None, for_zones: Sequence[str] = ()) -> dict[str, Any]:
    """One EndpointSlice endpoint (``None`` leaves a condition out, as the API allows)."""
    conditions = {name: value for name, value in (
        ("ready", ready), ("serving", serving), ("terminating", terminating)) if value is not None}
    entry: dict[str, Any] = {"addresses": [address], "conditions": conditions}
    if zone:
        entry["zone"] = zone
    if node:
        entry["nodeName"] = node
    if pod:
        entry["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "default"}
    if for_zones:
        entry["hints"] = {"forZones": [{"name": name} for name in for_zones]}
    return entry


class KubeAdmin:
    """A small admin client of a :class:`KubeAPIServer` (or any API server): namespaces,
    EndpointSlices, RBAC grants, service account tokens.  Raises ``httpx.HTTPStatusError``
    for a refused request.  ``close()`` closes its connections."""

    def __init__(self, server: str, token: str, ca: ssl.SSLContext | bool) -> None:
        self.server = server
        self._client = httpx.Client(base_url=server, verify=ca, trust_env=False, timeout=20.0,
                                    headers={"Authorization": f"Bearer {token}"})

    def request(self, method: str, path: str, body: object = None,
                params: Mapping[str, str] | None = None) -> Any:
        """One request; the decoded JSON answer.  Raises ``httpx.HTTPStatusError``."""
        response = self._client.request(method, path, json=body, params=params)
        response.raise_for_status()
        return response.json() if response.content else None

    def create_namespace(self, name: str) -> None:
        """Create namespace ``name``."""
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})

    def put_slice(self, namespace: str, name: str, service: str,
                  endpoints: Iterable[Mapping[str, Any]], *, port: int | None = 8080,
                  port_name: str = "http", ports: Sequence[Mapping[str, Any]] | None = None,
                  address_type: str = "IPv4") -> str:
        """Create or replace EndpointSlice ``name`` of ``service``; returns its resourceVersion.

        ``ports`` overrides the one port ``port_name``/``port`` (``port=None``: no port)."""
        if ports is None:
            ports = [] if port is None else [{"name": port_name, "port": port, "protocol": "TCP"}]
        body = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {_SERVICE_LABEL: service}},
            "addressType": address_type, "ports": list(ports), "endpoints": list(endpoints),
        }
        path = _SLICES.format(namespace=namespace)
        try:
            answer = self.request("POST", path, body)
        except httpx.HTTPStatusError as error:
            if error.response.status_code != 409:
                raise
            answer = self.request("PUT", f"{path}/{name}", body)
        return str(answer["metadata"]["resourceVersion"])

    def delete_slice(self, namespace: str, name: str) -> None:
        """Delete EndpointSlice ``name``."""
        self.request("DELETE", f"{_SLICES.format(namespace=namespace)}/{name}")

    def grant(self, namespace: str, user: str, verbs: Sequence[str] = ("list", "watch"), *,
              kind: str = "User", name: str | None = None) -> None:
        """Let ``user`` (a ``User``, or a ``ServiceAccount`` of ``namespace``) ``verbs``
        EndpointSlices in ``namespace`` (a Role and a RoleBinding named ``name``)."""
        name = name or f"kitsd-{user}"
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        self.request("POST", f"{rbac}/roles", {
            "metadata": {"name": name},
            "rules": [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                       "verbs": list(verbs)}]})
        subject: dict[str, str] = {"kind": kind, "name": user}
        if kind == "User":
            subject["apiGroup"] = "rbac.authorization.k8s.io"
        else:
            subject["namespace"] = namespace
        self.request("POST", f"{rbac}/rolebindings", {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [subject]})

    def revoke(self, namespace: str, user: str, *, name: str | None = None) -> None:
        """Undo :meth:`grant`."""
        name = name or f"kitsd-{user}"
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        self.request("DELETE", f"{rbac}/rolebindings/{name}")
        self.request("DELETE", f"{rbac}/roles/{name}")

    def service_account_token(self, namespace: str, account: str, *,
                              bound_secret: str | None = None) -> str:
        """A token of service account ``account`` (created if missing) from the
        TokenRequest API; bound to Secret ``bound_secret`` (created if missing) it stops
        working when the Secret is deleted, as a pod's token does when its pod goes."""
        try:
            self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                         {"metadata": {"name": account}})
        except httpx.HTTPStatusError as error:
            if error.response.status_code != 409:
                raise
        spec: dict[str, Any] = {"audiences": ["https://kubernetes.default.svc"],
                                "expirationSeconds": 3600}
        if bound_secret is not None:
            try:
                secret = self.request("POST", f"/api/v1/namespaces/{namespace}/secrets",
                                      {"metadata": {"name": bound_secret}})
            except httpx.HTTPStatusError as error:
                if error.response.status_code != 409:
                    raise
                secret = self.request("GET",
                                      f"/api/v1/namespaces/{namespace}/secrets/{bound_secret}")
            spec["boundObjectRef"] = {"kind": "Secret", "apiVersion": "v1",
                                      "name": bound_secret, "uid": secret["metadata"]["uid"]}
        answer = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        return str(answer["status"]["token"])

    def delete_secret(self, namespace: str, name: str) -> None:
        """Delete Secret ``name`` (revoking the tokens bound to it)."""
        self.request("DELETE", f"/api/v1/namespaces/{namespace}/secrets/{name}")

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def __enter__(self) -> KubeAdmin:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KubeAdmin({self.server!r})"


class KubeAPIServer(ServerGroup[ServerProcess]):
    """kube-etcd and kube-apiserver on free loopback ports; starts on construction.

    ``server`` is the API server's URL, ``ca_file`` the CA that signed its
    certificate, :meth:`token` a user's bearer token, :meth:`kubeconfig` writes a
    kubeconfig for a user.  ``extra_args``: more kube-apiserver flags.  Raises
    :class:`KubeNotInstalled` without the binaries and ``RuntimeError`` (with the log
    tails) if a process does not become ready.
    """

    def __init__(self, *, start: bool = True, tmp_root: str | None = None,
                 extra_args: Sequence[str] = (), apiservers: int = 1) -> None:
        _require()
        super().__init__("kitsd-kube-", tmp_root)
        try:
            self.tls: TLSFiles = make_tls_files(self.workdir / "tls")
            signing_key = _signing_key(self.workdir / "tls" / "service-accounts.key")
            self._tokens = {user: secrets.token_urlsafe(24) for user in ("admin", *USERS)}
            tokens = self.workdir / "tokens.csv"
            lines = [f"{token},{user},{user}-uid" for user, token in self._tokens.items()]
            lines[0] += ',"system:masters"'  # admin
            tokens.write_text("\n".join(lines) + "\n")
            tokens.chmod(0o600)
            client_port, peer_port, *api_ports = free_ports(2 + apiservers)
            self.etcd = _EtcdProcess("kube-etcd", workdir=self.workdir, client_port=client_port,
                                     peer_port=peer_port)
            self.apiservers = [_APIServerProcess(
                f"kube-apiserver-{index}" if index else "kube-apiserver", workdir=self.workdir,
                port=port, etcd=self.etcd, tls=self.tls, tokens=tokens,
                admin_token=self._tokens["admin"], signing_key=signing_key,
                extra_args=extra_args) for index, port in enumerate(api_ports)]
            self.apiserver = self.apiservers[0]
            self.members = [self.etcd, *self.apiservers]
        except BaseException:
            self.close()
            raise
        if start:
            self._start_or_close()

    def start(self) -> None:
        """Start etcd, wait for it, then the API servers (they need etcd to start)."""
        self.etcd.start()
        self.etcd.wait_ready()
        for apiserver in self.apiservers:
            apiserver.start()
        for apiserver in self.apiservers:
            apiserver.wait_ready()

    @property
    def server(self) -> str:
        """``https://127.0.0.1:<port>``."""
        return self.apiserver.url

    @property
    def ca_file(self) -> Path:
        """The CA (PEM) that signed the API server's certificate."""
        return self.tls.ca

    def token(self, user: str = "admin") -> str:
        """The static bearer token of ``user`` (``admin`` or one of :data:`USERS`)."""
        return self._tokens[user]

    def admin(self, apiserver: int = 0) -> KubeAdmin:
        """A new :class:`KubeAdmin` with the admin token, talking to the first API server
        (or the ``apiserver``-th); close it when done."""
        return KubeAdmin(self.apiservers[apiserver].url, self._tokens["admin"],
                         ssl.create_default_context(cafile=str(self.ca_file)))

    def kubeconfig(self, path: Path, *, user: str | None = "admin", token: str | None = None,
                   token_file: Path | None = None, client_cert: bool = False,
                   namespace: str | None = None, context: str = "kitsd") -> Path:
        """Write a kubeconfig for ``user``'s token (or ``token``, ``token_file``, or the
        client certificate) with context ``context`` as the current one."""
        user_entry: dict[str, Any] = {}
        if client_cert:
            user_entry = {"client-certificate": str(self.tls.client_cert),
                          "client-key": str(self.tls.client_key)}
        elif token_file is not None:
            user_entry = {"tokenFile": str(token_file)}
        elif token is not None or user is not None:
            user_entry = {"token": token if token is not None else self._tokens[str(user)]}
        ctx: dict[str, Any] = {"cluster": "kitsd", "user": "kitsd-user"}
        if namespace:
            ctx["namespace"] = namespace
        document = {
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "kitsd", "cluster": {
                "server": self.server,
                "certificate-authority-data": base64.b64encode(
                    self.ca_file.read_bytes()).decode()}}],
            "users": [{"name": "kitsd-user", "user": user_entry}],
            "contexts": [{"name": context, "context": ctx}],
        }
        path.write_text(json.dumps(document, indent=2))  # JSON is YAML
        path.chmod(0o600)
        return path

    def etcd_revision(self) -> int:
        """etcd's current revision."""
        answer = httpx.post(f"{self.etcd.url}/v3/kv/range",
                            json={"key": base64.b64encode(b"/").decode(), "limit": 1},
                            timeout=10)
        answer.raise_for_status()
        return int(answer.json()["header"]["revision"])

    def compact(self) -> int:
        """Compact etcd's history up to its current revision (as the API server does every
        5 minutes); returns that revision."""
        revision = self.etcd_revision()
        answer = httpx.post(f"{self.etcd.url}/v3/kv/compaction",
                            json={"revision": revision, "physical": True}, timeout=30)
        answer.raise_for_status()
        return revision

    def __repr__(self) -> str:
        return f"KubeAPIServer({self.apiserver!r})"


class _EtcdProcess(ServerProcess):
    kind = "kube-etcd"
    start_timeout = 20.0

    def __init__(self, name: str, *, workdir: Path, client_port: int, peer_port: int) -> None:
        super().__init__(name, workdir=workdir)
        self.client_port = client_port
        self.peer_port = peer_port

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.client_port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def command(self) -> list[str]:
        peer = f"http://{LOOPBACK}:{self.peer_port}"
        return [
            ETCD_BINARY, "--name", self.name, "--data-dir", str(self.workdir / "etcd-data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}", "--unsafe-no-fsync",
            "--log-level", "warn",
        ]

    def ready(self) -> bool:
        if not self.running:
            return False
        answer = httpx.get(f"{self.url}/health", timeout=1.0)
        return answer.status_code == 200 and answer.json().get("health") == "true"


class _APIServerProcess(ServerProcess):
    kind = "kube-apiserver"
    start_timeout = 60.0

    def __init__(self, name: str, *, workdir: Path, port: int, etcd: _EtcdProcess,
                 tls: TLSFiles, tokens: Path, admin_token: str, signing_key: Path,
                 extra_args: Sequence[str]) -> None:
        super().__init__(name, workdir=workdir)
        self.port = port
        self._etcd = etcd
        self._tls = tls
        self._tokens = tokens
        self._admin_token = admin_token
        self._signing_key = signing_key
        self._verify = ssl.create_default_context(cafile=str(tls.ca))
        self._extra_args = tuple(extra_args)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    def command(self) -> list[str]:
        return [
            APISERVER_BINARY,
            f"--etcd-servers={self._etcd.url}",
            "--etcd-compaction-interval=0",  # the tests compact when they mean to
            f"--bind-address={LOOPBACK}", f"--secure-port={self.port}",
            f"--advertise-address={LOOPBACK}", "--endpoint-reconciler-type=none",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--tls-cert-file={self._tls.server_cert}",
            f"--tls-private-key-file={self._tls.server_key}",
            f"--client-ca-file={self._tls.ca}",
            "--authorization-mode=RBAC", f"--token-auth-file={self._tokens}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={self._signing_key}",
            f"--service-account-signing-key-file={self._signing_key}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            "--enable-priority-and-fairness=false",
            *self._extra_args,
        ]

    def ready(self) -> bool:
        if not self.running:
            return False
        answer = httpx.get(f"{self.url}/readyz", timeout=2.0, verify=self._verify,
                           headers={"Authorization": f"Bearer {self._admin_token}"},
                           trust_env=False)
        return answer.status_code == 200

