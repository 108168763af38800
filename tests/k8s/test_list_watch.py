"""The pure list/watch bookkeeping: resource versions, bookmarks, 410, paging, errors."""

from __future__ import annotations

import pytest

from kitsd.core.errors import PermissionDeniedError, RegistryUnavailableError
from kitsd.sd.k8s.list_watch import (
    RESOURCE,
    Expired,
    ListWatch,
    Phase,
    WatchEvent,
    decode_event,
    slices_path,
    status_error,
    watch_timeout,
)


def listing(rv: str, items: list[object] | None = None,
            cont: str | None = None) -> dict[str, object]:
    metadata: dict[str, str] = {"resourceVersion": rv}
    if cont:
        metadata["continue"] = cont
    return {"kind": "EndpointSliceList", "metadata": metadata, "items": items or []}


def slice_object(name: str, rv: str) -> dict[str, object]:
    return {"metadata": {"name": name, "resourceVersion": rv}}


def test_list_then_watch_from_the_list_version_then_from_each_event() -> None:
    lw = ListWatch("kubernetes.io/service-name=web")
    assert lw.phase is Phase.NEED_LIST
    with pytest.raises(RuntimeError):
        lw.watch_params(300)
    assert lw.list_params() == {"labelSelector": "kubernetes.io/service-name=web", "limit": "500"}
    assert lw.page(listing("10", [slice_object("a", "9")])) == [slice_object("a", "9")]
    assert lw.phase.value == Phase.WATCHING.value
    params = lw.watch_params(321)
    assert params["resourceVersion"] == "10"
    assert params["allowWatchBookmarks"] == "true"
    assert params["watch"] == "true"
    assert params["timeoutSeconds"] == "321"
    assert lw.observe(WatchEvent("MODIFIED", slice_object("a", "12")))
    assert lw.resource_version == "12"
    assert not lw.observe(WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": "40"}}))
    assert lw.watch_params(300)["resourceVersion"] == "40"
    assert lw.bookmarks == 1


def test_pages_are_joined_and_the_version_is_the_first_pages() -> None:
    lw = ListWatch("x=y", page_size=2)
    assert lw.page(listing("10", ["s1", "s2"], cont="t1")) is None
    assert lw.list_params()["continue"] == "t1"
    assert lw.list_params()["limit"] == "2"
    assert lw.page(listing("", ["s3"])) == ["s1", "s2", "s3"]
    assert lw.resource_version == "10"


def test_an_expired_continue_token_starts_the_list_over() -> None:
    lw = ListWatch("x=y")
    assert lw.page(listing("10", ["s1"], cont="t1")) is None
    lw.page_expired()
    assert "continue" not in lw.list_params()
    assert lw.page(listing("20", ["s9"])) == ["s9"]
    assert lw.resource_version == "20"


def test_a_410_lists_again_and_says_when_to_back_off() -> None:
    lw = ListWatch("x=y")
    lw.page(listing("10"))
    lw.observe(WatchEvent("ADDED", slice_object("a", "11")))
    assert lw.gone() is False  # progress was made: list again at once
    assert lw.needs_list
    assert lw.relists == 1
    lw.page(listing("30"))
    assert lw.gone() is True  # 410 right after a list: back off first
    assert lw.relists == 2


def test_error_events_raise_expired_or_the_mapped_error() -> None:
    lw = ListWatch("x=y")
    lw.page(listing("10"))
    with pytest.raises(Expired, match="too old"):
        lw.observe(WatchEvent("ERROR", {"kind": "Status", "code": 410,
                                         "message": "too old resource version: 5 (9)"}))
    with pytest.raises(RegistryUnavailableError, match=r"HTTP 500.*etcdserver"):
        lw.observe(WatchEvent("ERROR", {"kind": "Status", "code": 500,
                                         "message": "etcdserver: request timed out"}))
    with pytest.raises(RegistryUnavailableError, match="HTTP 500"):
        lw.observe(WatchEvent("ERROR", {"kind": "Status"}))


def test_bad_list_answers_are_value_errors() -> None:
    lw = ListWatch("x=y")
    with pytest.raises(ValueError, match="no resourceVersion"):
        lw.page({"items": []})
    with pytest.raises(ValueError, match="no items"):
        lw.page({"metadata": {"resourceVersion": "1"}, "items": "x"})
    assert lw.page({"metadata": {"resourceVersion": "1"}, "items": None}) == []


def test_decode_event() -> None:
    assert decode_event(b"\n") is None
    event = decode_event(b'{"type":"ADDED","object":{"metadata":{"name":"a"}}}')
    assert event == WatchEvent("ADDED", {"metadata": {"name": "a"}})
    with pytest.raises(ValueError, match="bad JSON"):
        decode_event(b"{nope")
    with pytest.raises(ValueError, match="not a watch event"):
        decode_event(b'{"type":"SURPRISE","object":{}}')
    with pytest.raises(ValueError, match="not a watch event"):
        decode_event(b'["ADDED"]')


@pytest.mark.parametrize(("code", "kind", "words"), [
    (401, PermissionDeniedError, ["401 Unauthorized", "rejected our credentials"]),
    (403, PermissionDeniedError, ["cannot watch", RESOURCE, "403 Forbidden", "RBAC"]),
    (404, RegistryUnavailableError, ["404", "1.21"]),
    (429, RegistryUnavailableError, ["429", "throttling"]),
    (503, RegistryUnavailableError, ["HTTP 503"]),
])
def test_status_errors_name_verb_and_resource(
        code: int, kind: type[Exception], words: list[str]) -> None:
    error = status_error(code, {"message": "the server said so"}, verb="watch",
                         what=f"{RESOURCE} in namespace 'shop'", where="https://k:6443")
    assert type(error) is kind
    text = str(error)
    for word in [*words, "the server said so", "https://k:6443"]:
        assert word in text, (word, text)


def test_status_error_quotes_at_most_a_few_hundred_characters() -> None:
    error = status_error(500, "x" * 10_000, verb="list", what=RESOURCE, where="")
    assert len(str(error)) < 500
    assert "bytes)" in str(error)


def test_watch_timeouts_spread_between_once_and_twice_the_minimum() -> None:
    assert watch_timeout(0.0) == 300
    assert watch_timeout(0.999) == 599
    assert watch_timeout(0.5, 1.0) == 1
    assert slices_path("shop") == "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
    assert "need-list" in repr(ListWatch("x=y"))
