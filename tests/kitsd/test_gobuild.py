"""kitsd.compose.gobuild: the Go test servers and bench peers are built once, cached,
and a failed build says why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kitsd.compose import gobuild

HELLO = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello from %s") }\n'


def _program(tmp_path: Path, word: str) -> Path:
    source = tmp_path / word / "main.go"
    source.parent.mkdir()
    source.write_text(HELLO % word)
    return source


def test_builds_once_and_reuses_the_cached_binary(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KITSD_CACHE", str(tmp_path / "cache"))
    source = _program(tmp_path, "one")
    built = gobuild.cached_binary("hello", sources=[source], requires={},
                                  module="kitsd.invalid/hello", describe="hello")
    assert built.parent.parent == tmp_path / "cache"
    assert subprocess.run([built], capture_output=True, text=True,
                          check=True).stdout == "hello from one\n"
    stamp = built.stat().st_mtime_ns
    again = gobuild.cached_binary("hello", sources=[source], requires={},
                                  module="kitsd.invalid/hello", describe="hello")
    assert again == built
    assert again.stat().st_mtime_ns == stamp
    assert not list(built.parent.glob("*.tmp"))


def test_another_source_is_another_binary(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KITSD_CACHE", str(tmp_path / "cache"))
    first = gobuild.cached_binary("hello", sources=[_program(tmp_path, "one")], requires={},
                                  module="kitsd.invalid/hello", describe="hello")
    second = gobuild.cached_binary("hello", sources=[_program(tmp_path, "two")], requires={},
                                   module="kitsd.invalid/hello", describe="hello")
    assert first != second
    assert subprocess.run([second], capture_output=True, text=True,
                          check=True).stdout == "hello from two\n"


def test_a_failed_build_says_why_and_leaves_nothing(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KITSD_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "main.go"
    source.write_text("package main\n\nfunc main() { undefinedThing() }\n")
    with pytest.raises(gobuild.GoBuildError, match="undefined: undefinedThing"):
        gobuild.cached_binary("broken", sources=[source], requires={},
                              module="kitsd.invalid/broken", describe="broken")
    assert not [path for path in (tmp_path / "cache").rglob("*") if path.is_file()
                and path.name != ".lock"]


def test_without_go_the_error_says_so(monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(gobuild, "_GO_FALLBACK", tmp_path / "no-go")
    with pytest.raises(gobuild.GoBuildError, match="go is not installed"):
        gobuild.go_toolchain()
