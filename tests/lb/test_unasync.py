"""``.ci/unasync.py``: the sync twins are what their asyncio sources generate (issue
17.3), and the rewrite's rules."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "unasync.py"


@pytest.fixture(scope="module")
def unasync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kitsd_ci_unasync", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_twin_is_up_to_date() -> None:
    """What CI runs: a hand edit of a generated file, or a source edited without
    regenerating, fails here."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr


def test_every_pair_names_existing_files_and_says_it_is_generated(unasync: ModuleType) -> None:
    assert unasync.PAIRS
    for source, target, _ in unasync.PAIRS:
        assert (ROOT / source).is_file()
        text = (ROOT / target).read_text(encoding="utf-8")
        assert text.startswith(f"# Generated from {source} by .ci/unasync.py: do not edit.")


def test_check_fails_on_a_hand_edit_and_names_the_file(
    unasync: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "source.py").write_text("async def f():\n    await g()\n")
    monkeypatch.setattr(unasync, "ROOT", tmp_path)
    monkeypatch.setattr(unasync, "PAIRS", [("a/source.py", "b/twin.py", {})])
    assert unasync.main(["--check"]) == 1  # missing
    assert "b/twin.py" in capsys.readouterr().err
    assert unasync.main([]) == 0  # writes it
    twin = tmp_path / "b" / "twin.py"
    assert twin.read_text().endswith("def f():\n    g()\n")
    assert unasync.main(["--check"]) == 0
    twin.write_text(twin.read_text() + "# a hand edit\n")
    assert unasync.main(["--check"]) == 1
    error = capsys.readouterr().err
    assert "b/twin.py" in error
    assert "+# a hand edit" not in error  # the diff shows what the source generates
    assert "-# a hand edit" in error


def test_a_missing_source_is_named(unasync: ModuleType, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unasync, "ROOT", tmp_path)
    monkeypatch.setattr(unasync, "PAIRS", [("gone.py", "twin.py", {})])
    with pytest.raises(SystemExit, match=r"gone\.py"):
        unasync.main(["--check"])


def rewrite(unasync: ModuleType, source: str, **names: str) -> str:
    return str(unasync.unasync(textwrap.dedent(source), {**unasync.NAMES, **names}))


def test_keywords(unasync: ModuleType) -> None:
    assert rewrite(unasync, """\
        async def f(x):
            async with lock:
                async for item in x:
                    await   item.go()
            return await (x)
        """) == textwrap.dedent("""\
        def f(x):
            with lock:
                for item in x:
                    item.go()
            return (x)
        """)


def test_names_everywhere_they_stand_as_a_whole_token(unasync: ModuleType) -> None:
    assert rewrite(unasync, """\
        from kitsd.lb._async.retry import retrying_async
        from kitsd.lb._concurrency import AsyncCallDeadlines, async_sleep
        x = AsyncCallDeadlines(timeout=1)
        await x.aclose()
        f(callback=retrying_async, aclose_later=1, my_aclose=2, aclosed=3)
        """) == textwrap.dedent("""\
        from kitsd.lb._sync.retry import retrying
        from kitsd.lb._concurrency import CallDeadlines, sleep
        x = CallDeadlines(timeout=1)
        x.close()
        f(callback=retrying, aclose_later=1, my_aclose=2, aclosed=3)
        """)


def test_strings_and_comments_by_whole_words(unasync: ModuleType) -> None:
    assert rewrite(unasync, '''\
        def f():
            """Uses AsyncCallDeadlines and x.aclose(); async and await are prose here."""
            return "AsyncRaceX aclose"  # AsyncRace, then aclose
        ''') == textwrap.dedent('''\
        def f():
            """Uses CallDeadlines and x.close(); async and await are prose here."""
            return "AsyncRaceX close"  # Race, then close
        ''')


def test_a_pair_can_bring_its_own_names(unasync: ModuleType) -> None:
    assert rewrite(unasync, "AsyncThing()\n", AsyncThing="Thing") == "Thing()\n"
    assert rewrite(unasync, "AsyncThing()\n") == "AsyncThing()\n"


def test_async_as_an_ordinary_name_is_kept(unasync: ModuleType) -> None:
    assert rewrite(unasync, "is_async = kind.async_\n") == "is_async = kind.async_\n"
