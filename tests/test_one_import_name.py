"""kitsd installs one import name: no code in the repository imports ``sd``, ``lb``,
``breaker`` or ``compose`` as top-level modules (names other distributions own:
``docker-compose``'s ``compose``, the ``lb`` and ``breaker`` packages on the index).

The scan reads every Python file of the repository with ``ast`` (imports, and module
names given to ``importlib.import_module`` / ``python -m``), so a stray ``import sd``
fails here instead of on a user's machine where another ``sd`` is installed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("sd", "lb", "breaker", "compose")
SKIP = {".git", "build", "dist", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache",
        ".pytest_cache"}


def python_files() -> list[Path]:
    """Every Python file at its real path (the kitsd/sd... symlinks are not followed twice)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if SKIP & set(relative.parts) or any(p.endswith(".egg-info") for p in relative.parts):
            continue
        if path.resolve() != path.absolute():  # reached through a symlink: scanned at its target
            continue
        found.append(path)
    return found


def _forbidden(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in FORBIDDEN


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [(line, f"import {a.name}") for a in node.names if _forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _forbidden(node.module):
            found.append((line, f"from {node.module} import ..."))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name)
              and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
              in ("import_module", "__import__") and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and _forbidden(node.args[0].value)):
            found.append((line, f"import_module({node.args[0].value!r})"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # "python -m sd.x" or ["-m", "compose.x"] spelled in a string
            found += [(line, f"-m {m}") for m in re.findall(r"-m\s+([\w.]+)", node.value)
                      if _forbidden(m)]
    return [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in sorted(found)]


def test_the_scan_sees_the_repository() -> None:
    files = {str(p.relative_to(ROOT)) for p in python_files()}
    # the real directories are scanned, once each
    assert {"sd/endpointer.py", "lb/__init__.py", "breaker/__init__.py",
            "compose/process.py", "kitsd/cli.py", "tests/conftest.py"} <= files
    assert not any(f.startswith(("kitsd/sd/", "kitsd/lb/", "kitsd/compose/")) for f in files)


def test_the_scan_catches_each_form(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    flag = "-m"  # not spelled "-m sd.x" here, or this file would fail the scan
    bad.write_text("import sd\nimport lb.retry as r\nfrom compose.etcd import X\n"
                   "from breaker import circuit_breaker\nimport importlib\n"
                   f"importlib.import_module('sd.consul')\nCMD = ['python', '{flag} sd.x']\n"
                   "from kitsd import sd\nfrom . import lb\nimport kitsd.compose\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = violations(bad)
    finally:
        ROOT = saved
    assert len(found) == 6, found


def test_no_code_imports_a_top_level_sd_lb_breaker_or_compose() -> None:
    found = [v for path in python_files() for v in violations(path)]
    assert found == [], "use `from kitsd import sd, lb, breaker` / kitsd.compose:\n" + \
        "\n".join(found)
