"""The naming convention of pure modules in lb and breaker (issue 17.5), and the
purity of the balancing ones.

``X.py`` drives (holds the lock, reads the clock, runs the I/O) and ``X_policy.py``
decides: the pure module holding the rules of exactly one driver is named for it
(``peak_ewma.py`` / ``peak_ewma_policy.py``, ``retry.py`` / ``retry_policy.py``,
``breaker/driver.py`` / ``breaker/driver_policy.py``), so a directory listing says
which half is pure.  A pure module that several modules stand on is named for the
concept it models (``errors.py``, ``outlier_detection.py``; in sd ``event.py``,
``etcd/revision.py``, ``zk/view.py``, ``consul/index.py``, ``dns/srv.py``).  Every
pure module is scanned by ``tests/test_purity.py``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from tests.test_purity import PURE_MODULES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("lb", "breaker")
#: Pure modules of lb and breaker that are not one driver's half: named for a concept.
SHARED = {"lb/errors.py", "lb/outlier_detection.py",
          # settings (and their small pure rules) several drivers read (issue 21)
          "lb/slow_start.py", "lb/zones.py", "lb/health_check.py", "lb/aperture.py"}


def policies() -> list[str]:
    return sorted(path.relative_to(ROOT).as_posix() for package in PACKAGES
                  for path in (ROOT / package).glob("*_policy.py"))


def test_there_are_policies_to_check() -> None:
    assert len(policies()) >= 8


@pytest.mark.parametrize("policy", policies())
def test_each_policy_is_pure_and_has_its_driver(policy: str) -> None:
    assert policy in PURE_MODULES, f"{policy} is not scanned by tests/test_purity.py"
    driver = ROOT / policy.replace("_policy.py", ".py")
    assert driver.is_file(), f"{policy} has no driver {driver.name}"
    module = "kitsd." + policy.removesuffix(".py").replace("/", ".")
    driver_source = driver.read_text(encoding="utf-8")
    assert module in driver_source, f"{driver.name} does not use {module}"


def test_every_pure_module_of_lb_and_breaker_follows_the_convention() -> None:
    ours = {path for path in PURE_MODULES if path.split("/")[0] in PACKAGES}
    misnamed = ours - SHARED - set(policies())
    assert not misnamed, (
        f"{sorted(misnamed)}: a pure module holding the rules of one driver X.py is named "
        "X_policy.py (see this file's docstring); one shared by several goes in SHARED")
    unscanned = set(policies()) - ours
    assert not unscanned, f"{sorted(unscanned)}: add to tests/test_purity.py's PURE_MODULES"


@pytest.mark.parametrize("policy", policies())
def test_imports_nothing_that_blocks_or_reads_a_clock(policy: str) -> None:
    module = "kitsd." + policy.removesuffix(".py").replace("/", ".")
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported.isdisjoint({"threading", "asyncio", "socket", "time", "random",
                                "concurrent", "selectors"}), imported
