"""The value form of an instance in a key/value registry (sd.instance_value)."""

from __future__ import annotations

import json

import pytest

from kitsd.sd.instance_info import DEFAULT_INFO, InstanceInfo
from kitsd.sd.instance_value import BadValue, decode_value, encode_value, shown


@pytest.mark.parametrize(
    "info",
    [None, DEFAULT_INFO, InstanceInfo(weight=0), InstanceInfo(3, ("a", "b"), {"k": "v", "é": "ü"})],
)
def test_encode_then_decode_round_trips(info: InstanceInfo | None) -> None:
    text = encode_value("10.0.0.1:80", info)
    assert decode_value(text) == ("10.0.0.1:80", info or DEFAULT_INFO)
    assert (text == "10.0.0.1:80") is (info is None)


def test_json_leaves_default_fields_out() -> None:
    assert json.loads(encode_value("h:1", InstanceInfo(tags=("x",)))) == {"address": "h:1",
                                                                          "tags": ["x"]}


def test_plain_and_json_addresses_are_normalised() -> None:
    assert decode_value(" LOCALHOST:80 ") == ("localhost:80", DEFAULT_INFO)
    assert decode_value('  {"address": "[0:0::1]:443"}') == ("[::1]:443", DEFAULT_INFO)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("nohost", "invalid instance"),
        ("{", "not JSON"),
        ('{"address": "h:1", "weight": 1e3}', "weight"),
        ('{"address": null}', "address"),
        ('{"address": "h:1", "meta": {"k": null}}', "meta"),
    ],
)
def test_bad_values_say_why(text: str, reason: str) -> None:
    with pytest.raises(BadValue, match=reason) as raised:
        decode_value(text)
    assert isinstance(raised.value, ValueError)


# --- the URL form go-kit services write (issue 15.4) -----------------------------------------


@pytest.mark.parametrize(("text", "instance"), [
    ("http://1.2.3.4:8080", "1.2.3.4:8080"),  # go-kit's etcd Service documentation
    ("http://1.2.3.4:8080/", "1.2.3.4:8080"),
    (" https://[0:0::1]:443 ", "[::1]:443"),
    ("grpc://Users.Example:50051/", "users.example:50051"),
    ("tcp://10.0.0.7:9000", "10.0.0.7:9000"),
])
def test_url_values_are_read_as_their_host_and_port(text: str, instance: str) -> None:
    assert decode_value(text) == (instance, DEFAULT_INFO)


@pytest.mark.parametrize(("text", "reason"), [
    ("http://1.2.3.4", "without a port"),
    ("http://1.2.3.4:8080/api", "with a path"),
    ("http://1.2.3.4:8080?x=1", "with a query"),
    ("http://1.2.3.4:8080#top", "with a fragment"),
    ("http://u:S3CRET@1.2.3.4:8080", "user information"),
    ("http://1.2.3.4:S3CRET", "port is not a number"),
    ("http://ev\nil.example:80", "control characters"),
    ("3http://1.2.3.4:80", "not an instance"),
    ("http://:80", "no host"),
])
def test_url_values_refused_say_the_true_reason(text: str, reason: str) -> None:
    with pytest.raises(BadValue, match=reason) as raised:
        decode_value(text)
    assert "IPv6" not in raised.value.reason  # the old, wrong reason
    assert "S3CRET" not in raised.value.reason
    assert "S3CRET" not in shown(text)
