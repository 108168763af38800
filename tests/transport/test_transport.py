"""kitsd.Transport / AsyncTransport against local instances (both drivers)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import kitsd
from kitsd import lb, sd
from kitsd.core.errors import MisuseError
from tests.transport.conftest import Driver, register
from tests.transport.servers import Instance

Make = Callable[..., Driver]
Instances = Callable[[int], list[Instance]]


def test_routes_to_instances_keeping_path_query_body_and_host(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    found = instances(2)
    register(registry, *found)
    client = driver(registry)
    seen = set()
    for _ in range(20):
        response = client.request("POST", "/a/b?x=1", content=b"hello")
        assert response.status_code == 200
        port, method, path, host, body = response.text.split(" ")
        assert (method, path, host, body) == ("POST", "/a/b?x=1", "host=users", "body=hello")
        assert str(response.request.url) == "http://users/a/b?x=1"
        seen.add(int(port))
    assert seen == {found[0].port, found[1].port}


def test_host_header_configurable(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    (one,) = instances(1)
    register(registry, one)
    client = driver(registry, host_header=lambda service, instance: f"{service}.internal")
    assert "host=users.internal" in client.request("GET", "/").text


def test_idempotent_request_retried_on_503_and_connection_refused(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    bad, dead, good = instances(3)
    bad.mode = "status"
    dead.kill()
    register(registry, bad, dead, good)
    client = driver(registry, max_attempts=3)
    for _ in range(30):
        assert client.request("GET", "/").status_code == 200
    assert good.total() == 30
    assert bad.total() >= 1  # it was tried, and its 503 retried


def test_non_idempotent_never_sent_twice(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    bad, dropping, good = instances(3)
    bad.mode = "status"
    dropping.mode = "drop"
    register(registry, bad, dropping, good)
    client = driver(registry, max_attempts=3)
    outcomes = []
    for i in range(30):
        try:
            outcomes.append(client.request("POST", "/", content=f"{i}".encode()).status_code)
        except httpx.RemoteProtocolError:
            outcomes.append(-1)
    bodies = bad.bodies + dropping.bodies + good.bodies
    assert len(bodies) == len(set(bodies)) == 30  # every POST sent exactly once
    assert outcomes.count(503) == bad.total()  # the 503 returned, not retried
    assert outcomes.count(-1) == dropping.total()


def test_non_idempotent_retried_when_never_sent(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    dead, good = instances(2)
    dead.kill()
    register(registry, dead, good)
    client = driver(registry, max_attempts=3)
    for i in range(10):
        assert client.request("POST", "/", content=f"{i}".encode()).status_code == 200
    assert good.total() == 10


def test_stream_body_not_replayed(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    (bad,) = instances(1)
    bad.mode = "status"
    register(registry, bad)
    client = driver(registry, max_attempts=3)
    if isinstance(client.transport, kitsd.AsyncTransport):
        async def body() -> Any:
            yield b"streamed"
    else:
        def body() -> Iterator[bytes]:  # type: ignore[misc]
            yield b"streamed"
    response = client.request("PUT", "/", content=body())
    assert response.status_code == 503
    assert bad.total() == 1


def test_final_5xx_response_returned_and_readable(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    found = instances(2)
    for each in found:
        each.mode = "status"
    register(registry, *found)
    client = driver(registry, max_attempts=2)
    response = client.request("GET", "/x")
    assert response.status_code == 503
    assert "GET /x" in response.text
    assert sum(each.total() for each in found) == 2


def test_retry_after_honoured(driver: Make, instances: Instances,
                              registry: sd.MemoryRegistry) -> None:
    (one,) = instances(1)
    one.mode = "status"
    one.headers = {"Retry-After": "1"}
    register(registry, one)
    client = driver(registry, max_attempts=2)
    start = time.monotonic()
    response = client.request("GET", "/", timeout=5)
    assert time.monotonic() - start >= 1.0
    assert response.status_code == 503
    assert one.total() == 2


def test_retry_after_past_the_deadline_returns_at_once(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    (one,) = instances(1)
    one.mode = "status"
    one.headers = {"Retry-After": "30"}
    register(registry, one)
    client = driver(registry, max_attempts=3)
    start = time.monotonic()
    response = client.request("GET", "/", timeout=2)
    assert time.monotonic() - start < 1.5
    assert response.status_code == 503
    assert one.total() == 1


def test_request_timeout_bounds_all_attempts(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    found = instances(3)
    for each in found:
        each.mode = "hang"
    register(registry, *found)
    client = driver(registry, max_attempts=3)
    start = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        client.request("GET", "/", timeout=0.6)
    assert time.monotonic() - start < 1.5


def test_hung_instance_leaves_time_for_another(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    hung, good = instances(2)
    hung.mode = "hang"
    register(registry, hung, good)
    client = driver(registry, balancer=lb.RoundRobin, outlier_detection=None)
    for _ in range(4):
        assert client.request("GET", "/", timeout=1.0).status_code == 200
    assert hung.total() >= 1


def test_unknown_service_and_bad_host(driver: Make, registry: sd.MemoryRegistry) -> None:
    client = driver(registry)
    with pytest.raises(lb.NoEndpointsError, match="'nobody'"):
        client.request("GET", "http://nobody/")
    with pytest.raises(MisuseError, match="not a valid service name"):
        client.request("GET", "http://bad%21name/")


def test_streams_100_mb_with_flat_memory(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    import tracemalloc

    (one,) = instances(1)
    register(registry, one)
    client = driver(registry)
    assert client.request("GET", "/warm-up").status_code == 200  # imports, connection
    one.mode = "stream"
    one.stream_bytes = 100 * 1024 * 1024
    if isinstance(client.transport, kitsd.AsyncTransport):
        async def read_all() -> int:
            total = 0
            async with client.client.stream("GET", "/big") as response:
                async for chunk in response.aiter_raw():
                    total += len(chunk)
            return total
        tracemalloc.start()
        total = client.runner.run(read_all())
    else:
        tracemalloc.start()
        total = 0
        with client.client.stream("GET", "/big") as response:
            for chunk in response.iter_raw():
                total += len(chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == 100 * 1024 * 1024
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while streaming"


def test_close_stops_every_watch(driver: Make, instances: Instances,
                                 registry: sd.MemoryRegistry) -> None:
    (one,) = instances(1)
    register(registry, one, service="a")
    register(registry, one, service="b")
    stopped: list[str] = []

    def discover(service: str) -> Any:
        instancer = registry.instancer(service)
        stop = instancer.stop

        def counted() -> None:
            stopped.append(service)
            stop()

        instancer.stop = counted  # type: ignore[method-assign]
        return instancer

    client = driver(discover)
    assert client.request("GET", "http://a/").status_code == 200
    assert client.request("GET", "http://b/").status_code == 200
    assert client.request("GET", "http://a/").status_code == 200
    client.close()
    assert sorted(stopped) == ["a", "b"]


def test_5xx_reported_to_the_balancer(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    (bad,) = instances(1)
    bad.mode = "status"
    bad.status = 500
    register(registry, bad)
    reports: list[BaseException | None] = []

    class Recording(lb.RoundRobin):
        def report(self, pick: lb.Pick, error: BaseException | None) -> None:
            reports.append(error)
            super().report(pick, error)

    client = driver(registry, balancer=Recording)
    assert client.request("GET", "/").status_code == 500
    assert bad.total() == 1  # 500 is not a retry status
    assert [getattr(error, "status_code", None) for error in reports] == [500]


def test_httpx_features_auth_hooks_cookies_mounts(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    (one,) = instances(1)
    one.mode = "status"
    one.status = 200
    one.headers = {"Set-Cookie": "session=abc; Path=/"}
    register(registry, one)
    hooked: list[str] = []

    client = driver(registry, client={"auth": ("user", "pw")})
    client.client.event_hooks["request"] = [_hook(client, hooked)]
    first = client.request("GET", "/")
    assert first.status_code == 200
    assert client.client.cookies.get("session", domain="users.local") == "abc"
    assert hooked == ["http://users/"]


def _hook(client: Driver, hooked: list[str]) -> Any:
    if client.kind == "async":
        async def async_hook(request: httpx.Request) -> None:
            hooked.append(str(request.url))
        return async_hook

    def hook(request: httpx.Request) -> None:
        hooked.append(str(request.url))
    return hook


def test_bad_options_fail_at_construction(registry: sd.MemoryRegistry) -> None:
    with pytest.raises(MisuseError, match=r"\{service\}"):
        kitsd.Transport("consul://127.0.0.1:8500/users")
    with pytest.raises(MisuseError, match="unknown scheme"):
        kitsd.Transport("ftp://{service}")
    with pytest.raises(TypeError, match="discover"):
        kitsd.Transport(42)  # type: ignore[arg-type]
    with pytest.raises(MisuseError, match="max_attempts"):
        kitsd.Transport(registry, max_attempts=0)
    with pytest.raises(MisuseError, match="retry_statuses"):
        kitsd.Transport(registry, retry_statuses={999})
    with pytest.raises(TypeError, match="transport"):
        kitsd.Transport(registry, transport=httpx.AsyncHTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(MisuseError, match="attempt_timeout"):
        kitsd.AsyncTransport(registry, attempt_timeout=0)


def _recording_inner(seen: list[httpx.Request], status: int = 200) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, text="ok")
    return httpx.MockTransport(handler)


def test_https_keeps_verification_with_service_as_server_name(registry: sd.MemoryRegistry) -> None:
    registry.registrar("users", "10.0.0.7:8443").register()
    seen: list[httpx.Request] = []
    with httpx.Client(transport=kitsd.Transport(registry, transport=_recording_inner(seen)),
                      base_url="https://users") as client:
        assert client.get("/p").status_code == 200
    assert str(seen[0].url) == "https://10.0.0.7:8443/p"
    assert seen[0].extensions["sni_hostname"] == "users"
    assert seen[0].headers["host"] == "users"


def test_server_name_configurable(registry: sd.MemoryRegistry) -> None:
    registry.registrar("users", "10.0.0.7:8443").register()
    seen: list[httpx.Request] = []
    transport = kitsd.Transport(registry, transport=_recording_inner(seen),
                                server_name=lambda service: f"{service}.svc.example")
    with httpx.Client(transport=transport, base_url="https://users") as client:
        client.get("/")
    assert seen[0].extensions["sni_hostname"] == "users.svc.example"


def test_body_reads_get_the_requests_own_timeouts(registry: sd.MemoryRegistry) -> None:
    """Each attempt's headers wait is capped (attempt_timeout), but once the response
    is handed out, body reads use the request's own timeouts again."""
    registry.registrar("users", "10.0.0.7:80").register()
    seen: list[httpx.Request] = []
    transport = kitsd.Transport(registry, transport=_recording_inner(seen), attempt_timeout=0.25)
    with httpx.Client(transport=transport, base_url="http://users", timeout=7.0) as client:
        client.get("/")
    assert seen[0].extensions["timeout"] == {"connect": 7.0, "read": 7.0, "write": 7.0,
                                             "pool": 7.0}


def test_mounts_route_only_the_service(registry: sd.MemoryRegistry) -> None:
    registry.registrar("users", "10.0.0.7:80").register()
    seen: list[httpx.Request] = []
    other: list[httpx.Request] = []
    kitsd_transport = kitsd.Transport(registry, transport=_recording_inner(seen))
    with httpx.Client(mounts={"http://users": kitsd_transport},
                      transport=_recording_inner(other)) as client:
        client.get("http://users/a")
        client.get("http://example.org/b")
    assert [str(request.url) for request in seen] == ["http://10.0.0.7/a"]
    assert [str(request.url) for request in other] == ["http://example.org/b"]


def test_outlier_detection_forwarded_to_the_balancer(registry: sd.MemoryRegistry) -> None:
    registry.registrar("users", "10.0.0.7:80").register()
    given: list[Any] = []

    def balancer(endpointer: Any, **options: Any) -> lb.Balancer:
        given.append(options)
        return lb.RoundRobin(endpointer, **options)

    detection = lb.OutlierDetection(consecutive_failures=3)
    slow = {"slow_start": kitsd.transport.SLOW_START}  # on by default, for balancers taking it
    for value, expected in ((detection, [{**slow, "outlier_detection": detection}]),
                            (None, [{**slow, "outlier_detection": None}])):
        given.clear()
        with httpx.Client(transport=kitsd.Transport(registry, balancer=balancer,
                                                    outlier_detection=value,
                                                    transport=_recording_inner([])),
                          base_url="http://users") as client:
            client.get("/")
        assert given == expected
    given.clear()
    with httpx.Client(transport=kitsd.Transport(registry, balancer=balancer,
                                                transport=_recording_inner([])),
                      base_url="http://users") as client:
        client.get("/")
    assert given == [{**slow, "outlier_detection": kitsd.transport.OUTLIER_DETECTION}]
    given.clear()

    def plain(endpointer: Any) -> lb.Balancer:  # no outlier_detection=: its own default
        given.append({})
        return lb.RoundRobin(endpointer)

    with httpx.Client(transport=kitsd.Transport(registry, balancer=plain,
                                                transport=_recording_inner([])),
                      base_url="http://users") as client:
        client.get("/")
    assert given == [{}]


class _SlowFanOut:
    """An instancer whose first answer comes later, from another thread, and which
    pauses between subscribers while delivering it (as a registry watch might).  As
    every instancer, it sends a subscriber nothing before it has read something."""

    def __init__(self, instances: tuple[str, ...]) -> None:
        self.instances = instances
        self.callbacks: list[Callable[[sd.Event], None]] = []
        self.thread: Any = None

    def subscribe(self, callback: Callable[[sd.Event], None]) -> None:
        self.callbacks.append(callback)
        if self.thread is None:
            import threading
            self.thread = threading.Timer(0.2, self._answer)
            self.thread.start()

    def _answer(self) -> None:
        for callback in list(self.callbacks):
            callback(sd.Event(self.instances))
            time.sleep(0.3)

    def unsubscribe(self, callback: Callable[[sd.Event], None]) -> None:
        self.callbacks.remove(callback)

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.join()


def test_first_request_waits_for_a_cold_watch(driver: Make, instances: Instances) -> None:
    """A first request to a service whose watch has not answered yet waits for the
    answer and for the endpoints it brings (failed before: NoEndpointsError when the
    transport heard of the answer before its Endpointer did)."""
    (one,) = instances(1)
    client = driver(lambda service: _SlowFanOut((one.address,)))
    assert client.request("GET", "/", timeout=5).status_code == 200


def test_budget_and_hedge_forwarded_to_lb_retry(
    registry: sd.MemoryRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.registrar("users", "10.0.0.7:80").register()
    given: list[dict[str, Any]] = []
    real_retry = lb.retry

    def retry(max_attempts: int, timeout: float, balancer: Any, *, callback: Any = None,
              wait: Any = None, budget: Any = None, hedge: Any = None, name: str = "",
              discard: Any = None) -> Any:
        given.append({"budget": budget, "hedge": hedge, "name": name})
        return real_retry(max_attempts, timeout, balancer, callback=callback, wait=wait)

    monkeypatch.setattr(lb, "retry", retry)
    budget, hedge = lb.RetryBudget(), lb.Hedge(delay=0.5)
    with httpx.Client(transport=kitsd.Transport(registry, budget=budget, hedge=hedge,
                                                transport=_recording_inner([])),
                      base_url="http://users") as client:
        client.get("/")
    assert given == [{"budget": budget, "hedge": hedge, "name": "users"}]


def test_per_instance_breakers_skip_an_open_one(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    import pybreaker

    bad, good = instances(2)
    bad.mode = "status"
    register(registry, bad, good)
    breakers: dict[str, pybreaker.CircuitBreaker] = {}

    def new_breaker(instance: str) -> pybreaker.CircuitBreaker:
        breakers[instance] = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60)
        return breakers[instance]

    client = driver(registry, breakers=new_breaker, balancer=lb.RoundRobin,
                    outlier_detection=None)
    for _ in range(20):
        assert client.request("GET", "/").status_code == 200
    assert breakers[bad.address].current_state == pybreaker.STATE_OPEN
    assert bad.total() == 2  # then its open breaker kept calls away


def test_retried_response_closed_before_the_next_attempt(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    """With one connection in the pool, the next attempt can only start if the 503
    it retries was closed (its connection handed back) first."""
    bad, good = instances(2)
    bad.mode = "status"
    register(registry, bad, good)
    limits = httpx.Limits(max_connections=1)
    is_async = driver.kind == "async"  # type: ignore[attr-defined]
    inner: Any = (httpx.AsyncHTTPTransport(limits=limits) if is_async
                  else httpx.HTTPTransport(limits=limits))
    client = driver(registry, transport=inner, balancer=lb.RoundRobin, outlier_detection=None)
    for _ in range(6):
        assert client.request("GET", "/", timeout=2.0).status_code == 200
    assert bad.total() >= 3  # the 503s were retried
