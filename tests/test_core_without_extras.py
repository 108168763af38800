"""The core imports without the optional registry clients installed.

Each module below is imported in a fresh interpreter where ``consul``, ``pyetcd``
and ``etcd3`` are blocked (``sys.modules[name] = None`` makes any import of them
fail), as on a machine with plain ``pip install kitsd``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BLOCKED = ["consul", "pyetcd", "etcd3"]

CORE_MODULES = [
    "kitsd.sd", "kitsd.sd.endpointer", "kitsd.sd.memory", "kitsd.sd.url", "kitsd.sd.http",
    "kitsd.lb", "kitsd.breaker", "kitsd.cli",
    # the drivers import their client libraries only when a client is built
    "kitsd.sd.etcd", "kitsd.sd.consul",
]

SCRIPT = textwrap.dedent(
    """
    import importlib
    import sys

    blocked = sys.argv[2:]
    for name in blocked:
        sys.modules[name] = None

    importlib.import_module(sys.argv[1])

    # The blocked clients were never needed (their entries are untouched).
    assert all(sys.modules[name] is None for name in blocked)
    print("imported", sys.argv[1])
    """
)


def run_blocked(module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, module, *BLOCKED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_without_registry_clients(module: str) -> None:
    result = run_blocked(module)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"imported {module}"


def test_blocking_really_blocks() -> None:
    # Guard: the same script fails for a module that does need a blocked client.
    result = run_blocked("consul")
    assert result.returncode != 0
    assert "ImportError" in result.stderr or "ModuleNotFoundError" in result.stderr


def test_static_url_works_without_registry_clients() -> None:
    code = textwrap.dedent(
        """
        import sys
        for name in ("consul", "pyetcd", "etcd3"):
            sys.modules[name] = None
        from kitsd.sd import instancer_from_url
        events = []
        instancer_from_url("static://b:2,a:1").subscribe(events.append)
        print(",".join(events[0].instances))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "a:1,b:2"
