"""Tests for sd.etcd.url: parsing ``etcd://`` URLs, and URL instancers against a real etcd,
including one with authentication enabled (a member of its own, never a shared server)."""

from __future__ import annotations

import logging
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from kitsd import sd
from kitsd.compose.etcd import EtcdCluster, EtcdMember, ExternalEtcd
from kitsd.core.errors import MisuseError, PermissionDeniedError, RegistryUnavailableError
from kitsd.sd.etcd.url import PASSWORD_ENV, USER_ENV, parse_url
from tests.etcd.conftest import require_etcd_binary
from tests.helpers import wait_for

pytest.importorskip("pyetcd")


def parse(url: str) -> sd.etcd.url.EtcdURL:
    return parse_url(urllib.parse.urlsplit(url))


@pytest.fixture(autouse=True)
def _no_credentials_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(USER_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)


# ---------------------------------------------------------------------------
# parsing


def test_host_port_and_prefix() -> None:
    url = parse("etcd://10.0.0.1:2380/services/api/")
    assert url.endpoints == ["10.0.0.1:2380"]
    assert url.prefix == "/services/api/"
    assert url.user is None
    assert url.password is None
    assert url.timeout == 5.0


def test_default_port_several_hosts_and_ipv6() -> None:
    url = parse("etcd://a,b:1234,[::1],[fe80::2]:99/svc/")
    assert url.endpoints == ["a:2379", "b:1234", "[::1]:2379", "[fe80::2]:99"]


def test_prefix_is_percent_decoded() -> None:
    assert parse("etcd://h/services/my%20api/").prefix == "/services/my api/"


def test_credentials_from_the_url_are_hidden_in_repr() -> None:
    url = parse("etcd://alice:s3cr%40t@h:2379/svc/?timeout=2.5")
    assert url.user == "alice"
    assert url.password == "s3cr@t"  # noqa: S105 - a test value
    assert url.timeout == 2.5
    assert "s3cr" not in repr(url)
    assert "s3cr" not in str(url)
    assert "alice" in repr(url)


def test_liveness_from_the_url() -> None:
    assert parse("etcd://h/svc/").liveness == 5.0
    assert parse("etcd://h/svc/?liveness=2.5").liveness == 2.5


def test_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USER_ENV, "bob")
    monkeypatch.setenv(PASSWORD_ENV, "hunter2")
    url = parse("etcd://h/svc/")
    assert (url.user, url.password) == ("bob", "hunter2")
    # The URL wins over the environment.
    assert parse("etcd://carol:pw@h/svc/").user == "carol"


@pytest.mark.parametrize(
    "url",
    [
        "etcd://h:2379",  # no prefix
        "etcd://h:2379/",  # the whole keyspace is surely a mistake
        "etcd://h:notaport/svc/",
        "etcd://h:70000/svc/",
        "etcd://:2379/svc/",
        "etcd://alice@h/svc/",  # a user without a password
        "etcd://h/svc/?tag=x",
        "etcd://h/svc/?timeout=soon",
        "etcd://h/svc/?timeout=0",
        "etcd://h/svc/?liveness=0",
        "etcd://h/svc/?liveness=nan",
        "etcd://[::1/svc/",
    ],
)
def test_bad_urls_raise_value_error(url: str) -> None:
    with pytest.raises(ValueError) as raised:  # MisuseError, or urlsplit's own ValueError
        sd.instancer_from_url(url)
    assert "hunter2" not in str(raised.value)
    if "[" not in url:
        assert isinstance(raised.value, MisuseError)


# ---------------------------------------------------------------------------
# against a real etcd


@pytest.mark.integration
def test_url_instancer_sees_values_and_closes_its_client_on_stop(
    no_thread_leaks: None, etcd_member: EtcdMember | ExternalEtcd, client: Any, prefix: str
) -> None:
    client.put(f"{prefix}a", "10.0.0.1:80")
    instancer = sd.instancer_from_url(f"etcd://{etcd_member.endpoint}{prefix}")
    try:
        assert isinstance(instancer, sd.InstancerHandle)
        assert isinstance(instancer, sd.Instancer)
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:80",), 5, "the initial read")
        client.put(f"{prefix}b", "10.0.0.2:80")
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:80", "10.0.0.2:80"), 5, "a change")
        owned = instancer.client  # type: ignore[attr-defined]
    finally:
        instancer.stop()
    instancer.stop()  # idempotent
    with pytest.raises(Exception):  # noqa: B017 - any error: the channel is closed
        owned.vendor.get(f"{prefix}a")


# -- with authentication ---------------------------------------------------------

ROOT_PASSWORD = "root-pw-0451"  # noqa: S105 - a throwaway password for a throwaway server
READER_PASSWORD = "reader-pw-2112"  # noqa: S105 - a throwaway password for a throwaway server


def _etcdctl(member: EtcdMember, *args: str, user: str | None = None) -> None:
    command = ["/usr/bin/etcdctl", f"--endpoints={member.client_url}"]
    if user is not None:
        command.append(f"--user={user}")
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=20, check=False,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, f"etcdctl {args[:2]} failed: {done.stderr}"


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[EtcdMember]:
    """A member of our own with auth on: root, and 'reader' who may only read /svc/.

    ``--snapshot-count 1``: etcd re-creates simple auth tokens when it replays its
    log on restart; snapshotting at once means a restart really forgets them.
    """
    require_etcd_binary()
    with EtcdCluster(1, extra_args=["--snapshot-count", "1"]) as cluster:
        member = cluster.members[0]
        _etcdctl(member, "user", "add", f"root:{ROOT_PASSWORD}", "--interactive=false")
        _etcdctl(member, "user", "grant-role", "root", "root")
        _etcdctl(member, "role", "add", "svc-reader")
        _etcdctl(member, "role", "grant-permission", "svc-reader", "read", "/svc/", "--prefix=true")
        _etcdctl(member, "user", "add", f"reader:{READER_PASSWORD}", "--interactive=false")
        _etcdctl(member, "user", "grant-role", "reader", "svc-reader")
        _etcdctl(member, "auth", "enable")
        _etcdctl(member, "put", "/svc/a", "10.0.0.1:80", user=f"root:{ROOT_PASSWORD}")
        yield member


@pytest.fixture
def root_client(auth_etcd: EtcdMember) -> Iterator[Any]:
    made = sd.etcd.connect(auth_etcd.host, auth_etcd.client_port, user="root",
                           password=ROOT_PASSWORD)
    yield made
    sd.etcd.close_client(made)


@pytest.mark.integration
def test_credentials_from_the_url_work_and_never_leak(
    auth_etcd: EtcdMember, root_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"etcd://reader:{READER_PASSWORD}@{auth_etcd.endpoint}/svc/"
    with sd.instancer_from_url(url) as instancer:
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:80",), 5, "an authorised read")
        root_client.put("/svc/b", "10.0.0.2:80")
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:80", "10.0.0.2:80"), 5,
                 "an authorised watch")
        assert READER_PASSWORD not in repr(instancer)
    root_client.delete("/svc/b")
    assert READER_PASSWORD not in caplog.text


@pytest.mark.integration
def test_credentials_from_the_environment_work(
    auth_etcd: EtcdMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(USER_ENV, "reader")
    monkeypatch.setenv(PASSWORD_ENV, READER_PASSWORD)
    with sd.instancer_from_url(f"etcd://{auth_etcd.endpoint}/svc/") as instancer:
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:80",), 5, "an authorised read")


@pytest.mark.integration
def test_a_wrong_password_is_permission_denied(
    no_thread_leaks: None, auth_etcd: EtcdMember, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PermissionDeniedError) as raised:
        sd.instancer_from_url(f"etcd://reader:not-the-password@{auth_etcd.endpoint}/svc/")
    assert raised.value.__cause__ is not None
    assert "not-the-password" not in str(raised.value)
    assert "not-the-password" not in caplog.text


@pytest.mark.integration
def test_a_prefix_the_user_may_not_read_is_a_permission_denied_event(
    auth_etcd: EtcdMember,
) -> None:
    url = f"etcd://reader:{READER_PASSWORD}@{auth_etcd.endpoint}/secret/"
    with sd.instancer_from_url(url) as instancer:
        wait_for(lambda: instancer.state.error is not None, 5, "the refusal")
        assert isinstance(instancer.state.error, PermissionDeniedError)
        assert instancer.state.error.__cause__ is not None


@pytest.mark.integration
def test_the_token_is_renewed_after_etcd_forgets_it_in_a_restart(
    auth_etcd: EtcdMember, root_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """etcd's simple tokens live in memory: after a restart every call with the old
    token fails, and a watch created with it is silently dead.  A URL instancer knows
    its credentials and authenticates again."""
    caplog.set_level(logging.WARNING, logger="kitsd.sd.etcd.instancer")
    url = f"etcd://reader:{READER_PASSWORD}@{auth_etcd.endpoint}/svc/"
    with sd.instancer_from_url(url) as instancer:
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:80",), 5, "an authorised read")
        for tick in range(3):  # writes after our login, so a snapshot covers it
            root_client.put("/ticks/t", str(tick))
        auth_etcd.kill()
        wait_for(lambda: instancer.state.error is not None, 5, "the outage")
        auth_etcd.start()
        auth_etcd.wait_healthy()
        fresh = sd.etcd.connect(auth_etcd.host, auth_etcd.client_port, user="root",
                                password=ROOT_PASSWORD)
        try:
            fresh.put("/svc/c", "10.0.0.3:80")
            wait_for(lambda: instancer.state.instances == ("10.0.0.1:80", "10.0.0.3:80")
                     and instancer.state.error is None, 15, "recovery with a new token")
            fresh.delete("/svc/c")
            wait_for(lambda: instancer.state.instances == ("10.0.0.1:80",), 5, "a later change")
        finally:
            sd.etcd.close_client(fresh)
    assert not [t for t in threading.enumerate() if t.name.startswith("kitsd-etcd")]
    assert "invalid auth token" in caplog.text, "etcd never rejected the old token"


# ---------------------------------------------------------------------------
# no message echoes a secret, whatever the URL shape (issues 7.7 and 7.9)

SECRET = "hunter2-S3CRET"  # noqa: S105 - a test value


@pytest.mark.parametrize(
    "url",
    [
        f"etcd://alice:{SECRET}@127.0.0.1:notaport/svc/",
        f"etcd://alice:{SECRET}@127.0.0.1:1/",
        f"etcd://alice:{SECRET}@/svc/",
        f"etcd://alice:{SECRET}@h/svc/?tag=x",
        f"etcd://alice:{SECRET}@h/svc/?timeout={SECRET}",
        f"etcd://h/svc/?password={SECRET}",
        f"etcd://h/svc/?token={SECRET}",
        f"etcd://h/svc/?user=alice&password={SECRET}",
        f"etcd://{SECRET}@h/svc/",
        f"etcd://alice:{SECRET}@[::1/svc/",
        f"etcds://alice:{SECRET}@h/svc/",
        f"etcd://alice:{SECRET}@h/svc/?cert=/c.pem",
    ],
)
def test_no_error_or_log_line_echoes_a_secret(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ValueError) as raised:
        sd.instancer_from_url(url)
    chain: list[BaseException] = []
    error: BaseException | None = raised.value
    while error is not None and len(chain) < 10:
        chain.append(error)
        error = error.__cause__ or error.__context__
    for item in chain:
        assert SECRET not in str(item), f"{type(item).__name__} echoes the secret"
        assert SECRET not in repr(item)
    assert SECRET not in caplog.text


@pytest.mark.integration
def test_an_unreachable_etcd_with_credentials_never_shows_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from kitsd.compose.process import free_ports

    caplog.set_level(logging.DEBUG)
    port = free_ports(1)[0]
    monkeypatch.setenv(USER_ENV, "bob")
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    for url in (f"etcd://127.0.0.1:{port}/svc/?timeout=1",
                f"etcd://alice:{SECRET}@127.0.0.1:{port}/svc/?timeout=1"):
        with pytest.raises(RegistryUnavailableError) as raised:  # connect() logs in at once
            sd.instancer_from_url(url)
        assert SECRET not in str(raised.value)
        assert SECRET not in repr(raised.value)
    assert SECRET not in caplog.text
