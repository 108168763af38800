"""Health bodies decoded (sd.consul.decode): msgspec is only an accelerator; pure."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from kitsd.sd.consul.decode import FAST, decode_entries, json_entries
from kitsd.sd.consul.health import InfoMemo, Memo, UnreadableAnswerError, service_instances
from kitsd.sd.instance_info import InstanceInfo


def entry(n: int, **service: object) -> dict[str, object]:
    """A full entry as Consul 1.22 writes it, with ``service`` fields replaced."""
    address = f"10.0.0.{n}"
    check = {"Node": f"node-{n}", "CheckID": "serfHealth", "Status": "passing",
             "Output": "Agent alive and reachable", "ServiceTags": [], "Definition": {},
             "CreateIndex": 10, "ModifyIndex": 10}
    fields: dict[str, object] = {
        "ID": f"web-{n}", "Service": "web", "Tags": ["blue"], "Address": address,
        "Meta": {"zone": "a"}, "Port": 8000 + n, "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": False, "Proxy": {"MeshGateway": {}, "Expose": {}},
        "Connect": {}, "CreateIndex": 12, "ModifyIndex": 12,
    }
    fields.update(service)
    return {
        "Node": {"ID": "0000", "Node": f"node-{n}", "Address": "192.168.0.9",
                 "Datacenter": "dc1", "TaggedAddresses": {"lan": address},
                 "Meta": {"consul-network-segment": ""}},
        "Service": fields,
        "Checks": [check, {**check, "CheckID": f"service:web-{n}", "Status": "warning"}],
    }


WELL_FORMED = [entry(1), entry(2, Tags=[], Meta=None), entry(3, Tags=None, Meta={}),
               entry(4, Address="", Weights={"Passing": 5, "Warning": 2}),
               entry(5, Address="fe80::1", Weights=None), entry(6, Meta={"é": "ü\u2603"})]

ODD = [
    [entry(1), "junk", 17, None, {"Service": None}, entry(2, Port="80"), entry(3, Port=8.0),
     entry(4, Port=True), entry(5, Port=0), entry(6, Address="bad host!"),
     entry(7, Tags=["ok", 3]), entry(8, Meta={"k": "v", "n": 1}), entry(9, Tags="blue"),
     entry(10, Weights={"Passing": -1, "Warning": "x"}), entry(11)],
    [{"Node": {"Address": "10.1.1.1"}, "Service": {"Address": "", "Port": 81},
      "Checks": [{"Status": 3}]}],
    [entry(1, Port=2**70)],
]


def translate(entries: object) -> tuple[tuple[str, ...], dict[str, InstanceInfo]]:
    infos: dict[str, InstanceInfo] = {}
    return service_instances(entries, infos=infos), infos


@pytest.mark.parametrize("answer", [WELL_FORMED, *ODD, []],
                         ids=["well-formed", "garbage", "odd-check", "huge-port", "empty"])
def test_both_decoders_give_the_same_instances_metadata_and_warnings(
    answer: list[object], caplog: pytest.LogCaptureFixture,
) -> None:
    body = json.dumps(answer).encode()
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.consul.health"):
        expected = translate(json.loads(body))
        slow_warnings = [record.getMessage() for record in caplog.records]
        caplog.clear()
        assert translate(decode_entries(body)) == expected
        assert [record.getMessage() for record in caplog.records] == slow_warnings
    assert translate(json_entries(body)) == expected


def test_the_well_formed_answer_is_translated_as_expected() -> None:
    instances, infos = translate(decode_entries(json.dumps(WELL_FORMED).encode()))
    assert instances == ("10.0.0.1:8001", "10.0.0.2:8002", "10.0.0.3:8003",
                         "10.0.0.6:8006", "192.168.0.9:8004", "[fe80::1]:8005")
    assert infos["10.0.0.1:8001"] == InstanceInfo(tags=("blue",), meta={"zone": "a"})
    assert infos["192.168.0.9:8004"].weight == 2  # a check is warning
    assert infos["10.0.0.6:8006"].meta == {"é": "ü\u2603"}


def test_msgspec_decodes_only_the_fields_the_watch_reads() -> None:
    assert FAST  # kitsd[consul] installs msgspec; the test environment has it
    decoded = decode_entries(json.dumps([entry(1)]).encode())
    assert decoded == [{
        "Node": {"Address": "192.168.0.9"},
        "Service": {"ID": "web-1", "Tags": ["blue"], "Address": "10.0.0.1",
                    "Meta": {"zone": "a"}, "Port": 8001,
                    "Weights": {"Passing": 1, "Warning": 1}},
        "Checks": [{"Status": "passing"}, {"Status": "warning"}],
    }]


def test_an_odd_body_is_decoded_whole_by_json() -> None:
    body = json.dumps(ODD[0]).encode()
    assert decode_entries(body) == json.loads(body)


@pytest.mark.parametrize("body", [b"[{not json", b"", b"\xff\xfe", b"[1] [2]", b"\x00"])
def test_a_body_that_is_not_json_is_unreadable_for_both(body: bytes) -> None:
    for decode in (decode_entries, json_entries):
        with pytest.raises(UnreadableAnswerError, match="cannot decode JSON"):
            decode(body)


def test_a_utf16_body_json_can_read_is_read() -> None:
    body = json.dumps([entry(1)]).encode("utf-16")
    assert translate(decode_entries(body)) == translate(json.loads(body))


def test_memos_stay_consistent_across_decoders() -> None:
    """An answer decoded by one decoder and the next by the other (msgspec missing
    one answer, e.g. an odd one) share the watch's memos without mixing them up."""
    memo: Memo = {}
    info_memo: InfoMemo = {}
    body = json.dumps(WELL_FORMED).encode()
    expected = translate(json.loads(body))
    for decode in (decode_entries, json_entries, decode_entries):
        infos: dict[str, InstanceInfo] = {}
        assert (service_instances(decode(body), memo=memo, info_memo=info_memo,
                                  infos=infos), infos) == expected


def test_without_msgspec_the_standard_library_decodes() -> None:
    code = ("import sys; sys.modules['msgspec'] = None\n"
            "from kitsd.sd.consul import decode\n"
            "assert not decode.FAST and decode.decode_entries is decode.json_entries\n"
            "print(decode.decode_entries(b'[{\"Service\": {\"Port\": 1}}]'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[{'Service': {'Port': 1}}]"
