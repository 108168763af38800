"""The README's Thrift example runs as written (its own stand-in server included)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def section_blocks(title: str) -> list[str]:
    text = README.read_text()
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_thrift_example_runs(no_thread_leaks: None) -> None:
    (block,) = section_blocks("Thrift")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(block, {})  # noqa: S102 - the README's own example
    assert out.getvalue().splitlines() == ["apple", "not found: z"]
