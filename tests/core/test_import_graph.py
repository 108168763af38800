"""The import graph flows one way: core ← sd, lb, breaker ← the composition modules.

Read from the source (every ``import``, at any depth, ``TYPE_CHECKING`` blocks and
lazy imports inside functions included, and ``importlib.import_module("...")`` with a
literal), not from what a run happens to load:

* :mod:`kitsd.core` imports nothing of kitsd outside itself;
* ``breaker`` imports nothing from ``kitsd.sd``;
* ``sd``, ``lb`` and ``breaker`` import nothing of the composition layer (the
  transport, the command line, chaos, the demo, the adapters, serve, auth …, nor the
  ``kitsd`` package itself);
* the server launchers (``compose``) import nothing of kitsd outside themselves.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Where each layer's files live, and the dotted package they are imported as.
LAYERS = {
    "core": (ROOT / "kitsd" / "core", "kitsd.core"),
    "sd": (ROOT / "sd", "kitsd.sd"),
    "lb": (ROOT / "lb", "kitsd.lb"),
    "breaker": (ROOT / "breaker", "kitsd.breaker"),
    "compose": (ROOT / "compose", "kitsd.compose"),
}
#: What sits below the composition layer: anything else of kitsd is composition.
FOUNDATION = ("kitsd.core", "kitsd.sd", "kitsd.lb", "kitsd.breaker", "kitsd.compose")


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def kitsd_imports(path: Path, name: str) -> Iterator[tuple[str, int]]:
    """Every kitsd module ``path`` (module ``name``) imports, with its line."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        found: list[str] = []
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # ``from kitsd import lb`` imports kitsd.lb; ``from kitsd.lb import X`` kitsd.lb.
            found = [f"{base}.{alias.name}" for alias in node.names] if base == "kitsd" \
                else [base]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else "")
            if called in {"__import__", "import_module"} and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found = [first.value]
        line = getattr(node, "lineno", 0)
        for imported in found:
            if imported == "kitsd" or imported.startswith("kitsd."):
                yield imported, line


def imports_of_layer(layer: str) -> list[tuple[str, str]]:
    """``(where, imported)`` for every kitsd import in ``layer``'s files."""
    root, package = LAYERS[layer]
    result = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root, package)
        for imported, line in kitsd_imports(path, name):
            result.append((f"{path.relative_to(ROOT)}:{line}", imported))
    return result


def within(imported: str, *packages: str) -> bool:
    return any(imported == p or imported.startswith(p + ".") for p in packages)


def test_core_imports_only_itself() -> None:
    assert [(w, i) for w, i in imports_of_layer("core") if not within(i, "kitsd.core")] == []


def test_breaker_does_not_stand_on_sd() -> None:
    assert [(w, i) for w, i in imports_of_layer("breaker") if within(i, "kitsd.sd")] == []


@pytest.mark.parametrize("layer", ["sd", "lb", "breaker"])
def test_the_foundation_imports_nothing_of_the_composition_layer(layer: str) -> None:
    upward = [(w, i) for w, i in imports_of_layer(layer) if not within(i, *FOUNDATION)]
    assert upward == []


def test_server_launchers_import_only_themselves() -> None:
    assert [(w, i) for w, i in imports_of_layer("compose")
            if not within(i, "kitsd.compose")] == []


def test_every_layer_is_scanned() -> None:
    for layer in LAYERS:
        assert imports_of_layer(layer), f"no kitsd import found in {layer}: wrong path?"


def test_the_scan_sees_every_kind_of_import(tmp_path: Path) -> None:
    # Guard against a checker that silently passes everything.
    package = tmp_path / "pkg"
    package.mkdir()
    sample = package / "mod.py"
    sample.write_text(
        "import kitsd\n"
        "from kitsd import transport\n"
        "from kitsd.cli import main\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from kitsd.otel import OtelObserver\n"
        "def lazy():\n"
        "    import kitsd.prometheus\n"
        "    importlib.import_module('kitsd.chaos')\n"
        "from . import sibling\n"
        "from .. import parent\n"
    )
    found = sorted(imported for imported, _ in kitsd_imports(sample, "kitsd.sd.mod"))
    assert found == ["kitsd", "kitsd.chaos", "kitsd.cli", "kitsd.otel", "kitsd.parent",
                     "kitsd.prometheus", "kitsd.sd", "kitsd.transport"]
    assert [i for i in found if not within(i, *FOUNDATION)] == [
        "kitsd", "kitsd.chaos", "kitsd.cli", "kitsd.otel", "kitsd.parent", "kitsd.prometheus",
        "kitsd.transport"]
