"""The translation memo (sd.consul.health.Memo): an entry seen before costs one look-up,
and never gives another entry's instance or metadata.  Pure."""

from __future__ import annotations

import pytest

from kitsd.sd.consul.health import InfoMemo, Memo, service_instances
from kitsd.sd.instance_info import InstanceInfo


def entry(port: object = 80, *, address: object = "10.0.0.1", node: object = "10.9.9.9",
          tags: object = None, meta: object = None, weights: object = None,
          statuses: tuple[str, ...] = ()) -> dict[str, object]:
    return {"Node": {"Address": node},
            "Service": {"ID": "x", "Address": address, "Port": port, "Tags": tags,
                        "Meta": meta, "Weights": weights},
            "Checks": [{"Status": status} for status in statuses]}


def translate(answer: list[object], memo: Memo | None = None,
              info_memo: InfoMemo | None = None) -> tuple[tuple[str, ...], dict[str, InstanceInfo]]:
    infos: dict[str, InstanceInfo] = {}
    return service_instances(answer, memo=memo, infos=infos, info_memo=info_memo), infos


SEQUENCES = [
    # the same raw tags, as a list and as something else
    [[entry(tags=["a", "b"])], [entry(tags="ab")], [entry(tags=("a", "b"))],
     [entry(tags=["a", "b"])]],
    [[entry(meta={"k": "v"})], [entry(meta=[["k", "v"]])], [entry(meta=(("k", "v"),))],
     [entry(meta={"k": "v"})]],
    # non-string tags and meta values hash like others but are left out all the same
    [[entry(tags=[1, "a"])], [entry(tags=[True, "a"])], [entry(tags=[1.0, "a"])]],
    [[entry(meta={"k": 1})], [entry(meta={"k": True})], [entry(meta={"k": "1"})]],
    # the weight depends on the checks when Warning differs from Passing
    [[entry(weights={"Passing": 5, "Warning": 1}, statuses=("passing",))],
     [entry(weights={"Passing": 5, "Warning": 1}, statuses=("warning",))],
     [entry(weights={"Passing": 5, "Warning": 1}, statuses=("passing", "passing"))]],
    [[entry(weights={"Passing": 1, "Warning": 1})], [entry(weights={"Passing": 2})],
     [entry(weights=[1])], [entry(weights=None)]],
    # the address: Service's, else the node's; a blank one is never memoised
    [[entry(address="", node="10.0.0.7")], [entry(address="", node="10.0.0.8")],
     [entry(address=None, node="10.0.0.7")], [entry(address="  ", node="10.0.0.9")],
     [entry(address="  ", node="10.0.0.5")], [entry(address=" 10.0.0.7 ")]],
    # ports that hash like 80
    [[entry(80)], [entry(80.0)], [entry(True)], [entry(1)], [entry("80")]],
]


@pytest.mark.parametrize("answers", SEQUENCES,
                         ids=["tags", "meta", "odd-tags", "odd-meta", "checks", "weights",
                              "address", "ports"])
def test_the_memo_gives_what_a_fresh_parse_gives(answers: list[list[object]]) -> None:
    memo: Memo = {}
    info_memo: InfoMemo = {}
    for answer in answers + answers[::-1] + answers:
        assert translate(answer, memo, info_memo) == translate(answer)  # no memo


def test_a_memo_filled_without_metadata_still_gives_it() -> None:
    memo: Memo = {}
    answer: list[object] = [entry(tags=["a"])]
    assert service_instances(answer, memo=memo) == ("10.0.0.1:80",)
    assert translate(answer, memo) == (("10.0.0.1:80",), {"10.0.0.1:80": InstanceInfo(
        tags=("a",))})


def test_a_well_formed_entry_seen_before_is_one_look_up() -> None:
    memo: Memo = {}
    answer: list[object] = [entry(port, tags=["a"], meta={"k": "v"}) for port in (80, 81)]
    translate(answer, memo)
    assert len(memo) == 2
    # Poison the memo: a hit is taken as it is, so a changed result proves the look-up.
    for key in memo:
        memo[key] = ("10.1.1.1:1", InstanceInfo(weight=9))
    assert translate(answer, memo) == (("10.1.1.1:1",), {"10.1.1.1:1": InstanceInfo(weight=9)})
