"""lb.AsyncHealthCheckers (probes on the event loop, no thread) and checks over TLS:
https checks through a transport with its CA and client certificate and a server
name (SNI and verification), gRPC checks with channel credentials — for both
flavours, against real servers."""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import trustme

from kitsd import lb
from kitsd.core.errors import WrongTypeError
from kitsd.lb.health_checkers import AsyncHealthCheckers, HealthCheckers, Subscription
from kitsd.lb.health_checkers_policy import Change, Verdict
from tests.helpers import async_wait_for, wait_for
from tests.lb.health_servers import GrpcHealthInstance, HealthInstance

FAST = lb.HttpCheck(path="/health", interval=0.1, timeout=0.1, jitter=0.0,
                    unhealthy_threshold=1)


def heard() -> Callable[[str, bool, float, Change], None]:
    return lambda instance, passed, started, change: None


@pytest.fixture
def instance() -> Iterator[HealthInstance]:
    server = HealthInstance()
    yield server
    server.kill()


class PKI:
    """A CA, an https instance whose certificate names only ``users`` and that
    requires a client certificate from the CA, and the client's files."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert("users")
        self.client_cert = self.ca.issue_cert("client.kitsd.test")
        self.client_pem = str(directory / "client.pem")
        self.client_cert.private_key_and_cert_chain_pem.write_to_path(self.client_pem)
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.verify_mode = ssl.CERT_REQUIRED
        self.ca.configure_trust(server)
        self.server_cert.configure_cert(server)
        self.instance = HealthInstance(tls=server)

    def verify(self) -> ssl.SSLContext:
        """Trusts the CA and presents the client certificate."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        context.load_cert_chain(self.client_pem)
        return context

    def transport(self) -> httpx.HTTPTransport:
        return httpx.HTTPTransport(verify=self.verify())

    def async_transport(self) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(verify=self.verify())

    def grpc_server(self) -> GrpcHealthInstance:
        credentials = grpc.ssl_server_credentials(
            [(self.server_cert.private_key_pem.bytes(),
              self.server_cert.cert_chain_pems[0].bytes())])
        return GrpcHealthInstance(credentials=credentials)

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca.cert_pem.bytes())


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[PKI]:
    made = PKI(tmp_path)
    yield made
    made.instance.kill()


def known(subscription: Subscription, address: str) -> bool:
    return subscription.verdict(address) is not Verdict.UNKNOWN


def checker_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread.name.startswith("kitsd-health")]


# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"server_name": ""}, "server_name"),
    ({"server_name": "a b"}, "server_name"),
    ({"server_name": "users:443"}, "server_name"),
    ({"server_name": 3}, "server_name"),
])
def test_bad_server_names_are_refused(kwargs: dict[str, Any], name: str) -> None:
    for kind in (lb.HttpCheck, lb.GrpcCheck):
        with pytest.raises(WrongTypeError) as caught:
            kind(**kwargs)
        assert str(caught.value).startswith(name)


def test_grpc_credentials_are_checked_and_not_shown() -> None:
    with pytest.raises(WrongTypeError, match=r"^credentials must be a grpc.ChannelCredentials"):
        lb.GrpcCheck(credentials="ca.pem")
    check = lb.GrpcCheck(credentials=grpc.ssl_channel_credentials(), server_name="users")
    assert repr(check) == "GrpcCheck(credentials=..., server_name='users')"
    assert check.key != lb.GrpcCheck(server_name="users").key  # another probe


@pytest.mark.parametrize("kind", [HealthCheckers, AsyncHealthCheckers])
def test_bad_arguments_are_refused(kind: Any) -> None:
    for kwargs, name in (({"transport": object()}, "transport"),
                         ({"http_client": object()}, "http_client"),
                         ({"concurrency": 0}, "concurrency")):
        with pytest.raises((TypeError, ValueError)) as caught:
            kind(**kwargs)
        assert str(caught.value).startswith(name)
    sync = kind is HealthCheckers
    with pytest.raises(TypeError, match="not both"):
        kind(transport=httpx.HTTPTransport() if sync else httpx.AsyncHTTPTransport(),
             http_client=httpx.Client() if sync else httpx.AsyncClient())


# --- probes on the event loop -------------------------------------------------------------


def test_async_checkers_probe_on_the_loop_without_a_thread(
        no_thread_leaks: None, instance: HealthInstance) -> None:
    async def scenario() -> None:
        async with AsyncHealthCheckers(seed=1) as checkers:
            subscription = checkers.subscribe(FAST, heard())
            subscription.watch([instance.address])  # on the loop: starts probing on it
            assert checkers.loop is asyncio.get_running_loop()
            await async_wait_for(lambda: subscription.verdict(instance.address) is Verdict.HEALTHY)
            assert checker_threads() == []
            instance.health_status = 503
            await async_wait_for(lambda: not subscription.healthy(instance.address))
            instance.health_status = 200
            await async_wait_for(lambda: subscription.healthy(instance.address))
            count = instance.health_checks()
        assert checkers.probes == 0
        await asyncio.sleep(0.3)
        assert instance.health_checks() == count  # closed: nothing probes any more
        assert "closed" in repr(checkers)

    asyncio.run(scenario())


def test_async_checkers_wait_for_a_loop(no_thread_leaks: None, instance: HealthInstance) -> None:
    # A balancer built outside a loop (at import, say): probing starts with start().
    checkers = AsyncHealthCheckers()
    subscription = checkers.subscribe(FAST, heard())
    subscription.watch([instance.address])
    assert checkers.loop is None
    with pytest.raises(RuntimeError):
        checkers.start()  # no running loop here

    async def scenario() -> None:
        checkers.start()
        checkers.start()  # idempotent
        await async_wait_for(lambda: subscription.verdict(instance.address) is Verdict.HEALTHY)
        await checkers.aclose()
        await checkers.aclose()

    asyncio.run(scenario())
    with pytest.raises(RuntimeError, match="closed"):
        checkers.subscribe(FAST, heard())


def test_async_checkers_belong_to_one_loop(instance: HealthInstance) -> None:
    checkers = AsyncHealthCheckers()

    async def first() -> None:
        checkers.start()

    async def second() -> None:
        with pytest.raises(RuntimeError, match="another event loop"):
            checkers.start()

    runner = asyncio.Runner()
    try:
        runner.run(first())
        asyncio.run(second())
        runner.run(checkers.aclose())
    finally:
        runner.close()


def test_async_checkers_share_one_prober_and_hear_from_other_threads(
        instance: HealthInstance) -> None:
    async def scenario() -> None:
        async with AsyncHealthCheckers() as checkers:
            checkers.start()
            stacks = [checkers.subscribe(FAST, heard()) for _ in range(3)]
            # a balancer's set may change on another thread (a registry's watch)
            def watch() -> None:
                for stack in stacks:
                    stack.watch([instance.address])

            thread = threading.Thread(target=watch)
            thread.start()
            thread.join()
            await async_wait_for(lambda: instance.health_checks() >= 3)
            assert checkers.probes == 1
            stacks[0].close()
            stacks[1].watch([])
            assert checkers.probes == 1
            stacks[2].close()
            assert checkers.probes == 0

    asyncio.run(scenario())


def test_a_grpc_check_on_the_loop(no_thread_leaks: None) -> None:
    server = GrpcHealthInstance()
    try:
        async def scenario() -> None:
            async with AsyncHealthCheckers() as checkers:
                check = lb.GrpcCheck(interval=0.5, timeout=0.5, unhealthy_threshold=1)
                subscription = checkers.subscribe(check, heard())
                subscription.watch([server.address])
                await async_wait_for(
                    lambda: subscription.verdict(server.address) is Verdict.HEALTHY)
                server.set("", serving=False)
                await async_wait_for(lambda: not subscription.healthy(server.address))

        asyncio.run(scenario())
    finally:
        server.kill()


# --- TLS --------------------------------------------------------------------------------


def verdicts_with(pki: PKI, checkers: HealthCheckers, **settings: Any) -> Verdict:
    check = lb.HttpCheck(path="/health", scheme="https", interval=0.5, timeout=0.5,
                         unhealthy_threshold=1, **settings)
    subscription = checkers.subscribe(check, heard())
    subscription.watch([pki.instance.address])
    wait_for(lambda: subscription.verdict(pki.instance.address) is not Verdict.UNKNOWN,
             what="a verdict")
    return subscription.verdict(pki.instance.address)


def test_https_checks_use_the_transport_and_the_server_name(pki: PKI) -> None:
    # The instance's certificate names "users" (not its address) and it wants a client
    # certificate: only the caller's transport and the server name make a check pass.
    transport = pki.transport()
    try:
        with HealthCheckers(transport=transport) as checkers:
            # the failing names first: a connection the pool keeps is not verified again
            assert verdicts_with(pki, checkers, server_name="orders") is Verdict.UNHEALTHY
            assert verdicts_with(pki, checkers) is Verdict.UNHEALTHY  # the address
            assert verdicts_with(pki, checkers, server_name="users") is Verdict.HEALTHY
        assert pki.instance.health_checks() >= 1
        with HealthCheckers() as checkers:  # the system's CAs, no client certificate
            assert verdicts_with(pki, checkers, server_name="users") is Verdict.UNHEALTHY
        transport.handle_request(httpx.Request(  # left open: the caller's
            "GET", f"https://{pki.instance.address}/health",
            extensions={"sni_hostname": "users"})).close()
    finally:
        transport.close()


def test_async_https_checks_use_the_transport_and_the_server_name(pki: PKI) -> None:
    async def scenario() -> list[Verdict]:
        transport = pki.async_transport()
        found = []
        async with AsyncHealthCheckers(transport=transport) as checkers:
            for name in ("orders", "users"):  # the failing name first (pooled connections)
                check = lb.HttpCheck(path="/health", scheme="https", interval=0.5, timeout=0.5,
                                     unhealthy_threshold=1, server_name=name)
                subscription = checkers.subscribe(check, heard())
                subscription.watch([pki.instance.address])
                await async_wait_for(functools.partial(known, subscription, pki.instance.address))
                found.append(subscription.verdict(pki.instance.address))
        await transport.aclose()
        return found

    assert asyncio.run(scenario()) == [Verdict.UNHEALTHY, Verdict.HEALTHY]


@pytest.mark.parametrize("flavour", ["threads", "asyncio"])
def test_grpc_checks_with_credentials_and_a_server_name(pki: PKI, flavour: str) -> None:
    server = pki.grpc_server()
    credentials = pki.grpc_credentials()
    settings: dict[str, Any] = {"interval": 0.5, "timeout": 0.5, "unhealthy_threshold": 1}
    checks = {
        "named": lb.GrpcCheck(credentials=credentials, server_name="users", **settings),
        "address": lb.GrpcCheck(credentials=credentials, **settings),  # not in the cert
        "plain": lb.GrpcCheck(**settings),  # no TLS against a TLS server
    }

    def verdicts(checkers: Any) -> dict[str, Any]:
        subscriptions = {name: checkers.subscribe(check, heard())
                         for name, check in checks.items()}
        for subscription in subscriptions.values():
            subscription.watch([server.address])
        return subscriptions

    try:
        if flavour == "threads":
            with HealthCheckers() as checkers:
                subscriptions = verdicts(checkers)
                for subscription in subscriptions.values():
                    wait_for(functools.partial(known, subscription, server.address))
                found = {name: s.verdict(server.address) for name, s in subscriptions.items()}
        else:
            async def scenario() -> dict[str, Verdict]:
                async with AsyncHealthCheckers() as checkers:
                    subscriptions = verdicts(checkers)
                    await async_wait_for(lambda: all(
                        s.verdict(server.address) is not Verdict.UNKNOWN
                        for s in subscriptions.values()))
                    return {name: s.verdict(server.address)
                            for name, s in subscriptions.items()}

            found = asyncio.run(scenario())
    finally:
        server.kill()
    assert found == {"named": Verdict.HEALTHY, "address": Verdict.UNHEALTHY,
                     "plain": Verdict.UNHEALTHY}
