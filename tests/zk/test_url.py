"""``zk://`` URLs: parsing, digest credentials from the environment (never shown), ownership."""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any

import pytest

from kitsd import sd
from kitsd.core.errors import MisuseError, PermissionDeniedError
from kitsd.sd.zk.instancer import _running_watches
from kitsd.sd.zk.url import AUTH_ENV, ZKURL, parse_url
from tests.helpers import WatchProcess, assert_no_new_threads, wait_for
from tests.zk.conftest import Server, connected

SECRET = "s3cr3t-7f9c2a"  # noqa: S105 - a throwaway digest password for the test server


def parse(url: str) -> ZKURL:
    return parse_url(urllib.parse.urlsplit(url))


def test_hosts_path_and_timeout_are_parsed() -> None:
    assert parse("zk://zk1,zk2:2182,[::1]/services/users/?timeout=3") == ZKURL(
        "zk1:2181,zk2:2182,[::1]:2181", "/services/users", 3.0)
    assert parse("zk://127.0.0.1:2181/a%20b") == ZKURL("127.0.0.1:2181", "/a b", 10.0)


@pytest.mark.parametrize(
    ("url", "mentions"),
    [
        ("zk:///services/users", "no host"),
        ("zk://h:0/services", "bad ZooKeeper host"),
        ("zk://h:99999/services", "bad ZooKeeper host"),
        ("zk://h/", "absolute node path"),
        ("zk://h", "absolute node path"),
        ("zk://h//a", "absolute node path"),
        ("zk://h/a?timeout=0", "timeout"),
        ("zk://h/a?timeout=inf", "timeout"),
        ("zk://h/a?timeout=soon", "timeout"),
        ("zk://h/a?chroot=/x", "unknown"),
    ],
)
def test_bad_urls_fail_before_anything_starts(url: str, mentions: str) -> None:
    before = set(threading.enumerate())
    with pytest.raises(MisuseError, match=mentions):
        sd.instancer_from_url(url)
    assert _running_watches() == 0
    assert_no_new_threads(before, timeout=0.5)


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(MisuseError) as caught:
        sd.instancer_from_url(f"zk://alice:{SECRET}@127.0.0.1:2181/services")
    assert SECRET not in str(caught.value)
    assert AUTH_ENV in str(caught.value)


def test_malformed_auth_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTH_ENV, "no-colon")
    with pytest.raises(MisuseError, match=AUTH_ENV):
        sd.instancer_from_url("zk://127.0.0.1:2181/services")


@pytest.mark.integration
def test_digest_auth_from_the_environment_reads_a_protected_node_and_is_never_shown(
    zk_server: Server, path: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kazoo.security import make_digest_acl

    from kitsd.sd.zk import close_client

    admin = connected(zk_server.address, auth=f"alice:{SECRET}")
    try:
        acl = [make_digest_acl("alice", SECRET, all=True)]
        admin.ensure_path(path.rpartition("/")[0])  # open parents: only the service is locked
        admin.create(path, b"", acl=acl)
        admin.create(f"{path}/a", b"10.0.0.1:80", acl=acl)
        url = f"zk://{zk_server.address}{path}"
        caplog.set_level(1)  # everything, kazoo's BLATHER included
        before = set(threading.enumerate())

        denied: list[sd.Event] = []
        with sd.instancer_from_url(url) as anonymous:  # no credentials: refused
            anonymous.subscribe(denied.append)
            wait_for(lambda: any(isinstance(event.error, PermissionDeniedError)
                                 for event in denied), timeout=10, what="a permission error")
            assert all(event.instances == () for event in denied)

        monkeypatch.setenv(AUTH_ENV, f"alice:{SECRET}")
        events: list[sd.Event] = []
        with sd.instancer_from_url(url) as instancer:
            instancer.subscribe(events.append)
            wait_for(lambda: bool(events) and events[-1] == sd.Event(("10.0.0.1:80",)),
                     timeout=10, what="the protected node's children")
            shown = [repr(instancer), str(instancer)]
        # the instancer owns its client: stop() leaves no kazoo thread behind
        assert_no_new_threads(before, timeout=5.0)
        shown += [str(event.error) for event in denied + events if event.error is not None]
        shown += [record.getMessage() for record in caplog.records]
        shown += [repr(record.args) for record in caplog.records]
        assert not [text for text in shown if SECRET in text]
    finally:
        admin.delete(path, recursive=True)
        close_client(admin)


@pytest.mark.integration
def test_kitsd_watch_shows_live_changes(zk_server: Server, client: Any, path: str) -> None:
    watch = WatchProcess(f"zk://{zk_server.address}{path}")
    try:
        watch.wait_line(lambda line: "0 instances" in line)
        client.create(f"{path}/a", b"10.0.0.1:80", makepath=True)
        watch.wait_line(lambda line: "1 instance: 10.0.0.1:80" in line)
        client.delete(f"{path}/a")
        watch.wait_line(lambda line: "0 instances" in line)
    finally:
        watch.close()
    assert watch.process.returncode == WatchProcess.INTERRUPTED

