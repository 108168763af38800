"""``dnssrv://`` URLs through ``sd.instancer_from_url``."""

from __future__ import annotations

import pytest

from kitsd import sd
from kitsd.core.errors import MisuseError
from kitsd.sd.dns import SRVInstancer
from kitsd.sd.dns.instancer import _running_watches


def test_url_builds_an_srv_instancer_with_its_options(no_thread_leaks: None) -> None:
    url = ("dnssrv://_users._tcp.service.consul?server=127.0.0.1:8600&resolve=0"
           "&min_ttl=2&max_ttl=60&timeout=1")
    with sd.instancer_from_url(url) as instancer:
        assert isinstance(instancer, SRVInstancer)
        assert instancer.name == "_users._tcp.service.consul"
        assert "127.0.0.1:8600" in repr(instancer)
    assert _running_watches() == 0


@pytest.mark.parametrize(
    ("url", "mentions"),
    [
        ("dnssrv://", "one SRV name"),
        ("dnssrv://_a._tcp.example:53", "one SRV name"),
        ("dnssrv://_a._tcp.example/path", "one SRV name"),
        ("dnssrv://_a._tcp.example?server=dns.example", "IP address"),
        ("dnssrv://_a._tcp.example?server=127.0.0.1:99999", "server must be an IP address"),
        ("dnssrv://_a._tcp.example?resolve=maybe", "resolve"),
        ("dnssrv://_a._tcp.example?min_ttl=soon", "min_ttl"),
        ("dnssrv://_a._tcp.example?interval=0", "interval"),
        ("dnssrv://_a._tcp.example?timeout=nan", "timeout"),
        ("dnssrv://_a._tcp.example?server=127.0.0.1&server=127.0.0.2", "once"),
        ("dnssrv://_a._tcp.example?ttl=5", "unknown"),
    ],
)
def test_bad_urls_fail_before_anything_starts(
    url: str, mentions: str, no_thread_leaks: None
) -> None:
    with pytest.raises(MisuseError, match=mentions):
        sd.instancer_from_url(url)
    assert _running_watches() == 0


def test_userinfo_is_refused_without_echoing_it() -> None:
    with pytest.raises(MisuseError) as caught:
        sd.instancer_from_url("dnssrv://admin:s3cret@_a._tcp.example")
    assert "s3cret" not in str(caught.value)
