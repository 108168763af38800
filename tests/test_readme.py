"""The README's quickstarts run as written (against a local instance instead of :8080)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from kitsd.demo_server import DemoInstance

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_quickstarts_run(no_thread_leaks: None) -> None:
    blocks = [block for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
              if "MemoryRegistry" in block or "async def main" in block]
    assert len(blocks) == 2  # the sync and the asyncio quickstart
    server = DemoInstance()
    try:
        namespace: dict[str, object] = {}
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            for block in blocks:
                exec(block.replace("127.0.0.1:8080", server.instance), namespace)  # noqa: S102
    finally:
        server.kill()
    printed = out.getvalue().splitlines()
    assert len(printed) == 2
    for line in printed:
        assert server.instance in line
        assert "id=42" in line
    assert server.served == 2
