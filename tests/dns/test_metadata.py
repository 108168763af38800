"""SRV weight, priority and target as instance metadata (the instancer publishing them is
tested in test_instancer.py, against the scripted server)."""

from __future__ import annotations

from kitsd.sd.dns.srv import SRVInstance, SRVRecord, infos_of, translate
from kitsd.sd.instance_info import InstanceInfo


def test_srv_weight_priority_and_target_become_metadata() -> None:
    translated = translate(
        [SRVRecord(1, 10, 80, "a.example.test."), SRVRecord(2, 0, 81, "b.example.test.")],
        {"a.example.test": ["10.0.0.1"], "b.example.test": ["10.0.0.2"]},
    )
    assert infos_of(translated) == {
        "10.0.0.1:80": InstanceInfo(10, meta={"srv.priority": "1", "srv.target": "a.example.test"}),
        "10.0.0.2:81": InstanceInfo(0, meta={"srv.priority": "2", "srv.target": "b.example.test"}),
    }


def test_all_zero_weights_mean_no_preference() -> None:
    items = [SRVInstance("h:1", 0, 0, "h"), SRVInstance("h:2", 0, 0, "h")]
    assert {info.weight for info in infos_of(items).values()} == {1}
