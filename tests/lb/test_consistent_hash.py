"""lb.ConsistentHash: same key, same instance; minimal remapping; retries walk the ring
(issue 9.3)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from kitsd import lb, sd
from kitsd.lb.consistent_hash_policy import Ring, key_hash
from tests.lb.sources import WithInfo, noop
from tests.lb.test_retry import Driver, Static


def by_key(request: Any) -> str:
    return str(request["user"])


def names(n: int) -> list[str]:
    return [f"10.0.{i // 256}.{i % 256}:80" for i in range(n)]


def owners(balancer: lb.ConsistentHash, keys: range) -> dict[int, str]:
    return {k: balancer.pick_for({"user": k}).instance for k in keys}


def test_same_key_same_instance() -> None:
    with sd.Endpointer(sd.FixedInstancer(names(5)), noop) as endpointer:
        balancer = lb.ConsistentHash(endpointer, by_key)
        first = owners(balancer, range(1000))
        assert owners(balancer, range(1000)) == first
        assert len(set(first.values())) == 5


@pytest.mark.parametrize("n", [5, 10, 50])
def test_only_the_leavers_keys_move(n: int) -> None:
    keys = range(20_000)
    registry = sd.MemoryRegistry()
    regs = {name: registry.registrar("s", name) for name in names(n)}
    for reg in regs.values():
        reg.register()
    with sd.Endpointer(registry.instancer("s"), noop) as endpointer:
        balancer = lb.ConsistentHash(endpointer, by_key)
        before = owners(balancer, keys)
        leaver = names(n)[n // 2]
        regs[leaver].deregister()
        after = owners(balancer, keys)
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == leaver for k in moved)  # only its keys moved
    assert leaver not in after.values()
    assert len(moved) / len(keys) <= 1 / n + 0.02


def test_shares_are_even_enough() -> None:
    with sd.Endpointer(sd.FixedInstancer(names(10)), noop) as endpointer:
        balancer = lb.ConsistentHash(endpointer, by_key)
        counts = Counter(owners(balancer, range(50_000)).values())
    assert max(counts.values()) < 1.5 * 5000
    assert min(counts.values()) > 0.5 * 5000


def test_exclude_walks_to_the_next_distinct_instance_on_the_ring() -> None:
    instances = names(6)
    with sd.Endpointer(sd.FixedInstancer(instances), noop) as endpointer:
        balancer = lb.ConsistentHash(endpointer, by_key)
        request = {"user": 42}
        ring = Ring(tuple(instances))
        order = [instances[i] for i in ring.walk(key_hash("42"))]
        assert balancer.pick_for(request).instance == order[0]
        assert balancer.pick_for(request, {order[0]}).instance == order[1]
        assert balancer.pick_for(request, set(order[:3])).instance == order[3]
        assert balancer.pick_for(request, set(order)).instance == order[0]


def test_ejected_instance_is_skipped_the_same_way() -> None:
    source = WithInfo(dict.fromkeys(names(4), 1))
    balancer = lb.ConsistentHash(source, by_key)
    pick = balancer.pick_for({"user": 7})
    balancer.report(pick, ConnectionRefusedError())
    moved = balancer.pick_for({"user": 7})
    assert moved.instance != pick.instance
    assert moved.instance == balancer.pick_for({"user": 7}, {pick.instance}).instance


def test_retry_walks_the_ring(driver: Driver) -> None:
    instances = names(4)
    tried: list[str] = []

    def make(instance: str) -> Any:
        def work(request: Any) -> str:
            tried.append(instance)
            if len(tried) == 1:
                raise ConnectionResetError("first one down")
            return instance
        return driver.endpoint(work)

    with sd.Endpointer(sd.FixedInstancer(instances), make) as endpointer:
        balancer = lb.ConsistentHash(endpointer, by_key, outlier_detection=None)
        order = [instances[i] for i in Ring(tuple(instances)).walk(key_hash("9"))]
        call = driver.retry(3, 5.0, balancer)
        assert call({"user": 9}) == order[1]
        assert tried == order[:2]
        tried.clear()
        tried.append("x")  # no more failures: back to the key's own instance
        assert call({"user": 9}) == order[0]


def test_endpoint_routes_by_each_request() -> None:
    def answer(instance: str) -> sd.Endpoint:
        return lambda request: instance

    with sd.Endpointer(sd.FixedInstancer(names(3)), answer) as endpointer:
        balancer = lb.ConsistentHash(endpointer, by_key)
        routed = balancer.endpoint()
        assert routed({"user": 5}) == balancer.pick_for({"user": 5}).instance
        with pytest.raises(TypeError, match="pick_for"):
            balancer.pick()


def test_bad_keys_and_settings() -> None:
    with sd.Endpointer(sd.FixedInstancer(names(3)), noop) as endpointer:
        with pytest.raises(TypeError, match="str or bytes"):
            lb.ConsistentHash(endpointer, lambda r: 42).pick_for({})  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError, match="key"):
            lb.ConsistentHash(endpointer, "user")  # type: ignore[arg-type]
        with pytest.raises(sd.MisuseError, match="vnodes"):
            lb.ConsistentHash(endpointer, by_key, vnodes=0)
        assert lb.ConsistentHash(endpointer, lambda r: b"k").pick_for(None).instance


def test_empty_set_raises() -> None:
    with pytest.raises(lb.NoEndpointsError):
        lb.ConsistentHash(Static([]), by_key).pick_for({"user": 1})


def test_list_source_keeps_its_ring_while_the_list_is_the_same() -> None:
    source = Static([noop("a"), noop("b"), noop("c")])
    balancer = lb.ConsistentHash(source, by_key)
    balancer.pick_for({"user": 1})
    ring = balancer._ring[1]
    balancer.pick_for({"user": 2})
    assert balancer._ring[1] is ring


def test_many_threads_and_asyncio_agree() -> None:
    import asyncio
    import threading

    with sd.Endpointer(sd.FixedInstancer(names(20)), noop) as endpointer:
        balancer = lb.ConsistentHash(endpointer, by_key)
        expected = owners(balancer, range(200))
        seen: list[dict[int, str]] = []
        lock = threading.Lock()

        def worker() -> None:
            mine = owners(balancer, range(200))
            with lock:
                seen.append(mine)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        async def main() -> list[str]:
            with sd.Endpointer(sd.FixedInstancer(names(20)), _async_name) as async_endpointer:
                call = lb.retry_async(2, 5.0, lb.ConsistentHash(async_endpointer, by_key))
                return list(await asyncio.gather(*(call({"user": k}) for k in range(200))))

        answers = asyncio.run(main())
    assert seen == [expected] * 8
    assert answers == [expected[k] for k in range(200)]


def _async_name(instance: str) -> Any:
    async def endpoint(request: Any) -> str:
        return instance
    return endpoint
