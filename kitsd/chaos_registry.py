"""The registries ``kitsd chaos`` runs against, and the faults each allows.

A :class:`ChaosRegistry` gives the chaos run four things: the arguments with
which an instance process registers itself (:meth:`~ChaosRegistry.instance_args`),
the client's instancer (its connections pass through a :class:`~compose.proxy.
BlackHoleProxy` per server, so the client can be cut off its registry), the
registry-side faults (kill and restart the leader, lose a registration behind
its registrar's back), and a raw check of what the registry holds.

* :class:`EtcdChaos` -- a 3-member :class:`compose.etcd.EtcdCluster` we start, or
  the servers of an ``etcd://h:p,h:p/prefix/`` URL (no leader faults then);
  instances register with :class:`sd.etcd.EtcdRegistrar` under a fresh prefix; a
  lost registration is its key deleted through etcd's JSON API while its lease lives.
* :class:`ConsulChaos` -- a 3-server :class:`compose.consul.ConsulCluster` we
  start, or the agent of a ``consul://h:p`` URL; instances register with one
  follower's agent, the client watches through another's (so a leader kill
  does not take either agent away); a lost registration is the service
  deregistered through the agent's HTTP API.
* :class:`K8sChaos` -- a real kube-apiserver (:class:`compose.kubernetes.KubeAPIServer`)
  we start; a health checker here plays the kubelet and the EndpointSlice controller:
  it writes each instance that answers ``/health`` as a ready endpoint (a slice of
  its own, as the instances' ports differ) and marks it not ready after two misses.
  Two API servers share its etcd, behind one proxy that connects to the first that
  accepts (a highly available control plane behind its load balancer); the leader
  fault kills and restarts the one the client uses.  A lost registration is the
  instance's slice deleted (the checker writes it back, as the controller would).
  Instances listen on this machine's non-loopback address (the API server refuses
  loopback endpoints).
* :class:`MemoryChaos` -- an in-process :class:`sd.MemoryRegistry`; the
  instances are processes, so a health checker here registers each one that
  answers ``/health`` and deregisters one that does not (as an agent's check
  would).  No leader, nothing to cut off.

Not thread-safe unless said: the chaos run drives a registry from one thread
(:class:`MemoryChaos`'s checker runs on its own, under its lock).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from kitsd import sd
from kitsd.compose.proxy import BlackHoleProxy
from kitsd.core.redact import redact_url, shown_address
from kitsd.sd.instance import split_address

__all__ = ["ChaosRegistry", "ConsulChaos", "EtcdChaos", "K8sChaos", "MemoryChaos",
           "check_url", "open_registry"]

_TIMEOUT = 2.0
# A service name a request URL's host carries as written (httpx lower-cases hosts).
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _http(method: str, url: str, body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http:// of a registry we were given
    with urllib.request.urlopen(request, timeout=_TIMEOUT) as answer:  # noqa: S310
        raw = answer.read()
    return json.loads(raw) if raw.strip() else None


def _why(error: BaseException) -> str:
    """Why an HTTP request to a registry failed, in a few fixed words."""
    if isinstance(error, urllib.error.HTTPError):
        return f"it answered HTTP {error.code}, as no registry of that kind would"
    reason = getattr(error, "reason", error)  # URLError wraps the socket's error
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "host name not found"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {_TIMEOUT:g}s"
    if isinstance(error, ValueError):  # an answer that is not JSON
        return "its answer is not a registry's"
    return f"cannot connect ({type(reason).__name__})"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class ChaosRegistry:
    """A registry under chaos (see the module docstring); the base is a registry with no
    registry-side faults."""

    name = "registry"
    can_kill_leader = False
    can_cut = False
    ttl = 2.0
    """Registration TTL (seconds) instances are started with."""
    instance_host = "127.0.0.1"
    """The address the instances listen on and are registered at."""

    def instance_args(self, port: int) -> list[str]:
        """How an instance on ``port`` registers itself (arguments of ``kitsd.chaos_instance``)."""
        return []

    def open_instancer(self) -> sd.Instancer:
        """The client's instancer (through the proxies when there are any)."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise :class:`sd.RegistryUnavailableError` (one line: where, and why) when the
        registry does not answer: run before anything else starts, so a wrong
        ``--registry-url`` is said at once, not by a failed instance's traceback."""

    def transport_discover(self) -> tuple[Any, str]:
        """``(discover, service)`` for a :class:`kitsd.Transport` loading the service
        (through the proxies when there are any): a registry URL template where
        the registry has one, so the transport's own discovery is what runs."""
        return (lambda service: self.open_instancer()), "kitsd-chaos"

    def cut(self, on: bool) -> None:
        """Cut the client off its registry (``on``) or let it through again."""
        raise NotImplementedError(f"{self.name}: nothing to cut off")

    def kill_leader(self) -> str:
        """Kill the leader (SIGKILL); returns what was killed."""
        raise NotImplementedError(f"{self.name}: no leader to kill")

    def restart_leader(self) -> None:
        """Restart what :meth:`kill_leader` killed and wait until it serves."""
        raise NotImplementedError(f"{self.name}: no leader to restart")

    def lose_registration(self, instance: str) -> None:
        """Remove ``instance``'s registration behind its registrar's back."""
        raise NotImplementedError

    def registered(self, instance: str) -> bool:
        """Whether the registry (asked directly, not through the proxies) lists ``instance``."""
        raise NotImplementedError

    def watch(self, instances: list[Any]) -> None:
        """Told the instance processes once they started (the memory registry checks them)."""

    def harness_ports(self) -> set[int]:
        """The TCP ports of what stands in for the network here (the proxies' own, and
        the servers' behind them), whose sockets are not the client's."""
        return set()

    def describe(self) -> str:
        """One line for the report."""
        return self.name

    def close(self) -> None:
        """Stop every server, proxy and client this object started."""


class _Proxied(ChaosRegistry):
    can_cut = True

    def __init__(self, targets: list[str]) -> None:
        self._proxies: list[BlackHoleProxy] = []
        try:
            for target in targets:
                self._proxies.append(BlackHoleProxy(*_split(target)))
        except BaseException:
            self._close_proxies()
            raise

    @property
    def proxied(self) -> list[str]:
        return [proxy.endpoint for proxy in self._proxies]

    def harness_ports(self) -> set[int]:
        ports = set()
        for proxy in self._proxies:
            ports.add(proxy.port)
            ports.update(port for _, port in proxy.targets)
        return ports

    def cut(self, on: bool) -> None:
        for proxy in self._proxies:
            if on:
                proxy.stall()
            else:
                proxy.resume()

    def _close_proxies(self) -> None:
        for proxy in self._proxies:
            proxy.close()


class EtcdChaos(_Proxied):
    """etcd: our own 3-member cluster, or ``endpoints`` someone else runs."""

    name = "etcd"
    ttl = 3.0

    def __init__(self, *, endpoints: list[str] | None = None, prefix: str = "/kitsd-chaos/",
                 members: int = 3, existing: bool = False) -> None:
        from kitsd.compose.etcd import EtcdCluster

        self.cluster = None if endpoints else EtcdCluster(members)
        self.endpoints = endpoints or (self.cluster.endpoints if self.cluster else [])
        self.can_kill_leader = self.cluster is not None
        # a fresh prefix for our own instances; ``existing``: the prefix of a running service
        self.prefix = (f"{prefix.rstrip('/')}/" if existing else
                       f"{prefix.rstrip('/')}/{uuid.uuid4().hex[:10]}/")
        self._clients: list[Any] = []
        self._killed: Any = None
        try:
            super().__init__(self.endpoints)
        except BaseException:
            if self.cluster is not None:
                self.cluster.close()
            raise

    def instance_args(self, port: int) -> list[str]:
        return ["--etcd", ",".join(self.endpoints), "--prefix", self.prefix,
                "--ttl", f"{self.ttl:g}"]

    def open_instancer(self) -> sd.Instancer:
        from kitsd import sd
        client = sd.etcd.connect(endpoints=self.proxied)
        self._clients.append(client)
        return sd.etcd.EtcdInstancer(client, self.prefix)

    def transport_discover(self) -> tuple[Any, str]:
        parent, _, name = self.prefix.rstrip("/").rpartition("/")
        if not _HOST_LABEL.fullmatch(name):
            return super().transport_discover()
        return f"etcd://{','.join(self.proxied)}{parent}/{{service}}/", name

    def kill_leader(self) -> str:
        if self.cluster is None:
            return super().kill_leader()
        self._killed = self.cluster.leader()
        self._killed.kill()
        return f"etcd leader {self._killed.name} ({self._killed.endpoint})"

    def restart_leader(self) -> None:
        if self._killed is not None:
            self._killed.restart()
            self._killed = None

    def _gateway(self, path: str, body: dict[str, object]) -> Any:
        last: Exception | None = None
        for endpoint in self.endpoints:
            try:
                return _http("POST", f"http://{endpoint}/v3/{path}", body)
            except OSError as error:  # that member is down: ask the next one
                last = error
        raise OSError(f"no etcd member answered /v3/{path}: {last}")

    def _lease_of(self, instance: str) -> int | None:
        key = base64.b64encode(f"{self.prefix}{instance}".encode()).decode()
        answer = self._gateway("kv/range", {"key": key})
        kvs = answer.get("kvs") or []
        return int(kvs[0].get("lease", 0)) if kvs else None

    def lose_registration(self, instance: str) -> None:
        """Delete the key while its lease lives (an operator's ``etcdctl del``); the
        registrar's next keep-alive round finds it gone and puts it back."""
        key = base64.b64encode(f"{self.prefix}{instance}".encode()).decode()
        self._gateway("kv/deleterange", {"key": key})

    def registered(self, instance: str) -> bool:
        return self._lease_of(instance) is not None

    def check(self) -> None:
        if self.cluster is None:  # someone else's: does an etcd answer there?
            errors = []
            for endpoint in self.endpoints:
                try:
                    _http("POST", f"http://{endpoint}/v3/maintenance/status", {})
                except (OSError, ValueError) as error:
                    errors.append(f"{shown_address(endpoint)}: {_why(error)}")
                else:
                    return
            raise sd.RegistryUnavailableError(
                f"no etcd answered at {'; '.join(errors)} (--registry-url names etcd's "
                f"client address, as etcd://127.0.0.1:2379/prefix/)")

    def describe(self) -> str:
        where = "3-member cluster on loopback" if self.cluster else ",".join(self.endpoints)
        return f"etcd ({where}), prefix {self.prefix}"

    def close(self) -> None:
        from kitsd import sd
        for client in self._clients:
            with contextlib.suppress(Exception):
                sd.etcd.close_client(client)
        self._close_proxies()
        if self.cluster is not None:
            self.cluster.close()


class ConsulChaos(_Proxied):
    """Consul: our own 3-server cluster, or the agent at ``agent`` someone else runs."""

    name = "consul"
    ttl = 2.0

    def __init__(self, *, agent: str | None = None, servers: int = 3,
                 service: str | None = None) -> None:
        from kitsd.compose.consul import ConsulCluster

        self.cluster = None if agent else ConsulCluster(servers)
        if self.cluster is not None:
            followers = self.cluster.followers()
            self.register_agent = followers[0].http_addr
            self.watch_agent = followers[-1].http_addr
        else:
            self.register_agent = self.watch_agent = str(agent)
        self.can_kill_leader = self.cluster is not None
        self.service = service or f"kitsd-chaos-{uuid.uuid4().hex[:8]}"
        self._clients: list[Any] = []
        self._killed: Any = None
        try:
            super().__init__([self.watch_agent])
        except BaseException:
            if self.cluster is not None:
                self.cluster.close()
            raise

    def instance_args(self, port: int) -> list[str]:
        return ["--consul", self.register_agent, "--service", self.service,
                "--ttl", f"{self.ttl:g}"]

    def check(self) -> None:
        if self.cluster is None:  # someone else's: does a Consul agent answer there?
            try:
                _http("GET", f"http://{self.watch_agent}/v1/status/leader")
            except (OSError, ValueError) as error:
                raise sd.RegistryUnavailableError(
                    f"no Consul agent answered at {shown_address(self.watch_agent)}: "
                    f"{_why(error)} (--registry-url names an agent's HTTP address, as "
                    f"consul://127.0.0.1:8500)") from None

    def open_instancer(self) -> sd.Instancer:
        from kitsd import sd
        client = sd.consul.connect(self.proxied[0])
        self._clients.append(client)
        return sd.consul.ConsulInstancer(client, self.service)

    def transport_discover(self) -> tuple[Any, str]:
        if not _HOST_LABEL.fullmatch(self.service):
            return super().transport_discover()
        return f"consul://{self.proxied[0]}/{{service}}", self.service

    def kill_leader(self) -> str:
        if self.cluster is None:
            return super().kill_leader()
        self._killed = self.cluster.leader()
        self._killed.kill()
        return f"Consul leader {self._killed.name} ({self._killed.http_addr})"

    def restart_leader(self) -> None:
        if self._killed is not None:
            self._killed.restart()
            self._killed = None
            if self.cluster is not None:
                self.cluster.leader(timeout=30)

    def lose_registration(self, instance: str) -> None:
        """Deregister the service through the agent's API; its registrar's next heartbeat
        finds the check gone and registers again."""
        host, port = _split(instance)
        service_id = urllib.parse.quote(f"{self.service}-{host}-{port}", safe="")
        _http("PUT", f"http://{self.register_agent}/v1/agent/service/deregister/{service_id}")

    def registered(self, instance: str) -> bool:
        entries = _http("GET", f"http://{self.register_agent}/v1/health/service/"
                               f"{self.service}?passing=1")
        found = {f"{entry['Service']['Address'] or entry['Node']['Address']}:"
                 f"{entry['Service']['Port']}" for entry in entries or []}
        return instance in found

    def describe(self) -> str:
        where = "3-server cluster on loopback" if self.cluster else f"agent {self.register_agent}"
        return f"Consul ({where}), service {self.service}"

    def close(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._close_proxies()
        if self.cluster is not None:
            self.cluster.close()


class K8sChaos(_Proxied):
    """Kubernetes: a kube-apiserver we start, the instances written into EndpointSlices by
    a health checker that plays the kubelet and the EndpointSlice controller (see the
    module docstring)."""

    name = "k8s"
    ttl = 0.5

    def __init__(self, *, interval: float = 0.2) -> None:
        from kitsd.compose.kubernetes import KubeAPIServer, host_address

        host = host_address()
        if host is None:
            raise RuntimeError("chaos on k8s needs a non-loopback IPv4 address for the "
                               "instances: kube-apiserver refuses loopback endpoints")
        self.instance_host = host
        self.namespace = "default"
        self.service = f"kitsd-chaos-{uuid.uuid4().hex[:8]}"
        self.server = KubeAPIServer(apiservers=2)
        self.can_kill_leader = True
        self._interval = interval
        self._lock = threading.Lock()
        self._instances: list[Any] = []
        self._ready: dict[str, bool] = {}
        self._misses: dict[str, int] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self.admin = self.server.admin(1)  # the kubelet's writes go to the one that stays
            super().__init__([])
            first, second = (_split(api.address) for api in self.server.apiservers)
            self._proxies.append(BlackHoleProxy(*first, fallbacks=[second]))
        except BaseException:
            self.server.close()
            raise

    def instance_args(self, port: int) -> list[str]:
        return ["--host", self.instance_host]

    def _slice(self, instance: str) -> str:
        return f"{self.service}-{instance.rpartition(':')[2]}"

    def open_instancer(self) -> sd.Instancer:
        from kitsd.sd.k8s import ClusterConfig, EndpointSliceInstancer, StaticToken

        config = ClusterConfig(server=f"https://{self.proxied[0]}",
                               ca=self.server.ca_file.read_text(),
                               token=StaticToken(self.server.token()), source="kitsd chaos")
        return EndpointSliceInstancer(self.service, namespace=self.namespace, port="http",
                                      config=config)

    def watch(self, instances: list[Any]) -> None:
        with self._lock:
            self._instances = list(instances)
        self._check_once()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kitsd-chaos-kubelet",
                                            daemon=True)
            self._thread.start()

    def _write(self, instance: str, ready: bool) -> None:
        from kitsd.compose.kubernetes import endpoint

        host, port = _split(instance)
        self.admin.put_slice(self.namespace, self._slice(instance), self.service,
                             [endpoint(host, ready=ready)], port=port)

    def _check_once(self) -> None:
        with self._lock:
            instances = list(self._instances)
        for process in instances:
            try:
                healthy = bool(process.ready())
            except Exception:  # noqa: BLE001 - any failure to answer is a failed probe
                healthy = False
            instance = process.instance
            with self._lock:
                self._misses[instance] = 0 if healthy else self._misses.get(instance, 0) + 1
                ready = healthy or (self._misses[instance] < 2 and
                                    self._ready.get(instance, False))
                changed = self._ready.get(instance) != ready
            if changed or (ready and not self.registered(instance)):
                try:
                    self._write(instance, ready)
                except Exception:  # noqa: BLE001, S112 - the API server may be down (leader fault)
                    continue
                with self._lock:
                    self._ready[instance] = ready

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._check_once()

    def kill_leader(self) -> str:
        self.server.apiserver.kill()
        return f"kube-apiserver ({self.server.apiserver.address})"

    def restart_leader(self) -> None:
        self.server.apiserver.start()
        self.server.apiserver.wait_ready()

    def lose_registration(self, instance: str) -> None:
        """Delete the instance's slice; the checker writes it back on its next round."""
        self.admin.delete_slice(self.namespace, self._slice(instance))

    def registered(self, instance: str) -> bool:
        try:
            found = self.admin.request(
                "GET", f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/"
                       f"endpointslices/{self._slice(instance)}")
        except Exception:  # noqa: BLE001 - gone (404) or the API server is down
            return False
        return any(endpoint.get("conditions", {}).get("ready") is True
                   for endpoint in found.get("endpoints") or [])

    def describe(self) -> str:
        return (f"Kubernetes (2 kube-apiservers on loopback, instances at "
                f"{self.instance_host}), service {self.namespace}/{self.service}")

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        self.admin.close()
        self._close_proxies()
        self.server.close()


class MemoryChaos(ChaosRegistry):
    """The in-process registry, kept in step with the instance processes by a health check
    every ``interval`` seconds (two misses deregister)."""

    name = "memory"
    ttl = 0.5

    def __init__(self, *, interval: float = 0.2) -> None:
        self.registry = sd.MemoryRegistry()
        self.service = "kitsd-chaos"
        self._interval = interval
        self._lock = threading.Lock()
        self._instances: list[Any] = []
        self._registrars: dict[str, Any] = {}
        self._misses: dict[str, int] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def open_instancer(self) -> sd.Instancer:
        return self.registry.instancer(self.service)

    def transport_discover(self) -> tuple[Any, str]:
        return self.registry, self.service

    def watch(self, instances: list[Any]) -> None:
        with self._lock:
            self._instances = list(instances)
        self._check_once()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kitsd-chaos-health",
                                            daemon=True)
            self._thread.start()

    def _healthy(self, process: Any) -> bool:
        try:
            return bool(process.ready())
        except Exception:  # noqa: BLE001 - any failure to answer is a failed check
            return False

    def _check_once(self) -> None:
        with self._lock:
            instances = list(self._instances)
        for process in instances:
            healthy = self._healthy(process)
            with self._lock:
                instance = process.instance
                registrar = self._registrars.get(instance)
                if healthy:
                    self._misses[instance] = 0
                    if registrar is None:
                        registrar = self.registry.registrar(self.service, instance)
                        registrar.register()
                        self._registrars[instance] = registrar
                else:
                    self._misses[instance] = self._misses.get(instance, 0) + 1
                    if registrar is not None and self._misses[instance] >= 2:
                        registrar.deregister()
                        del self._registrars[instance]

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._check_once()

    def lose_registration(self, instance: str) -> None:
        with self._lock:
            registrar = self._registrars.pop(instance, None)
        if registrar is not None:
            registrar.deregister()

    def registered(self, instance: str) -> bool:
        return instance in self.registry.instances(self.service)

    def describe(self) -> str:
        return "memory (in-process registry, health-checked instance processes)"

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            registrars = list(self._registrars.values())
            self._registrars.clear()
        for registrar in registrars:
            registrar.deregister()


def open_registry(kind: str, url: str | None = None, service: str | None = None
                  ) -> ChaosRegistry:
    """A started :class:`ChaosRegistry`: ``kind`` ``etcd``/``consul``/``memory`` on
    loopback, or the servers of ``url`` (``etcd://h:p[,h:p]/prefix/``, ``consul://h:p``).
    With ``service`` (a Consul service name, or for etcd any true value: the URL's
    prefix is the service's), the instances are those already registered there.
    Raises ``ValueError`` for a URL it cannot use (see :func:`check_url`)."""
    if url:
        scheme, hosts, path = check_url(url, service)
        if scheme == "etcd":
            return EtcdChaos(endpoints=hosts, prefix=path or "/kitsd-chaos/",
                             existing=bool(service))
        return ConsulChaos(agent=hosts[0], service=service)
    if service:
        raise ValueError("--service needs --registry-url (a service someone runs)")
    if kind == "etcd":
        return EtcdChaos()
    if kind == "consul":
        return ConsulChaos()
    if kind == "memory":
        return MemoryChaos()
    if kind == "k8s":
        return K8sChaos()
    raise ValueError(f"--registry must be etcd, consul, k8s or memory, not {kind!r}")


def check_url(url: str, service: str | None = None) -> tuple[str, list[str], str]:
    """``kitsd chaos --registry-url`` checked, starting nothing: ``(scheme, hosts, path)``
    of ``etcd://h:p[,h:p]/prefix/`` or ``consul://h:p``.  Raises ``ValueError`` (the URL
    shown redacted) for any other."""
    if url:
        shown = redact_url(url)  # the URL as given may hold a password or a token
        try:
            parsed = urllib.parse.urlsplit(url)
        except ValueError:
            raise ValueError(f"--registry-url is not a URL: {shown}") from None
        if "@" in parsed.netloc or parsed.query or parsed.fragment:
            raise ValueError(f"--registry-url takes no credentials and no parameters "
                             f"(kitsd chaos does not use them): {shown}")
        hosts = []
        default_port = 2379 if parsed.scheme == "etcd" else 8500  # as kitsd watch's URLs
        for host in (host for host in parsed.netloc.split(",") if host):
            try:
                name, port = split_address(host, default_port=default_port)
                hosts.append(f"{name}:{port}")
            except ValueError:  # its message shows the host by the redaction rule
                raise ValueError(f"--registry-url names a bad host:port, {shown_address(host)}:"
                                 f" {shown}") from None
        if parsed.scheme == "etcd" and hosts:
            if service and parsed.path in ("", "/"):
                raise ValueError("--service with etcd: give the service's prefix in the URL "
                                 "(etcd://host:port/prefix/)")
            return "etcd", hosts, parsed.path
        if parsed.scheme == "consul" and len(hosts) == 1:
            return "consul", hosts, parsed.path
    raise ValueError(f"--registry-url must be etcd://host:port[,host:port]/prefix/ or "
                     f"consul://host:port, not {redact_url(url)}")
