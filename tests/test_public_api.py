"""Every name the contract (API.md) lists is importable; each package's ``__all__`` is complete."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import TypeVar

import pytest

# The contract, as written in ../shared/API.md; the test below re-reads it when it is there.
CONTRACT = {
    "kitsd.sd": ["Event", "Instancer", "FixedInstancer", "MemoryRegistry", "Registrar",
    "Endpointer",
           "chain", "instancer_from_url"],
    "kitsd.sd.etcd": ["EtcdInstancer", "EtcdRegistrar"],
    "kitsd.sd.consul": ["ConsulInstancer", "ConsulRegistrar"],
    "kitsd.sd.http": ["factory", "async_factory"],
    "kitsd.lb": ["Balancer", "RoundRobin", "Random", "NoEndpointsError", "retry", "retry_async",
           "RetryError", "RetryTimeout", "remaining"],
    "kitsd.breaker": ["circuit_breaker"],
    "kitsd.serve": ["lifespan", "asgi"],
}

# Names the contract already lists for features still open in the tracker.  Each must be
# *absent* today: when one is built, this test fails until it moves out of this table,
# so the table cannot silently outlive the feature.
PLANNED: dict[tuple[str, str], str] = {
}
MODULES = {"etcd", "consul", "http", "grpc", "dns", "zk", "k8s", "thrift"}

API_MD = Path(__file__).resolve().parents[2] / "shared" / "API.md"


def _names_in_api_md(text: str) -> set[tuple[str, str]]:
    """(module, name) pairs written as `module.Name` in the contract's code spans."""
    found = set()
    for span in re.findall(r"`([^`]+)`", text):
        match = re.match(r"^((?:sd|lb|breaker)(?:\.(?:etcd|consul|http))?)\.([A-Za-z_]\w*)", span)
        if match and match.group(2) != "X":  # "`sd.X` below means `kitsd.sd.X`"
            found.add((f"kitsd.{match.group(1)}", match.group(2)))
    return found


@pytest.mark.parametrize(("module", "name"),
                         [(m, n) for m, names in CONTRACT.items() for n in names])
def test_contract_name_is_exported(module: str, name: str) -> None:
    imported = importlib.import_module(module)
    assert hasattr(imported, name), f"{module}.{name} missing"
    assert name in imported.__all__, f"{module}.{name} not in __all__"


def test_contract_file_names_are_all_covered() -> None:
    if not API_MD.exists():
        pytest.skip(f"{API_MD} not beside the repo: the CONTRACT table above still runs")
    pairs = _names_in_api_md(API_MD.read_text())
    assert pairs, "parsed no names from API.md"
    for module, name in sorted(pairs):
        if name in MODULES:  # a module path such as `sd.http`
            if (module, name) in PLANNED:
                with pytest.raises(ModuleNotFoundError):
                    importlib.import_module(f"{module}.{name}")
                continue
            importlib.import_module(f"{module}.{name}")
            continue
        imported = importlib.import_module(module)
        if (module, name) in PLANNED:
            assert not hasattr(imported, name), \
                f"{module}.{name} exists now: take it out of PLANNED ({PLANNED[module, name]})"
            continue
        assert hasattr(imported, name), f"API.md names {module}.{name}, which is missing"


@pytest.mark.parametrize("package", ["kitsd.sd", "kitsd.lb", "kitsd.breaker", "kitsd.sd.http",
                                     "kitsd.serve", "kitsd.sd.thrift", "kitsd.auth"])
def test_all_is_complete_and_exists(package: str) -> None:
    module = importlib.import_module(package)
    exported = set(module.__all__)
    for name in exported:
        assert hasattr(module, name), f"{package}.__all__ lists missing {name}"
    def defined_here(value: object) -> bool:
        origin = getattr(value, "__module__", None)
        return isinstance(origin, str) and (origin == package or origin.startswith(package + "."))

    public = {n for n, v in vars(module).items()
              if not n.startswith("_") and not inspect.ismodule(v)
              and not isinstance(v, TypeVar) and defined_here(v)}
    assert public <= exported, f"{package} defines public names missing from __all__: " \
        f"{sorted(public - exported)}"


def test_error_messages() -> None:
    from kitsd import lb
    assert str(lb.NoEndpointsError()) == "no endpoints available"
    assert issubclass(lb.RetryTimeout, TimeoutError)
