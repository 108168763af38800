"""Where the API server is and how to authenticate: :class:`ClusterConfig`.

Configuration the way Kubernetes users expect it:

* **in-cluster** (:meth:`ClusterConfig.in_cluster`): the API server from
  ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``, the pod's service
  account token, CA and namespace from
  ``/var/run/secrets/kubernetes.io/serviceaccount``.  The token file is read
  again whenever it changes on disk (the kubelet rotates projected tokens) and
  after any ``401``, so a rotated token is used from the next request on.
* **kubeconfig** (:meth:`ClusterConfig.from_kubeconfig`): ``$KUBECONFIG`` (a
  ``:``-separated list, merged as kubectl merges it: the first file that
  defines a name wins) or ``~/.kube/config``; the current context or a named
  one.  Clusters: ``server``, ``certificate-authority(-data)``,
  ``insecure-skip-tls-verify``, ``tls-server-name``, ``proxy-url``.  Users:
  ``token``, ``tokenFile`` (re-read as in-cluster), ``client-certificate(-data)``
  with ``client-key(-data)``, and ``exec`` credential plugins
  (``client.authentication.k8s.io`` ``v1``/``v1beta1``: the token they print is
  kept until its ``expirationTimestamp`` or a ``401``).  Legacy
  ``auth-provider`` entries and basic auth are refused with a message saying so.
* :meth:`ClusterConfig.load` picks, as controller-runtime does: ``$KUBECONFIG``
  if set, else in-cluster if running in a pod, else ``~/.kube/config``.

Secrets: tokens, client keys and exec plugin output are never logged, never in a
``repr`` and never in an error message.  Reading a kubeconfig needs PyYAML
(``pip install 'kitsd[k8s]'``); in-cluster configuration needs nothing more.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import functools
import json
import os
import re
import signal
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from kitsd.core.errors import MisuseError, PermissionDeniedError, clip, shown_value
from kitsd.core.redact import redact_url

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "ClusterConfig",
    "ExecToken",
    "StaticToken",
    "TokenFile",
    "TokenSource",
]

SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where a pod finds its service account's ``token``, ``ca.crt`` and ``namespace``."""

_EXEC_TIMEOUT: Final = 30.0  # seconds an exec credential plugin may take
_EXPIRY_MARGIN: Final = dt.timedelta(seconds=10)  # renew exec tokens this much early
_NAMESPACE: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _check_token(token: str, where: str) -> str:
    token = token.strip()
    if not token or any(char in token for char in "\r\n\0"):
        raise PermissionDeniedError(f"the bearer token from {where} is empty or not one line")
    return token


@runtime_checkable
class TokenSource(Protocol):
    """Where the bearer token comes from.  ``token()`` returns the current one
    (``refresh=True``: after a ``401``, read it again); it may block (a file read, an
    exec plugin), so the watch calls it off the event loop when ``blocking`` is set.
    Implementations are thread-safe and never show the token in ``repr``."""

    @property
    def blocking(self) -> bool: ...

    def token(self, *, refresh: bool = False) -> str: ...


@dataclass(frozen=True)
class StaticToken:
    """A fixed bearer token (kubeconfig ``token``)."""

    value: str = field(repr=False)
    blocking: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.value, str):
            raise TypeError("token must be a string")
        object.__setattr__(self, "value", _check_token(self.value, "the configuration"))

    def token(self, *, refresh: bool = False) -> str:
        """The token."""
        return self.value

    def __repr__(self) -> str:
        return "StaticToken(***)"


class TokenFile:
    """A bearer token in a file that may be rotated (a pod's service account token,
    kubeconfig ``tokenFile``): read again whenever the file changes (its inode, size
    or modification time -- the kubelet swaps a symlink) or after a ``401``."""

    blocking = False  # a stat() per request, a read when it changed

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise TypeError(f"path must be a file path, not {type(path).__name__}")
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def token(self, *, refresh: bool = False) -> str:
        """The token in the file now."""
        try:
            info = self.path.stat()
        except OSError as error:
            raise PermissionDeniedError(
                f"cannot read the bearer token file {self.path}: {error.strerror}") from error
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            if refresh or stamp != self._stamp:
                try:
                    text = self.path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as error:
                    raise PermissionDeniedError(
                        f"cannot read the bearer token file {self.path}") from error
                self._token = _check_token(text, f"file {self.path}")
                self._stamp = stamp
            return self._token

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenFile) and other.path == self.path

    def __hash__(self) -> int:
        return hash(("TokenFile", self.path))

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"


class ExecToken:
    """A token printed by a kubeconfig ``exec`` credential plugin (``aws eks
    get-token``, ``gke-gcloud-auth-plugin``, ``kubelogin``...): run when first needed,
    again when the token's ``expirationTimestamp`` is near or after a ``401``.

    ``command``/``args``/``env`` as in the kubeconfig; ``api_version`` is the
    ``ExecCredential`` version asked for.  Errors name the command, never its output.
    """

    blocking = True

    def __init__(self, command: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 *, api_version: str = "client.authentication.k8s.io/v1",
                 base_dir: str | None = None) -> None:
        if not isinstance(command, str) or not command:
            raise MisuseError("exec credential plugin: command must be a non-empty string")
        if isinstance(args, str | bytes) or not isinstance(args, Sequence) \
                or not all(isinstance(arg, str) for arg in args):
            raise TypeError("exec credential plugin: args must be a list of strings")
        if env is not None and (not isinstance(env, Mapping) or not all(
                isinstance(key, str) and isinstance(value, str) for key, value in env.items())):
            raise TypeError("exec credential plugin: env must map strings to strings")
        if not isinstance(api_version, str):
            raise TypeError("exec credential plugin: api_version must be a string")
        if "/" in command and not os.path.isabs(command) and base_dir:
            command = os.path.normpath(os.path.join(base_dir, command))  # as kubectl does
        self.command = command
        self.args = tuple(args)
        self.env = dict(env or {})
        self.api_version = api_version
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires: dt.datetime | None = None

    def token(self, *, refresh: bool = False) -> str:
        """The plugin's token, running it if there is none, it expires, or ``refresh``."""
        with self._lock:
            now = dt.datetime.now(dt.UTC)
            if (self._token is None or refresh
                    or (self._expires is not None and now >= self._expires - _EXPIRY_MARGIN)):
                self._token, self._expires = self._run()
            return self._token

    def _run(self) -> tuple[str, dt.datetime | None]:
        what = f"exec credential plugin {clip(self.command, 80)!r}"
        request = {"apiVersion": self.api_version, "kind": "ExecCredential",
                   "spec": {"interactive": False}}
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(request)}
        try:
            done = _run_plugin([self.command, *self.args], env)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PermissionDeniedError(f"{what} could not run: {type(error).__name__}") \
                from None
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise PermissionDeniedError(f"{what} exited with status {done.returncode}: "
                                        f"{clip(said[0], 200)}")
        try:
            answer = json.loads(done.stdout)
            status = answer["status"]
            token = status["token"]
        except (ValueError, KeyError, TypeError):
            raise PermissionDeniedError(
                f"{what} printed no ExecCredential with status.token (client certificates "
                "from exec plugins are not supported)") from None
        if not isinstance(token, str):
            raise PermissionDeniedError(f"{what} printed a status.token that is not a string")
        expires = None
        stamp = status.get("expirationTimestamp") if isinstance(status, dict) else None
        if isinstance(stamp, str):
            with contextlib.suppress(ValueError):
                expires = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
                if expires.tzinfo is None:
                    expires = expires.replace(tzinfo=dt.UTC)
        return _check_token(token, what), expires

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExecToken) and (
            other.command, other.args, other.env, other.api_version) == (
            self.command, self.args, self.env, self.api_version)

    def __hash__(self) -> int:
        return hash(("ExecToken", self.command, self.args, tuple(sorted(self.env.items()))))

    def __repr__(self) -> str:
        return f"ExecToken({self.command!r})"


def _run_plugin(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run an exec credential plugin in a process group of its own, at most
    :data:`_EXEC_TIMEOUT` seconds (also while a child it left behind holds its output
    open); on timeout the whole group is killed (a plugin's children -- a shell's
    background job, a helper it forked -- are not left running) and ``TimeoutExpired``
    raised."""
    with subprocess.Popen(  # noqa: S603 - the command the user's kubeconfig names
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=_EXEC_TIMEOUT)
        except subprocess.TimeoutExpired:
            # the leader is not reaped yet (alive, or a zombie), so its group id is
            # still its own: no other process can be hit
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@dataclass(frozen=True)
class ClusterConfig:
    """How to reach one API server: its ``server`` URL (``https://host:port``), the
    CA to verify it (``ca``: PEM text; ``None``: the system's), ``verify`` (``False``
    only for kubeconfig's ``insecure-skip-tls-verify``), a bearer ``token`` source,
    a client certificate (``client_cert``/``client_key``: PEM text),
    the default ``namespace``, ``tls_server_name`` (the name to verify instead of
    the host), a ``proxy`` URL, and ``source`` (where it came from, for messages).

    Frozen and hashable: instancers with equal configs share one watch.  ``repr``
    and errors never show the token or the key.  Raises ``TypeError`` or
    :class:`~kitsd.core.errors.MisuseError` naming a bad field.
    """

    server: str
    ca: str | None = field(default=None, repr=False)
    verify: bool = True
    token: TokenSource | None = None
    client_cert: str | None = field(default=None, repr=False)
    client_key: str | None = field(default=None, repr=False)
    namespace: str = "default"
    tls_server_name: str | None = None
    proxy: str | None = field(default=None, repr=False)  # may hold a password: see __repr__
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.server, str) or not re.fullmatch(
                r"https?://[^/?#@\s]+/?", self.server):
            shown = redact_url(self.server) if isinstance(self.server, str) \
                else shown_value(self.server)
            raise MisuseError(f"server must be an http(s)://host:port URL without a path or "
                              f"credentials, not {shown}")
        object.__setattr__(self, "server", self.server.rstrip("/"))
        if not isinstance(self.verify, bool):
            raise TypeError("verify must be a bool")
        for name in ("ca", "client_cert", "client_key", "tls_server_name"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string (PEM text or a name) or None, "
                                f"not {type(value).__name__}")
        if not isinstance(self.source, str):
            raise TypeError(f"source must be a string, not {type(self.source).__name__}")
        if self.proxy is not None and (not isinstance(self.proxy, str) or not re.fullmatch(
                r"(https?|socks5h?)://[^/?#\s]+/?", self.proxy)):
            shown = redact_url(self.proxy) if isinstance(self.proxy, str) \
                else shown_value(self.proxy)
            raise MisuseError(f"proxy must be an http(s):// or socks5:// URL, not {shown}")
        if self.token is not None and not isinstance(self.token, TokenSource):
            raise TypeError("token must be a TokenSource (StaticToken, TokenFile, ExecToken)")
        if (self.client_cert is None) != (self.client_key is None):
            raise MisuseError("client_cert and client_key go together")
        if not isinstance(self.namespace, str) or not _NAMESPACE.fullmatch(self.namespace) \
                or len(self.namespace) > 63:
            raise MisuseError(
                f"namespace must be a DNS label, not {clip(str(self.namespace), 80)!r}")

    def __repr__(self) -> str:
        proxy = f", proxy={redact_url(self.proxy)!r}" if self.proxy else ""
        return (f"ClusterConfig(server={self.server!r}, verify={self.verify}, "
                f"token={self.token!r}, namespace={self.namespace!r}, "
                f"tls_server_name={self.tls_server_name!r}{proxy}, source={self.source!r})")

    # -- loaders ----------------------------------------------------------------

    @classmethod
    def in_cluster(cls, *, root: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR,
                   environ: Mapping[str, str] | None = None) -> ClusterConfig:
        """The configuration of a pod: ``KUBERNETES_SERVICE_HOST``/``_PORT`` and the
        service account files under ``root``.  Raises
        :class:`~kitsd.core.errors.MisuseError` outside a pod (saying what is missing)."""
        environ = os.environ if environ is None else environ
        if not isinstance(environ, Mapping):
            raise TypeError(f"environ must be a mapping, not {type(environ).__name__}")
        if not isinstance(root, str | os.PathLike):
            raise TypeError(f"root must be a directory path, not {type(root).__name__}")
        host = environ.get("KUBERNETES_SERVICE_HOST", "").strip()
        port = environ.get("KUBERNETES_SERVICE_PORT", "").strip() or "443"
        base = Path(root)
        if not host:
            raise MisuseError("not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set")
        if not (base / "token").is_file():
            raise MisuseError(f"not running in a Kubernetes pod: no service account token at "
                              f"{base / 'token'}")
        if not port.isdigit():
            raise MisuseError(
                f"KUBERNETES_SERVICE_PORT must be a port number, not {clip(port, 20)!r}")
        ca = _read_text(base / "ca.crt") if (base / "ca.crt").is_file() else None
        namespace = "default"
        if (base / "namespace").is_file():
            namespace = _read_text(base / "namespace").strip() or "default"
        server_host = f"[{host}]" if ":" in host else host
        return cls(server=f"https://{server_host}:{port}", ca=ca, token=TokenFile(base / "token"),
                   namespace=namespace, source="in-cluster service account")

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str] | Sequence[str] | None = None, *,
                        context: str | None = None) -> ClusterConfig:
        """The configuration of a kubeconfig context (``context``, or the current one).

        ``path``: a file, a list of files, or ``None`` for ``$KUBECONFIG`` else
        ``~/.kube/config``.  Raises :class:`~kitsd.core.errors.MisuseError` for a
        missing file or context and anything this loader cannot use, and
        ``ImportError`` naming the extra without PyYAML.
        """
        if context is not None and not isinstance(context, str):
            raise TypeError(f"context must be a context name or None, not "
                            f"{type(context).__name__}")
        files = _kubeconfig_files(path)
        merged = _merge([_load_yaml(file) for file in files])
        shown = os.pathsep.join(str(file) for file in files)
        name = context or merged["current-context"]
        if not name:
            raise MisuseError(f"kubeconfig {shown} has no current-context: name one "
                              "(context=, or ?context= in a k8s:// URL)")
        ctx = merged["contexts"].get(name)
        if ctx is None:
            raise MisuseError(f"kubeconfig {shown} has no context {clip(name, 80)!r}")
        cluster = merged["clusters"].get(str(ctx.get("cluster", "")))
        if cluster is None:
            raise MisuseError(f"kubeconfig context {clip(name, 80)!r} names cluster "
                              f"{clip(str(ctx.get('cluster')), 80)!r}, which {shown} lacks")
        user = merged["users"].get(str(ctx.get("user", "")), ({}, ""))
        return _config_from(cluster, user, namespace=str(ctx.get("namespace") or "default"),
                            source=f"kubeconfig {shown}, context {name}")

    @classmethod
    def load(cls, *, context: str | None = None, kubeconfig: str | None = None) -> ClusterConfig:
        """The configuration a Kubernetes user expects: an explicit ``kubeconfig``
        or ``context``, else ``$KUBECONFIG``, else in-cluster in a pod, else
        ``~/.kube/config``.  Raises :class:`~kitsd.core.errors.MisuseError` when none
        is found (saying where it looked)."""
        if kubeconfig is not None and not isinstance(kubeconfig, str | os.PathLike):
            raise TypeError(f"kubeconfig must be a file path or None, not "
                            f"{type(kubeconfig).__name__}")
        if kubeconfig is not None or context is not None or os.environ.get("KUBECONFIG"):
            return cls.from_kubeconfig(kubeconfig, context=context)
        in_pod = Path(SERVICE_ACCOUNT_DIR, "token").is_file()
        if os.environ.get("KUBERNETES_SERVICE_HOST") and in_pod:
            return cls.in_cluster()
        home = Path.home() / ".kube" / "config"
        if home.is_file():
            return cls.from_kubeconfig(home)
        raise MisuseError("no Kubernetes configuration: set KUBECONFIG, run in a pod, or "
                          f"create {home}")

    # -- TLS --------------------------------------------------------------------

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context (built once).  Raises :class:`~kitsd.core.errors.MisuseError`
        for a CA or client certificate that cannot be loaded."""
        try:
            if self.ca is not None:
                context = ssl.create_default_context(cadata=self.ca)
            else:
                context = ssl.create_default_context()
        except (ssl.SSLError, ValueError) as error:
            raise MisuseError(f"the cluster CA of {self.source or self.server} cannot be "
                              f"loaded: {error}") from None
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None and self.client_key is not None:
            _load_client_cert(context, self.client_cert, self.client_key,
                              self.source or self.server)
        return context


# -- kubeconfig ------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise MisuseError(f"cannot read {path}: {error}") from error


def _kubeconfig_files(path: str | os.PathLike[str] | Sequence[str] | None) -> list[Path]:
    if path is None:
        env = os.environ.get("KUBECONFIG", "")
        names = [name for name in env.split(os.pathsep) if name.strip()] if env else \
            [str(Path.home() / ".kube" / "config")]
    elif isinstance(path, str | os.PathLike):
        names = [os.fspath(path)]
    elif isinstance(path, Sequence) and not isinstance(path, bytes) \
            and all(isinstance(name, str | os.PathLike) for name in path):
        names = [os.fspath(name) for name in path]
    else:
        raise TypeError(f"the kubeconfig path must be a file path or a list of them, not "
                        f"{type(path).__name__}")
    files = [Path(name).expanduser() for name in names]
    existing = [file for file in files if file.is_file()]
    if not existing:
        raise MisuseError(f"no kubeconfig file at {os.pathsep.join(map(str, files))}")
    return existing


def _load_yaml(path: Path) -> tuple[Path, Mapping[str, Any]]:
    try:
        import yaml
    except ImportError as error:
        raise ImportError(f"reading a kubeconfig needs PyYAML: pip install 'kitsd[k8s]' "
                          f"({error})") from error
    text = _read_text(path)
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise MisuseError(f"kubeconfig {path} is not YAML ({type(error).__name__})") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise MisuseError(f"kubeconfig {path} is not a mapping")
    return path, loaded


def _merge(documents: list[tuple[Path, Mapping[str, Any]]]) -> dict[str, Any]:
    """kubectl's merge: the first file that sets a value (or defines a name) wins."""
    merged: dict[str, Any] = {"current-context": "", "clusters": {}, "users": {}, "contexts": {}}
    for path, document in documents:
        if not merged["current-context"] and isinstance(document.get("current-context"), str):
            merged["current-context"] = document["current-context"]
        for section, inner in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            entries = document.get(section) or []
            if not isinstance(entries, list):
                raise MisuseError(f"kubeconfig {path}: {section} must be a list")
            for entry in entries:
                if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                    raise MisuseError(f"kubeconfig {path}: an entry of {section} has no name")
                body = entry.get(inner) or {}
                if not isinstance(body, dict):
                    raise MisuseError(f"kubeconfig {path}: {section} entry "
                                      f"{clip(entry['name'], 80)!r} is not a mapping")
                # clusters and users keep their file: relative paths are relative to it
                value = body if section == "contexts" else (body, str(path.parent))
                merged[section].setdefault(entry["name"], value)
    return merged


def _file_or_data(body: Mapping[str, Any], key: str, base: str, what: str) -> str | None:
    """PEM text from ``key-data`` (base64) or the file ``key`` (relative to ``base``)."""
    data = body.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise MisuseError(f"{what}: {key}-data is not base64 PEM") from None
    name = body.get(key)
    if name:
        file = Path(base, str(name)).expanduser()
        return _read_text(file)
    return None


def _config_from(cluster_entry: tuple[Mapping[str, Any], str],
                 user_entry: tuple[Mapping[str, Any], str], *, namespace: str,
                 source: str) -> ClusterConfig:
    cluster, cluster_dir = cluster_entry
    user, user_dir = user_entry
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise MisuseError(f"{source}: the cluster has no server")
    token: TokenSource | None = None
    if user.get("auth-provider"):
        raise MisuseError(f"{source}: auth-provider entries are not supported (Kubernetes "
                          "removed them in 1.26): use an exec credential plugin")
    if user.get("username") or user.get("password"):
        raise MisuseError(f"{source}: basic auth (username/password) is not supported: use "
                          "a token or a client certificate")
    if user.get("token"):
        token = StaticToken(str(user["token"]))
    elif user.get("tokenFile"):
        token = TokenFile(Path(user_dir, str(user["tokenFile"])).expanduser())
    elif isinstance(user.get("exec"), dict):
        spec = user["exec"]
        env = {str(item.get("name")): str(item.get("value", ""))
               for item in spec.get("env") or [] if isinstance(item, dict)}
        args = [str(arg) for arg in spec.get("args") or []]
        token = ExecToken(str(spec.get("command", "")), args, env,
                          api_version=str(spec.get("apiVersion")
                                          or "client.authentication.k8s.io/v1"),
                          base_dir=user_dir)
    cert = _file_or_data(user, "client-certificate", user_dir, source)
    key = _file_or_data(user, "client-key", user_dir, source)
    if (cert is None) != (key is None):
        raise MisuseError(f"{source}: a client certificate needs its key, and a key its "
                          "certificate")
    proxy = cluster.get("proxy-url")
    return ClusterConfig(
        server=server,
        ca=_file_or_data(cluster, "certificate-authority", cluster_dir, source),
        verify=not bool(cluster.get("insecure-skip-tls-verify")),
        token=token,
        client_cert=cert,
        client_key=key,
        namespace=namespace,
        tls_server_name=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
        proxy=str(proxy) if proxy else None,
        source=source,
    )


def _load_client_cert(context: ssl.SSLContext, cert: str, key: str, source: str) -> None:
    """Load PEM text into ``context``: the ssl module reads certificates from files
    only, so they go through a private temporary directory, removed at once."""
    with tempfile.TemporaryDirectory(prefix="kitsd-k8s-") as directory:
        cert_file = Path(directory, "client.crt")
        key_file = Path(directory, "client.key")
        for file, text in ((cert_file, cert), (key_file, key)):
            descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
        try:
            context.load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, ValueError) as error:
            raise MisuseError(f"the client certificate of {source} cannot be loaded "
                              f"({type(error).__name__})") from None
