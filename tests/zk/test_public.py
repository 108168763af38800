"""The ZooKeeper driver's public surface: API.md's names, and complete ``__all__`` lists."""

from __future__ import annotations

import importlib
import inspect

import pytest

from kitsd import sd

MODULES = [
    "kitsd.sd.zk", "kitsd.sd.zk.view", "kitsd.sd.zk.client", "kitsd.sd.zk.instancer",
    "kitsd.sd.zk.registrar", "kitsd.sd.zk.url"]


def test_contract_names() -> None:
    assert "ZKInstancer" in sd.zk.__all__
    assert "ZKRegistrar" in sd.zk.__all__


@pytest.mark.parametrize("name", MODULES)
def test_all_is_complete(name: str) -> None:
    module = importlib.import_module(name)
    for exported in module.__all__:
        assert hasattr(module, exported)
    public = {n for n, v in vars(module).items() if not n.startswith("_")
              and (inspect.isclass(v) or inspect.isfunction(v))
              and getattr(v, "__module__", "").startswith(name)}
    assert public <= set(module.__all__)
