"""One redaction rule on every path (issue 16.5): a secret typed into an address or a
URL never comes back in an error, through any entry point -- the URL, ``connect()``,
the constructors, the command line -- in the message or anywhere in the traceback.

The rule is :mod:`kitsd.core.redact`'s: user information, a port that is not a number,
query parameter values and the fragment are ``***``.
"""

from __future__ import annotations

import subprocess
import sys
import traceback
import urllib.parse

import pytest

from kitsd import sd
from kitsd.core.errors import InvalidInstanceError, MisuseError
from kitsd.core.redact import (
    redact_netloc,
    redact_url,
    shown_address,
    shown_parameter,
    shown_url,
)

SECRET = "S3CRET-pw"  # noqa: S105 - a test value
NUMBER = "0.000123456"  # a numeric secret in a number's place


def everything_shown(error: BaseException) -> str:
    """The message and the whole printed traceback, chained causes included."""
    return "".join(traceback.format_exception(error))


# --- the rule itself -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "shown"), [
    ("10.0.0.1:80", "'10.0.0.1:80'"),
    ("u:S3CRET@10.0.0.1:80", "'***@10.0.0.1:80'"),
    ("host:S3CRET", "'host:***'"),
    ("u:S3CRET", "'u:***'"),  # a password where the port goes, host forgotten
    ("[::1]:S3CRET", "'[::1]:***'"),
    ("[::1]x", "'[::1]:***'"),
    ("[::1]:443", "'[::1]:443'"),
    ("host", "'host'"),
    ("host:", "'host:'"),
    ("host:123456", "'host:***'"),
    (2379, "a int"),
])
def test_shown_address(value: object, shown: str) -> None:
    assert shown_address(value) == shown


def test_netloc_and_urls() -> None:
    assert redact_netloc("u:S3CRET@h1:1,h2:S3CRET") == "***@h1:1,h2:***"
    assert redact_url("etcd://u:S3CRET@h:2379/p/?token=S3CRET#S3CRET") == \
        "etcd://***@h:2379/p/?token=***#***"
    assert redact_url("etcd://h:S3CRET/p/") == "etcd://h:***/p/"
    assert redact_url("etcd://u:pa/ss?w#rd@h:1/p/") == "etcd://***@h:1/p/"
    assert redact_url("zk://h/p?S3CRET") == "zk://h/p?***"
    assert redact_url("zk://h/p?timeout=5&S3CRET=x") == "zk://h/p?timeout=***&***=***"
    parsed = urllib.parse.urlsplit("consul://u:S3CRET@h:S3CRET/svc?tag=S3CRET#S3CRET")
    assert shown_url(parsed) == "consul://***@h:***/svc?tag=***#***"
    # an empty authority keeps its "//" (urlunsplit showed consul:// as "consul:")
    assert shown_url(urllib.parse.urlsplit("consul://")) == "consul://"
    assert shown_url(urllib.parse.urlsplit("k8s:///users")) == "k8s:///users"
    assert shown_parameter("min_ttl") == "min_ttl"
    assert shown_parameter("S3CRET=1") == "***"


def test_an_invalid_instance_never_shows_user_information_or_a_bad_port() -> None:
    for value in (f"u:{SECRET}@10.0.0.1:80", f"10.0.0.1:{SECRET}", f"user:{SECRET}"):
        with pytest.raises(InvalidInstanceError) as caught:
            sd.normalize_instance(value)
        assert SECRET not in everything_shown(caught.value)
        assert caught.value.value == value  # kept for the caller, never shown


# --- per scheme, through the URL -------------------------------------------------------------

BAD_URLS = [
    # secrets in the user part and the port position
    f"etcd://u:{SECRET}@127.0.0.1:1,h:{SECRET}/p/",
    f"etcd://127.0.0.1:{SECRET}/p/",
    f"etcd://u:{SECRET}/p/",
    f"zk://u:{SECRET}@127.0.0.1:2181/p",
    f"zk://127.0.0.1:{SECRET}/p",
    f"static://10.0.0.1:80,10.0.0.2:{SECRET}",
    f"static://u:{SECRET}@10.0.0.1:80",
    f"consul://127.0.0.1:{SECRET}/svc",
    f"consul://127.0.0.1:{SECRET}/svc#frag",
    f"dnssrv://u:{SECRET}@_a._tcp.example",
    # secrets as parameter values
    f"etcd://127.0.0.1:1/p/?token={SECRET}",
    f"etcd://127.0.0.1:1/p/?timeout={SECRET}",
    f"etcd://127.0.0.1:1/p/?timeout=-{NUMBER}",
    f"zk://127.0.0.1:2181/p?timeout={SECRET}",
    f"zk://127.0.0.1:2181/p?timeout=-{NUMBER}",
    f"zk://127.0.0.1:2181/p?{SECRET}=1",
    f"dnssrv://_a._tcp.example?server={SECRET}",
    f"dnssrv://_a._tcp.example?server=10.0.0.1:{SECRET}",
    f"dnssrv://_a._tcp.example?server=u:{SECRET}@10.0.0.1",
    f"dnssrv://_a._tcp.example?min_ttl={SECRET}",
    f"dnssrv://_a._tcp.example?min_ttl={NUMBER}",
    f"dnssrv://_a._tcp.example?min_ttl=5&max_ttl={NUMBER}",
    f"dnssrv://_a._tcp.example?timeout={SECRET}",
    f"dnssrv://_a._tcp.example?interval=-{NUMBER}",
    f"dnssrv://_a._tcp.example?resolve={SECRET}",
    f"consul://127.0.0.1:8500/svc?token={SECRET}",
    f"consul://127.0.0.1:8500/svc?passing={SECRET}",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_url_errors_show_no_secret(url: str, no_thread_leaks: None) -> None:
    with pytest.raises(MisuseError) as caught:
        sd.instancer_from_url(url)
    shown = everything_shown(caught.value)
    assert SECRET not in shown
    assert NUMBER not in shown


# --- connect() -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"endpoints": [f"u:{SECRET}@127.0.0.1:2379"]},
    {"endpoints": ["127.0.0.1:2379", f"127.0.0.1:{SECRET}"]},
    {"endpoints": f"u:{SECRET}@127.0.0.1:2379"},
    {"host": f"u:{SECRET}@127.0.0.1"},
    {"port": SECRET},
])
def test_etcd_connect_errors_show_no_secret(kwargs: dict[str, object]) -> None:
    pytest.importorskip("pyetcd")
    with pytest.raises((MisuseError, TypeError)) as caught:
        sd.etcd.connect(**kwargs)  # type: ignore[arg-type]
    assert SECRET not in everything_shown(caught.value)


def test_zk_connect_and_url_errors_show_no_secret() -> None:
    with pytest.raises(MisuseError) as caught:
        sd.zk.connect("", auth=f"u:{SECRET}")
    assert SECRET not in everything_shown(caught.value)
    with pytest.raises(MisuseError) as caught:
        sd.zk.connect("127.0.0.1:2181", auth=SECRET)  # no ':': refused, not shown
    assert SECRET not in everything_shown(caught.value)


def test_dns_and_static_constructors_show_no_secret() -> None:
    with pytest.raises(MisuseError) as caught:
        sd.dns.SRVInstancer("_a._tcp.example", resolver=f"10.0.0.1:{SECRET}")
    assert SECRET not in everything_shown(caught.value)
    with pytest.raises(MisuseError) as caught:
        sd.FixedInstancer([f"10.0.0.1:{SECRET}"])
    assert SECRET not in everything_shown(caught.value)


# --- the command line ------------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kitsd", *args], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("url", [
    f"etcd://u:{SECRET}@127.0.0.1:1/kitsd-chaos/",
    f"etcd://127.0.0.1:1/kitsd-chaos/?token={SECRET}",
    f"etcd://127.0.0.1:{SECRET}/kitsd-chaos/",
    f"consul://127.0.0.1:{SECRET}",
])
def test_chaos_never_prints_a_secret_of_its_registry_url(url: str) -> None:
    done = _run("chaos", "--registry-url", url, "--duration", "1")
    assert done.returncode != 0
    assert SECRET not in done.stdout + done.stderr
    assert "***" in done.stdout + done.stderr


@pytest.mark.parametrize("url", [
    f"etcd://127.0.0.1:{SECRET}/p/",
    f"zk://127.0.0.1:2181/p?timeout={SECRET}",
    f"dnssrv://_a._tcp.example?server={SECRET}",
    f"static://10.0.0.1:{SECRET}",
])
def test_watch_never_prints_a_secret_of_its_url(url: str) -> None:
    done = _run("watch", url, "--count", "1")
    assert done.returncode != 0
    assert SECRET not in done.stdout + done.stderr
