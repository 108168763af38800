"""lb.aperture: deterministic subsetting (pure)."""

from __future__ import annotations

from collections import Counter

import pytest

from kitsd.core.errors import MisuseError, WrongTypeError
from kitsd.lb.aperture import Aperture, aperture_width, subset


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"size": 0, "client": 0, "clients": 1}, "size"),
    ({"size": 2.0, "client": 0, "clients": 1}, "size"),
    ({"client": 3, "clients": 3}, "client"),
    ({"client": -1, "clients": 3}, "client"),
    ({"client": 0, "clients": 0}, "clients"),
    ({"client": "0", "clients": 3}, "client"),
    ({"rank": 5}, "rank"),
])
def test_bad_settings_name_the_argument(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises((MisuseError, WrongTypeError)) as caught:
        Aperture(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(name)


def test_a_position_is_required_once() -> None:
    with pytest.raises(MisuseError, match="client= and clients=, or rank="):
        Aperture(size=3)
    with pytest.raises(MisuseError, match="client= and clients=, or rank="):
        Aperture(client=1)
    with pytest.raises(MisuseError, match="not both"):
        Aperture(client=0, clients=2, rank=lambda: (0, 2))


def test_coordinates() -> None:
    assert Aperture(client=2, clients=5).coordinates() == (2, 5)
    assert Aperture(rank=lambda: (1, 4)).coordinates() == (1, 4)
    for bad in ((4, 4), (-1, 2), (0,), "0,1", (True, 2)):
        with pytest.raises(MisuseError, match=r"rank\(\)"):
            Aperture(rank=lambda bad=bad: bad).coordinates()  # type: ignore[misc]


def connections(clients: int, servers: int, size: int) -> Counter[int]:
    counts: Counter[int] = Counter()
    for client in range(clients):
        for server, _ in subset(client, clients, servers, size):
            counts[server] += 1
    return counts


def loads(clients: int, servers: int, size: int) -> list[float]:
    """Each instance's share of all calls when every client sends the same amount,
    spread over its subset by weight."""
    load = [0.0] * servers
    for client in range(clients):
        chosen = subset(client, clients, servers, size)
        total = sum(weight for _, weight in chosen)
        for server, weight in chosen:
            load[server] += weight / total / clients
    return load


def test_the_issue_case_30_clients_100_instances_aperture_10() -> None:
    counts = connections(30, 100, 10)
    assert len(counts) == 100  # every instance has clients
    assert max(counts.values()) / min(counts.values()) <= 1.5
    assert set(counts.values()) == {3, 4}
    spread = loads(30, 100, 10)
    assert max(spread) / min(spread) == pytest.approx(1.0)
    assert all(10 <= len(subset(client, 30, 100, 10)) <= 11 for client in range(30))


@pytest.mark.parametrize(("clients", "servers", "size"), [
    (1, 10, 3), (3, 10, 3), (7, 100, 5), (30, 100, 10), (100, 30, 2), (200, 1000, 20),
    (5, 5, 2), (13, 17, 4),
])
def test_even_for_any_counts(clients: int, servers: int, size: int) -> None:
    counts = connections(clients, servers, size)
    assert len(counts) == servers
    assert max(counts.values()) - min(counts.values()) <= 1
    spread = loads(clients, servers, size)
    assert max(spread) / min(spread) == pytest.approx(1.0, abs=1e-9)
    for client in range(clients):
        chosen = subset(client, clients, servers, size)
        assert all(0.0 < weight <= 1.0 for _, weight in chosen)
        assert len({server for server, _ in chosen}) == len(chosen)
        width = aperture_width(clients, servers, size) if size < servers else 1.0
        assert sum(weight for _, weight in chosen) == pytest.approx(width * servers)
        # about `size`: within half a client slice of it
        assert abs(width * servers - min(size, servers)) <= servers / clients / 2 + 1e-9 or (
            width * clients == 1)


def test_the_width_covers_whole_client_slices() -> None:
    assert aperture_width(30, 100, 10) == pytest.approx(0.1)
    assert aperture_width(100, 30, 2) == pytest.approx(0.07)  # 6.67 slices -> 7
    assert aperture_width(31, 100, 10) == pytest.approx(3 / 31)  # 3.1 slices -> 3
    assert aperture_width(3, 100, 10) == pytest.approx(1 / 3)  # at least one slice
    assert aperture_width(4, 10, 20) == 1.0


def test_small_sets_are_used_whole() -> None:
    assert subset(0, 10, 4, 10) == tuple((server, 1.0) for server in range(4))
    assert subset(3, 4, 4, 4) == tuple((server, 1.0) for server in range(4))
    assert subset(0, 1, 10, 3) == tuple((server, 1.0) for server in range(10))  # width 1/C
    assert subset(0, 5, 0, 3) == ()


def test_a_range_wraps_around_the_ring() -> None:
    chosen = subset(29, 30, 100, 10)
    assert [server for server, _ in chosen] == [96, 97, 98, 99, 0, 1, 2, 3, 4, 5, 6]
    assert chosen[0][1] == pytest.approx(1 / 3)
    assert chosen[-1][1] == pytest.approx(2 / 3)


def test_a_client_joining_moves_little() -> None:
    moved = []
    for client in range(30):
        before = {server for server, _ in subset(client, 30, 100, 10)}
        after = {server for server, _ in subset(client, 31, 100, 10)}
        moved.append(len(before - after))
    # Offsets shift by at most 1/31 of the ring = 3.2 instances; on average half that.
    assert max(moved) <= 4
    assert sum(moved) / len(moved) <= 2.0


def test_an_instance_leaving_keeps_most_of_each_subset() -> None:
    # Ranks shift when an instance leaves, so the ring moves a little under every
    # client (the price of an even spread; bench/bench_subsetting.py reports it).
    names = [f"10.0.0.{index}:80" for index in range(100)]
    new: list[int] = []
    for gone in range(100):
        after_names = names[:gone] + names[gone + 1:]
        for client in range(30):
            before = {names[server] for server, _ in subset(client, 30, 100, 10)}
            after = {after_names[server] for server, _ in subset(client, 30, 99, 10)}
            new.append(len(after - before))
            assert len(before & after) >= len(before) // 2
    assert sum(new) / len(new) <= 4.0
