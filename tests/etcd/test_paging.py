"""Tests for sd.etcd.paging (pure): paged prefix reads at one revision, past oversized keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from kitsd.sd.etcd.paging import PagedRead, PageRequest, prefix_end
from kitsd.sd.etcd.revision import KeyValue
from tests.test_purity import FORBIDDEN, imports_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["sd/etcd/paging.py", "sd/etcd/revision.py",
                                  "sd/etcd/errors.py"])
def test_pure_modules_import_no_io(path: str) -> None:
    bad = [(name, line) for name, line in imports_of(ROOT / path)
           if name.split(".")[0] in FORBIDDEN]
    assert bad == [], f"{path} imports {bad}"


def test_prefix_end() -> None:
    assert prefix_end(b"/svc/") == b"/svc0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"") == b"\0"


class Store:
    """A sorted key space that answers PageRequests as etcd would, refusing answers over
    ``max_bytes`` (as grpcio refuses messages over 4 MiB)."""

    def __init__(self, values: dict[bytes, bytes], max_bytes: int, revision: int = 7) -> None:
        self.values = dict(sorted(values.items()))
        self.max_bytes = max_bytes
        self.revision = revision
        self.asked: list[PageRequest] = []

    def answer(self, request: PageRequest) -> tuple[list[KeyValue], int, bool] | None:
        self.asked.append(request)
        keys = [k for k in self.values if request.after is None or k > request.after]
        chosen = keys[: request.limit]
        kvs = [KeyValue(k, b"" if request.keys_only else self.values[k], 1) for k in chosen]
        if sum(len(kv.key) + len(kv.value) for kv in kvs) > self.max_bytes:
            return None
        return kvs, self.revision, len(keys) > len(chosen)


def run(read: PagedRead, store: Store) -> None:
    while (request := read.next_request()) is not None:
        answer = store.answer(request)
        if answer is None:
            read.too_large()
        else:
            read.page(*answer)
        store.revision += 1  # the store moves on; pages must stay at the first revision
        assert read.requests < 1000, "the read does not converge"


def test_reads_every_page_at_the_first_pages_revision() -> None:
    store = Store({f"k{i:03d}".encode(): b"10.0.0.1:80" for i in range(25)}, 10**9)
    read = PagedRead(page_size=10)
    run(read, store)
    assert [kv.key for kv in read.kvs] == sorted(store.values)
    assert read.revision == 7
    assert [r.revision for r in store.asked] == [0, 7, 7]
    assert [r.after for r in store.asked] == [None, b"k009", b"k019"]
    assert read.skipped == []


def test_too_large_pages_shrink_and_oversized_keys_are_skipped() -> None:
    values = {f"k{i:02d}".encode(): b"1.2.3.4:5" for i in range(20)}
    for junk in (b"k03", b"k04", b"k11", b"k12", b"k19"):
        values[junk] = b"x" * 1000  # too large to receive even alone
    store = Store(values, max_bytes=500)
    read = PagedRead(page_size=16)
    run(read, store)
    assert read.skipped == [b"k03", b"k04", b"k11", b"k12", b"k19"]
    assert [kv.key for kv in read.kvs] == [k for k in sorted(values) if k not in read.skipped]
    assert read.done
    # Until a page fits, the read is "now" (0); from then on every page is at its revision.
    revisions = [r.revision for r in store.asked]
    first = next(index for index, revision in enumerate(revisions) if revision)
    assert set(revisions[:first]) == {0}
    assert set(revisions[first:]) == {read.revision}
    assert any(r.keys_only for r in store.asked)


def test_a_prefix_over_the_limit_in_total_is_read_in_smaller_pages() -> None:
    store = Store({f"k{i:02d}".encode(): b"v" * 90 for i in range(40)}, max_bytes=1000)
    read = PagedRead(page_size=40)
    run(read, store)
    assert len(read.kvs) == 40
    assert read.skipped == []


def test_empty_prefix() -> None:
    read = PagedRead()
    run(read, Store({}, 100))
    assert read.kvs == []
    assert read.revision == 7


def test_bad_page_size() -> None:
    with pytest.raises(ValueError, match="page_size"):
        PagedRead(page_size=0)
