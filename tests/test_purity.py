"""The pure core imports nothing that does I/O, threads, or time.

Each module in ``PURE_MODULES`` (paths relative to the repository root) must exist,
and neither it nor any first-party module it imports (followed file by file, not
through package ``__init__`` files) may import one of ``FORBIDDEN``.  To put a new
pure module under this check, add its path to ``PURE_MODULES``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PURE_MODULES = [
    "sd/event.py",
    "sd/instance.py",
    "sd/endpoint_cache.py",
    "sd/endpoint_set.py",
    "sd/instance_info.py",
    "sd/instance_value.py",
    "sd/backoff.py",
    "kitsd/core/errors.py",
    "kitsd/core/middleware.py",
    "kitsd/core/redact.py",
    "kitsd/core/observe/outcomes.py",
    "kitsd/core/observe/observations.py",
    "kitsd/core/validate.py",
    "sd/etcd/revision.py",
    "sd/etcd/paging.py",
    "sd/dns/srv.py",
    "sd/zk/view.py",
    "sd/consul/index.py",
    "sd/consul/health.py",
    "sd/consul/decode.py",
    "sd/k8s/slices.py",
    "sd/k8s/list_watch.py",
    "lb/pool_policy.py",
    "lb/outlier_detection.py",
    "lb/retry_budget_policy.py",
    "lb/peak_ewma_policy.py",
    "lb/hedging_policy.py",
    "lb/consistent_hash_policy.py",
    "lb/weighted_policy.py",
    "lb/retry_policy.py",
    "lb/slow_start.py",
    "lb/zones.py",
    "lb/health_check.py",
    "lb/health_checkers_policy.py",
    "lb/concurrency_limit_policy.py",
    "lb/aperture.py",
    "lb/errors.py",
    "breaker/driver_policy.py",
    "kitsd/transport/_policy.py",
    "kitsd/transport/_services.py",
    "sd/http/_attempt.py",
    "kitsd/serve/_drain.py",
    "kitsd/serve/_health.py",
    "sd/thrift/_codec.py",
    "sd/thrift/_errors.py",
    "sd/thrift/_options.py",
    "sd/thrift/_pool.py",
    "kitsd/auth/_token.py",
    "kitsd/auth/_exchange.py",
]

FORBIDDEN = frozenset(
    {"threading", "asyncio", "socket", "time", "subprocess", "selectors", "concurrent"}
)

FIRST_PARTY = frozenset({"sd", "lb", "breaker", "kitsd"})


def module_path(dotted: str) -> Path | None:
    """The file of first-party module ``dotted`` (a package's ``__init__.py``), if any."""
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def package_of(path: Path) -> list[str]:
    """The dotted package a file belongs to (for resolving relative imports)."""
    return list(path.relative_to(ROOT).parent.parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Every module name ``path`` imports (absolute, dotted), with its line number.

    ``from x import y`` yields both ``x`` and ``x.y`` (``y`` may be a submodule);
    ``__import__("x")`` and ``importlib.import_module("x")`` with a literal count too.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = package_of(path)
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.append((base, node.lineno))
            found.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else ""
            )
            if name in {"__import__", "import_module"} and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.append((first.value, node.lineno))
    return [(name, line) for name, line in found if name]


def violations(start: Path) -> list[str]:
    """Forbidden imports in ``start`` and the first-party modules it reaches."""
    problems: list[str] = []
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name, line in imports_of(path):
            top = name.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}"
            if top in FORBIDDEN:
                problems.append(f"{where} imports {name}")
            elif top in FIRST_PARTY:
                target = module_path(name)
                # Follow modules, not package __init__ files: importing ``sd.event``
                # runs ``sd/__init__.py`` at run time, but that is not this module's logic.
                if target is not None and target.name != "__init__.py":
                    todo.append(target)
    return problems


@pytest.mark.parametrize("relative", PURE_MODULES)
def test_pure_module_exists(relative: str) -> None:
    assert (ROOT / relative).is_file(), f"{relative} is listed as pure but does not exist"


@pytest.mark.parametrize("relative", PURE_MODULES)
def test_pure_module_imports_nothing_forbidden(relative: str) -> None:
    path = ROOT / relative
    assert path.is_file(), f"{relative} is listed as pure but does not exist"
    assert violations(path) == []


def test_the_checker_catches_forbidden_imports(tmp_path: Path) -> None:
    # Guard against a checker that silently passes everything.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "import time\n"
        "from concurrent.futures import Future\n"
        "import importlib\n"
        "def f():\n"
        "    import threading\n"
        "    importlib.import_module('socket')\n"
        "    __import__('asyncio.events')\n",
        encoding="utf-8",
    )
    names = {name.split(".")[0] for name, _ in imports_of(sample)}
    assert FORBIDDEN & names == {"time", "concurrent", "threading", "socket", "asyncio"}
    assert {"os", "importlib"} <= names


def test_the_checker_follows_first_party_imports() -> None:
    # sd.endpointer reaches threading directly; a module importing it is impure too.
    assert violations(ROOT / "sd" / "endpointer.py") != []


def test_every_pure_module_of_the_core_is_listed() -> None:
    # The core is small and shared by every layer: a module of it that imports nothing
    # forbidden is held to that by the scan, so a later change cannot quietly add I/O.
    core = ROOT / "kitsd" / "core"
    unlisted = [
        str(path.relative_to(ROOT)) for path in sorted(core.rglob("*.py"))
        if path.name != "__init__.py" and not violations(path)
        and str(path.relative_to(ROOT)) not in PURE_MODULES
    ]
    assert unlisted == []
