"""kitsd.serve needs no server or framework library: it imports, and its options check,
with uvicorn, starlette and gunicorn blocked (as after a plain ``pip install kitsd``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    for name in ("uvicorn", "starlette", "gunicorn", "consul", "pyetcd", "kazoo"):
        sys.modules[name] = None
    import kitsd.serve
    from kitsd import sd

    registry = sd.MemoryRegistry()
    app = kitsd.serve.asgi(lambda scope, receive, send: None,
                           registry.registrar("users", "127.0.0.1:8000"), drain=5)
    kitsd.serve.lifespan(registry.registrar("users", "127.0.0.1:8000"))
    kitsd.serve.gunicorn_hooks(lambda: registry.registrar("users", "127.0.0.1:8000"))
    assert all(sys.modules[name] is None for name in ("uvicorn", "starlette", "gunicorn"))
    print("ok")
    """
)


def test_serving_needs_no_server_library() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
