"""What the whole kitsd client stack costs on top of plain httpx, per HTTP call.

    python -m bench.bench_http_stack

Both sides call the same local instance (``kitsd.demo_server``) sequentially on a
kept-alive connection; the stack is breaker -> retry -> round robin -> per-instance
breaker -> ``sd.http`` endpoint.  Medians of several runs, and their ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import pybreaker

import breaker
import lb
import sd
import sd.http
from kitsd.demo_server import DemoInstance

CALLS = 1000
RUNS = 5


def per_call(call: Callable[[int], Any]) -> float:
    began = time.perf_counter()
    for n in range(CALLS):
        call(n)
    return (time.perf_counter() - began) / CALLS


def main() -> None:
    server = DemoInstance()
    try:
        plain = httpx.Client(base_url=f"http://{server.instance}")

        def plain_call(n: int) -> Any:
            response = plain.get("/bench", params={"n": n})
            response.raise_for_status()
            return response.json()

        factory = breaker.per_instance(
            sd.http.factory("GET", "/bench", encode=lambda n: {"params": {"n": n}},
                            decode=lambda response: response.json()),
            lambda instance: pybreaker.CircuitBreaker(name=instance),
        )
        with sd.Endpointer(sd.FixedInstancer([server.instance]), factory) as endpointer:
            stack = breaker.circuit_breaker(pybreaker.CircuitBreaker())(
                lb.retry(3, 2.0, lb.RoundRobin(endpointer)))
            plain_call(0)
            stack(0)  # warm both connections
            plain_runs, stack_runs = [], []
            for _ in range(RUNS):  # interleaved, so drift hits both alike
                plain_runs.append(per_call(plain_call))
                stack_runs.append(per_call(stack))
        plain.close()
    finally:
        server.kill()
    plain_median, stack_median = statistics.median(plain_runs), statistics.median(stack_runs)
    print(f"{CALLS} sequential calls x {RUNS} runs against a local instance (medians)")
    print(f"  plain httpx.Client         {plain_median * 1e6:8.0f} us/call")
    print(f"  kitsd stack                {stack_median * 1e6:8.0f} us/call")
    print(f"  ratio stack / plain: x{stack_median / plain_median:.3f} "
          f"({(stack_median - plain_median) * 1e6:+.0f} us)")


if __name__ == "__main__":
    main()
