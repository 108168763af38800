"""lb.PeerRank: this client's place among its peers, following the registry."""

from __future__ import annotations

import pytest

from kitsd import lb, sd


def test_follows_the_peers() -> None:
    registry = sd.MemoryRegistry()
    me = registry.registrar("clients", "10.0.0.5:80")
    with lb.PeerRank(registry.instancer("clients"), "10.0.0.5:80") as rank:
        assert rank() == (0, 1)  # nobody listed yet: alone
        me.register()
        assert rank() == (0, 1)
        registry.registrar("clients", "10.0.0.2:80").register()
        assert rank() == (1, 2)
        registry.registrar("clients", "10.0.0.9:80").register()
        assert rank() == (1, 3)
        me.deregister()  # gone from the registry (a restart, say): counted in still
        assert rank() == (1, 3)
        assert "1 of 3" in repr(rank)


def test_drives_an_aperture() -> None:
    peers = sd.MemoryRegistry()
    for index in range(4):
        peers.registrar("clients", f"10.1.0.{index}:80").register()
    servers = [f"10.0.0.{100 + index}:80" for index in range(8)]
    source = sd.Endpointer(sd.FixedInstancer(servers), lambda instance: lambda request: instance)
    with lb.PeerRank(peers.instancer("clients"), "10.1.0.2:80") as rank:
        balancer = lb.RoundRobin(source, subset=lb.Aperture(size=2, rank=rank))
        assert {balancer.pick().instance for _ in range(20)} == set(servers[4:6])


def test_close_unsubscribes_and_bad_arguments() -> None:
    instancer = sd.FixedInstancer(["10.0.0.1:80"])
    rank = lb.PeerRank(instancer, "10.0.0.1:80")
    assert rank() == (0, 1)
    rank.close()
    rank.close()
    with pytest.raises(TypeError, match=r"^instancer"):
        lb.PeerRank(["10.0.0.1:80"], "10.0.0.1:80")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^me"):
        lb.PeerRank(instancer, 80)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid instance"):
        lb.PeerRank(instancer, "no port")
