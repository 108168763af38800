"""Tests for sd.url.instancer_from_url."""

from __future__ import annotations

import re
import sys
import types
import urllib.parse

import pytest

from kitsd.core.errors import InvalidInstanceError, MisuseError
from kitsd.sd.event import Event
from kitsd.sd.instance import normalize_instance
from kitsd.sd.instancer import Broadcaster, FixedInstancer, Instancer, InstancerHandle
from kitsd.sd.url import instancer_from_url, redact_url


def replay(instancer: Instancer) -> list[Event]:
    events: list[Event] = []
    instancer.subscribe(events.append)
    return events


def test_static_url_gives_a_fixed_instancer() -> None:
    raw = ["h2:2", "h1:1", "[0:0::1]:80", "H1:1"]
    with instancer_from_url("static://" + ",".join(raw)) as instancer:
        assert isinstance(instancer, FixedInstancer)
        expected = tuple(sorted({normalize_instance(value) for value in raw}))
        assert replay(instancer) == [Event(expected)]


@pytest.mark.parametrize(
    "body", ["[::1]:80,a:1,[fe80::1]:443", "a:1,b:2,c:3", "a:1,[0:0::2]:8080"]
)
def test_static_url_with_several_instances_including_ipv6(body: str) -> None:
    expected = tuple(sorted({normalize_instance(item) for item in body.split(",")}))
    with instancer_from_url(f"static://{body}") as instancer:
        assert replay(instancer) == [Event(expected)]


def test_static_scheme_is_case_insensitive_and_tolerates_blanks() -> None:
    with instancer_from_url("STATIC://a:1, b:2,,") as instancer:
        assert replay(instancer) == [Event(("a:1", "b:2"))]


@pytest.mark.parametrize("bad", ["host", "host:0", "host:abc", "::1:80", "a b:80"])
def test_static_url_with_a_bad_instance_raises_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid instance") as excinfo:
        instancer_from_url(f"static://good:1,{bad}")
    assert isinstance(excinfo.value, InvalidInstanceError)


@pytest.mark.parametrize("url", ["static://", "static://,", "static:// , "])
def test_static_url_without_instances_raises_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="no instances"):
        instancer_from_url(url)


@pytest.mark.parametrize("url", ["zookeeper://zk:2181/svc", "http://a:1", "dns://svc"])
def test_unknown_scheme_raises_value_error_naming_it(url: str) -> None:
    scheme = url.split("://", 1)[0]
    with pytest.raises(ValueError, match=scheme) as excinfo:
        instancer_from_url(url)
    assert isinstance(excinfo.value, MisuseError)


@pytest.mark.parametrize("url", ["", "a:1,b:2", "static:a:1", "etcd:/x", "localhost"])
def test_missing_scheme_separator_raises_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="not an instancer URL"):
        instancer_from_url(url)


def test_non_string_raises_value_error() -> None:
    with pytest.raises(ValueError, match="not an instancer URL"):
        instancer_from_url(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "module"),
    [
        ("etcd://127.0.0.1:2379/services/web/", "kitsd.sd.etcd.url"),
        ("consul://127.0.0.1:8500/web?tag=a&tag=b&passing=1", "kitsd.sd.consul.url"),
    ],
)
def test_registry_schemes_dispatch_the_parsed_url_to_their_driver(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str
) -> None:
    received: list[tuple[urllib.parse.SplitResult, float]] = []
    handle = InstancerHandle(Broadcaster())

    def fake_from_url(parsed: urllib.parse.SplitResult, *,
                      first_answer_timeout: float) -> InstancerHandle:
        received.append((parsed, first_answer_timeout))
        return handle

    fake = types.ModuleType(module)
    fake.instancer_from_url = fake_from_url  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module, fake)
    assert instancer_from_url(url) is handle
    assert instancer_from_url(url, first_answer_timeout=0) is handle
    assert instancer_from_url(url, first_answer_timeout=0.25) is handle
    parsed = urllib.parse.urlsplit(url)
    assert received == [(parsed, 5.0), (parsed, 0.0), (parsed, 0.25)]


@pytest.mark.parametrize(
    "url", ["etcd://127.0.0.1:notaport/p/", "consul://127.0.0.1:99999/web"]
)
def test_a_registry_url_with_a_bad_port_raises_misuse_error_naming_it(url: str) -> None:
    # a port that is not a number is named but not shown (it may be a password)
    with pytest.raises(MisuseError, match=re.escape(url.split("/")[2].replace("notaport", "***"))):
        instancer_from_url(url)


@pytest.mark.parametrize(
    "url",
    ["etcd://user:hunter2@127.0.0.1:notaport/p/", "zz://hunter2@h/x",
     "consul://hunter2@127.0.0.1:99999/web", "etcd://u:hunter2@[::1/svc/"],
)
def test_errors_never_show_credentials(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        instancer_from_url(url)
    assert "hunter2" not in str(caught.value)


def test_redact_url() -> None:
    assert redact_url("consul://tok@h:1/s?tag=a") == "consul://***@h:1/s?tag=***"
    assert redact_url("etcd://u:p@a:1,b:2/x/") == "etcd://***@a:1,b:2/x/"
    assert redact_url("static://a:1") == "static://a:1"


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [("etcd://127.0.0.1:2379/p/", "kitsd.sd.etcd.url", "etcd"),
     ("consul://127.0.0.1:8500/web", "kitsd.sd.consul.url", "consul")],
)
def test_a_missing_driver_raises_value_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(ValueError, match=rf"kitsd\[{extra}\]") as excinfo:
        instancer_from_url(url)
    assert isinstance(excinfo.value.__cause__, ImportError)


@pytest.mark.parametrize(
    "url",
    ["static://admin:S3cr3t@10.0.0.1:80", "static://admin:S3cr3t@host",
     "static://a:1,admin:S3cr3t@10.0.0.1:80", "admin:S3cr3t@host", "static://u:S3cr3t@",
     "zz://u:p/S3cr3t@h/x", "zz://h/x?token=S3cr3t", "zz://h/x?tag=a&password=S3cr3t#f"],
)
def test_static_and_odd_urls_never_show_credentials(url: str) -> None:
    # Issue 7.7: static://admin:S@10.0.0.1:80 echoed S.
    with pytest.raises(ValueError) as caught:
        instancer_from_url(url)
    assert "S3cr3t" not in str(caught.value)
    assert "S3cr3t" not in repr(caught.value)


def test_redact_url_hides_secret_parameters_and_odd_user_information() -> None:
    # every value goes: a secret may sit under any name (``?S=1``, ``?tag=S``)
    assert redact_url("consul://h/web?token=S&tag=a") == "consul://h/web?token=***&tag=***"
    assert redact_url("consul://h/web?tag=a;x-consul-token=S") == \
        "consul://h/web?tag=***;x-consul-token=***"
    assert redact_url("consul://h/web#S") == "consul://h/web#***"
    assert redact_url("etcd://u:p/ss@h:1/x") == "etcd://***@h:1/x"
    assert redact_url("admin:S@host") == "***@host"
    assert len(redact_url("static://" + "a" * 10_000)) < 300
