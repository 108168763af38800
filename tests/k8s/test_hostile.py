"""sd.k8s attacked: an API server (a real socket, kitsd's real httpx transport) answering
an endless list, a list one byte every 0.1 s, an endless error page, a watch that never
ends, slices with 1 MiB names; configurations that leak or make no sense.  Each test
failed before its fix (see the README's reliability table)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from kitsd import sd
from kitsd.core.errors import MisuseError, PermissionDeniedError, RegistryUnavailableError
from kitsd.sd.k8s import (
    AsyncEndpointSliceInstancer,
    ClusterConfig,
    EndpointSliceInstancer,
    ExecToken,
    StaticToken,
    TokenFile,
    api,
    watch,
)
from kitsd.sd.k8s.slices import PortChoice, SliceView
from tests.helpers import async_wait_for
from tests.hostile_http import HostilePeer, endless, reply, trickle

pytestmark = pytest.mark.usefixtures("no_thread_leaks")

FIVE: Any = 5  # a value of a type no argument takes
TOKEN = "k8s-T0KEN-never-shown"  # noqa: S105 - a token no output may show


def slice_object(name: str, *addresses: str, **endpoint: object) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": "5"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}, **endpoint}
                          for a in addresses]}


def listing(*items: dict[str, Any]) -> bytes:
    return json.dumps({"metadata": {"resourceVersion": "7"}, "items": list(items)}).encode()


class Split:
    """Lists answered by ``lists``, watches by ``watches`` (a real socket each)."""

    def __init__(self, lists: Any, watches: Any) -> None:
        self.lists, self.watches = lists, watches
        self.list_requests = 0
        self.watch_requests = 0

    def __call__(self, sock: socket.socket, head: bytes) -> None:
        if b"watch=true" in head.split(b"\r\n", 1)[0]:
            self.watch_requests += 1
            self.watches(sock, head)
        else:
            self.list_requests += 1
            self.lists(sock, head)


def quiet_watch(sock: socket.socket, head: bytes) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    while sock.recv(65536):
        pass


async def started(peer: HostilePeer, **kwargs: Any) -> tuple[AsyncEndpointSliceInstancer,
                                                              list[sd.Event]]:
    config = ClusterConfig(server=peer.url, token=StaticToken(TOKEN))
    instancer = AsyncEndpointSliceInstancer("web", namespace="shop", config=config, **kwargs)
    events: list[sd.Event] = []
    instancer.subscribe(events.append)
    return instancer, events


async def last_error(events: list[sd.Event], within: float) -> BaseException:
    await async_wait_for(lambda: bool(events) and events[-1].error is not None,
                         timeout=within, what="an error event")
    error = events[-1].error
    assert error is not None
    return error


async def test_an_endless_list_is_cut_at_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "MAX_LIST_BYTES", 1 << 20)
    with HostilePeer(Split(endless(), quiet_watch)) as peer:
        instancer, events = await started(peer)
        try:
            # before: read into memory for ever (4.6 GB in 15 s on this machine)
            error = await last_error(events, within=10)
            assert isinstance(error, RegistryUnavailableError)
            assert "more than 1048576 bytes" in str(error)
        finally:
            await instancer.aclose()


async def test_a_trickled_list_ends_by_the_request_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "REQUEST_DEADLINE", 1.0)
    body = listing(slice_object("a", "10.0.0.1"))
    answer = trickle(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    with HostilePeer(Split(answer, quiet_watch)) as peer:
        instancer, events = await started(peer)
        try:
            started_at = time.monotonic()
            error = await last_error(events, within=10)  # before: never (each byte in time)
            assert "took longer than 1s" in str(error)
            assert time.monotonic() - started_at < 5
        finally:
            await instancer.aclose()


async def test_an_endless_error_page_is_read_only_as_far_as_a_message_needs() -> None:
    with HostilePeer(Split(endless(500, b"x"), quiet_watch)) as peer:
        instancer, events = await started(peer)
        try:
            error = await last_error(events, within=10)  # before: read for ever (5 GB)
            assert "HTTP 500" in str(error)
            assert len(str(error)) < 1000
        finally:
            await instancer.aclose()


async def test_a_watch_that_never_ends_is_reopened(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "WATCH_GRACE", 0.5)
    # the watch's headers trickle for ever: each byte in time for every read timeout
    script = Split(reply(200, listing(slice_object("a", "10.0.0.1"))),
                   trickle(b"HTTP/1.1 200 OK\r\nx-padding: " + b"a" * 100_000))
    with HostilePeer(script) as peer:
        instancer, events = await started(peer, watch_timeout=1)
        try:
            await async_wait_for(lambda: bool(events) and events[-1].instances == ("10.0.0.1:80",),
                                 what="the first list")
            # watch_timeout=1 asks the server for 1-2 s; kitsd ends it 0.5 s after
            await async_wait_for(lambda: script.watch_requests >= 3, timeout=10,
                                 what="the watch reopened")  # before: held for ever
            assert events[-1].error is None
        finally:
            await instancer.aclose()


async def test_nested_json_is_not_json() -> None:
    with HostilePeer(Split(reply(200, b"[" * 100_000 + b"]" * 100_000), quiet_watch)) as peer:
        instancer, events = await started(peer)
        try:
            error = await last_error(events, within=10)
            # before: "failed unexpectedly: RecursionError", logged with a traceback
            assert "not a JSON object" in str(error)
        finally:
            await instancer.aclose()


def test_a_slice_with_1_mib_names_neither_bloats_metadata_nor_messages() -> None:
    huge = "n" * (1 << 20)
    view = SliceView(PortChoice())
    view.upsert(slice_object("a", "10.0.0.1", nodeName=huge, zone=huge,
                             hints={"forZones": [{"name": huge}] * 1000}))
    view.upsert({**slice_object("s" * (1 << 20), "10.0.0.2"),
                 "ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]})
    change = view.changes()
    assert change.added == ("10.0.0.1:80",)
    assert dict(change.info) == {}  # before: 1 MiB zone and node in the InstanceInfo
    problem = view.problem
    assert problem is not None
    assert len(problem) < 300  # before: the slice's 1 MiB name, in every error event


# -- configuration ---------------------------------------------------------------------


def test_a_proxy_password_never_shows() -> None:
    config = ClusterConfig(server="https://k8s:6443", proxy="http://user:pr0xy-pass@proxy:3128")
    assert "pr0xy-pass" not in repr(config)  # before: in the repr, verbatim
    assert "proxy:3128" in repr(config)
    with pytest.raises(MisuseError, match="proxy") as raised:
        ClusterConfig(server="https://k8s:6443", proxy="ftp://user:pr0xy-pass@proxy")
    assert "pr0xy-pass" not in str(raised.value)


@pytest.mark.parametrize("server", ["https://admin:s3rver-pass@k8s:6443",
                                    "https://k8s:6443/x?token=s3rver-pass"])
def test_a_server_url_with_credentials_is_refused_without_echoing_them(server: str) -> None:
    with pytest.raises(MisuseError, match="server") as raised:
        ClusterConfig(server=server)
    assert "s3rver-pass" not in str(raised.value)  # before: echoed


def _bad(**fields: Any) -> ClusterConfig:
    return ClusterConfig(server="https://k8s:1", **fields)


@pytest.mark.parametrize(
    ("build", "error", "named"),
    [
        (lambda: _bad(proxy=5), MisuseError, "proxy"),  # accepted, used by httpx later
        (lambda: _bad(tls_server_name=5), TypeError, "tls_server_name"),
        (lambda: _bad(ca=5), TypeError, "ca"),  # TypeError from ssl, unnamed, later
        (lambda: ExecToken("aws", "eks get-token"), TypeError, "args"),  # was 'e','k','s'...
        (lambda: ExecToken("aws", env=5), TypeError, "env"),  # type: ignore[arg-type]
        (lambda: TokenFile(None), TypeError, "path"),  # type: ignore[arg-type]
    ],
)
def test_bad_configuration_fields_are_named(build: Any, error: type[Exception],
                                            named: str) -> None:
    with pytest.raises(error, match=named):
        build()


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"address_types": None}, "address_types"), ({"address_types": [["IPv4"]]},
                                                  "address_types"),
     ({"transport": "junk"}, "transport")],
)
async def test_bad_instancer_arguments_start_nothing(kwargs: dict[str, Any], named: str) -> None:
    config = ClusterConfig(server="http://127.0.0.1:9", token=StaticToken(TOKEN))
    tasks = len(asyncio.all_tasks())
    with pytest.raises(TypeError, match=named):
        EndpointSliceInstancer("web", config=config, first_answer_timeout=0, **kwargs)
    with pytest.raises(TypeError, match=named):
        AsyncEndpointSliceInstancer("web", config=config, **kwargs)
    assert len(asyncio.all_tasks()) == tasks  # before: a watch task failing in a loop


async def test_a_cancelled_list_leaves_no_connection() -> None:
    # held: stop() during a list in flight closes the client's connections at once
    async def hold(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    config = ClusterConfig(server="https://k8s.test:6443", token=StaticToken(TOKEN))
    for _ in range(20):
        instancer = AsyncEndpointSliceInstancer("web", config=config,
                                                transport=httpx.MockTransport(hold))
        await asyncio.sleep(0)
        started_at = time.monotonic()
        await instancer.aclose()
        assert time.monotonic() - started_at < 1



@pytest.mark.parametrize(
    ("load", "named"),
    [
        (lambda: ClusterConfig.from_kubeconfig(FIVE), "path"),  # 'int' is not iterable
        (lambda: ClusterConfig.from_kubeconfig("/nonexistent", context=FIVE), "context"),
        (lambda: ClusterConfig.in_cluster(root=FIVE), "root"),
        (lambda: ClusterConfig.in_cluster(environ=FIVE), "environ"),  # AttributeError
        (lambda: ClusterConfig.load(kubeconfig=FIVE), "kubeconfig"),
    ],
)
def test_bad_loader_arguments_are_named(load: Any, named: str) -> None:
    with pytest.raises(TypeError, match=named):
        load()


def test_a_hung_exec_plugin_leaves_no_process_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kitsd.sd.k8s import config

    monkeypatch.setattr(config, "_EXEC_TIMEOUT", 1.0)
    pids = tmp_path / "pids"
    plugin = ExecToken("/bin/sh", ["-c", f"sleep 60 & echo $! > {pids}; sleep 60"])
    started_at = time.monotonic()
    with pytest.raises(PermissionDeniedError, match="could not run: TimeoutExpired"):
        plugin.token()
    assert time.monotonic() - started_at < 5
    child = int(pids.read_text())

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        # a zombie until init reaps it is gone too
        state = Path(f"/proc/{child}/stat").read_text().split(") ")[-1][:1]
        return state == "Z"

    # before: the shell was killed, its background job (and its foreground one) ran on
    deadline = time.monotonic() + 5
    while not gone():
        assert time.monotonic() < deadline, "the plugin's child is still running"
        time.sleep(0.02)
