"""The pure modules of issue 9 import nothing that blocks, locks or reads a clock
(tests/test_purity.py scans the older ones; these are listed here until it does)."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

PURE = ["kitsd.lb.budget", "kitsd.lb.ewma", "kitsd.lb.hedge", "kitsd.lb.ring", "kitsd.lb.schedule",
        "kitsd.lb.outlier_detection",
        "kitsd.lb.ejection"]


@pytest.mark.parametrize("name", PURE)
def test_imports_nothing_that_blocks_or_reads_a_clock(name: str) -> None:
    tree = ast.parse(inspect.getsource(importlib.import_module(name)))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported.isdisjoint({"threading", "asyncio", "socket", "time", "random",
                                "concurrent", "selectors"}), imported
