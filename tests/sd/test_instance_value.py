"""The value form of an instance in a key/value registry (sd.instance_value)."""

from __future__ import annotations

import json

import pytest

from kitsd.sd.instance_info import DEFAULT_INFO, InstanceInfo
from kitsd.sd.instance_value import BadValue, decode_value, encode_value


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
