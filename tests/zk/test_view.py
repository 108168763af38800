"""The pure ZooKeeper children view, without a server."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kitsd.core.errors import MisuseError
from kitsd.sd.zk.view import ChildrenView, check_path
from tests.test_purity import violations

ROOT = Path(__file__).resolve().parents[2]


def test_view_module_is_pure() -> None:
    assert violations(ROOT / "sd" / "zk" / "view.py") == []


def test_first_sync_reads_every_child() -> None:
    view = ChildrenView()
    assert view.needs_list
    assert not view.in_sync
    assert view.apply_children(["b", "a"]) == ["a", "b"]
    view.apply_data("a", b"10.0.0.1:80")
    assert not view.in_sync
    view.apply_data("b", b"10.0.0.2:80")
    assert view.in_sync
    assert view.instances() == ("10.0.0.1:80", "10.0.0.2:80")


def test_children_change_reads_only_new_children() -> None:
    view = ChildrenView()
    view.apply_children(["a"])
    view.apply_data("a", b"10.0.0.1:80")
    view.children_changed()
    assert view.apply_children(["a", "c"]) == ["c"]
    view.apply_data("c", b"10.0.0.3:80")
    view.children_changed()
    assert view.apply_children(["c"]) == []
    assert view.instances() == ("10.0.0.3:80",)


def test_data_change_rereads_that_child() -> None:
    view = ChildrenView()
    view.apply_children(["a", "b"])
    view.apply_data("a", b"10.0.0.1:80")
    view.apply_data("b", b"10.0.0.2:80")
    view.data_changed("b")
    view.data_changed("unknown")
    assert view.stale == {"b"}
    assert not view.needs_list
    view.apply_data("b", b"10.0.0.9:80")
    assert view.instances() == ("10.0.0.1:80", "10.0.0.9:80")


def test_reset_rereads_everything() -> None:
    view = ChildrenView()
    view.apply_children(["a"])
    view.apply_data("a", b"10.0.0.1:80")
    view.reset()
    assert view.needs_list
    assert view.apply_children(["a", "b"]) == ["a", "b"]


def test_child_vanishing_before_its_read_is_forgotten() -> None:
    view = ChildrenView()
    view.apply_children(["a", "b"])
    view.apply_data("a", b"10.0.0.1:80")
    view.apply_data("b", None, exists=False)
    assert view.in_sync
    assert view.instances() == ("10.0.0.1:80",)


def test_missing_node_is_an_empty_set() -> None:
    view = ChildrenView()
    view.apply_children(["a"])
    view.apply_data("a", b"10.0.0.1:80")
    view.children_changed()
    view.apply_missing_node()
    assert view.in_sync
    assert view.instances() == ()


def test_bad_values_are_skipped_once_with_a_short_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    view = ChildrenView(source="node '/s'")
    view.apply_children(["junk", "binary", "noport", "ok", "empty", "evil"])
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.zk.view"):
        view.apply_data("evil", b"evil\n:80")
        view.apply_data("junk", b"x" * 1_000_000)
        view.apply_data("binary", b"\xff\xfe")
        view.apply_data("noport", b"host-without-port")
        view.apply_data("empty", None)
        view.apply_data("ok", b" LOCALHOST:80 ")
        assert view.instances() == ("localhost:80",)
        assert len(caplog.records) == 5
        assert all(len(record.getMessage()) < 300 for record in caplog.records)
        assert all("\n" not in record.getMessage() for record in caplog.records)
        caplog.clear()
        view.reset()  # a re-read after a reconnect: same junk, no new warnings
        view.apply_children(["junk", "binary", "noport", "ok", "empty", "evil"])
        view.apply_data("junk", b"x" * 1_000_000)
        view.apply_data("binary", b"\xff\xfe")
        assert caplog.records == []


@pytest.mark.parametrize(
    "bad", ["", "relative/path", "/", "/a//b", "/a/./b", "/a/../b", "/a\nb", "/a\x00b"]
)
def test_bad_paths_are_refused(bad: str) -> None:
    with pytest.raises(MisuseError, match="absolute node path"):
        check_path(bad)


def test_path_type_is_checked_and_trailing_slash_dropped() -> None:
    with pytest.raises(TypeError, match="string"):
        check_path(b"/a")
    assert check_path("/services/users/") == "/services/users"
