"""Active health checks (issue 21.3), measured against passive ejection alone.

    python -m bench.bench_health_checks [--quick]

Six local HTTP instances, an open-loop load of 200 calls/s through
``lb.retry_async(3, ...)`` over ``lb.PeakEWMA`` (default outlier detection: a
refused connection ejects at once, for 1 s doubling up to 30 s).

1. **A dead instance.**  One instance stops for good.  Passive ejection alone
   lets it back into rotation each time an ejection ends, and the next call
   that meets it pays a failed attempt; with ``lb.HttpCheck("/health",
   interval=0.5)`` its failing checks keep it out.  Shown: attempts on the dead
   instance after the first, and failed calls (target: 0 failed; fewer attempts).
2. **An instance back after an outage.**  One instance stops, then comes back 2 s
   later.  Shown: seconds until it takes calls again — at its ejection's end
   (base 10 s here), or at its first passing check (the check covers connection
   failures: envoy#24217's case).
3. **Sharing.**  Four stacks (balancers) over the same six instances with one
   ``lb.HealthCheckers``: probes per instance per second, against one stack
   (target: the same — one prober per instance).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections import Counter
from typing import Any

from bench._load import drive
from bench._servers import Instances, RawEndpoint
from kitsd import lb, sd

RATE = 200.0
CHECK = lb.HttpCheck(path="/health", interval=0.5, timeout=0.25, unhealthy_threshold=2)


class Counted:
    """A RawEndpoint factory that counts attempts per instance."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()

    def __call__(self, instance: str) -> Any:
        endpoint = RawEndpoint(instance)
        attempts = self.attempts

        async def call(request: Any) -> str:
            attempts[instance] += 1
            return await endpoint(request)

        call.aclose = endpoint.aclose  # type: ignore[attr-defined]
        return call


async def dead_instance(checked: bool, seconds: float) -> tuple[int, int]:
    with Instances(6, delay=0.005) as servers, lb.HealthCheckers() as checkers:
        counted = Counted()
        endpointer = sd.Endpointer(sd.FixedInstancer(servers.addresses), counted)
        options: dict[str, Any] = (
            {"health_check": CHECK, "health_checkers": checkers} if checked else {})
        balancer = lb.PeakEWMA(endpointer, seed=1, **options)
        call = lb.retry_async(3, 2.0, balancer)
        dead = servers.addresses[0]
        before: list[int] = []

        def kill() -> None:
            servers.command("down", 0)
            before.append(counted.attempts[dead])

        run = await drive(call, lambda t: RATE, seconds, {1.0: kill})
        await endpointer.aclose()
        balancer.close()
        after = counted.attempts[dead] - before[0]
        return max(after - 1, 0), sum(each.error is not None for each in run.outcomes)


async def back_after_outage(checked: bool, seconds: float) -> float:
    with Instances(6, delay=0.005) as servers, lb.HealthCheckers() as checkers:
        counted = Counted()
        endpointer = sd.Endpointer(sd.FixedInstancer(servers.addresses), counted)
        options: dict[str, Any] = (
            {"health_check": CHECK, "health_checkers": checkers} if checked else {})
        detection = lb.OutlierDetection(base_ejection_time=10.0, max_ejection_time=10.0)
        balancer = lb.PeakEWMA(endpointer, seed=1, outlier_detection=detection, **options)
        call = lb.retry_async(3, 2.0, balancer)
        flaky = servers.addresses[0]
        marks: dict[str, float] = {}

        def down() -> None:
            servers.command("down", 0)

        def up() -> None:
            servers.command("up", 0)
            marks["up"] = time.monotonic()
            marks["count"] = counted.attempts[flaky]

        def watch() -> None:
            if "up" in marks and "back" not in marks and counted.attempts[flaky] > marks["count"]:
                marks["back"] = time.monotonic()

        events = {1.0: down, 3.0: up}
        events.update({3.0 + step / 10: watch for step in range(1, int(seconds * 10))})
        await drive(call, lambda t: RATE, 3.0 + seconds, events)
        await endpointer.aclose()
        balancer.close()
        return marks.get("back", float("inf")) - marks["up"]


def sharing(stacks: int, seconds: float) -> float:
    with Instances(6, delay=0.005) as servers, lb.HealthCheckers() as checkers:
        endpointer = sd.Endpointer(sd.FixedInstancer(servers.addresses), RawEndpoint)
        check = lb.HttpCheck(path="/health", interval=0.1, timeout=0.1)
        balancers = [lb.RoundRobin(endpointer, health_check=check, health_checkers=checkers)
                     for _ in range(stacks)]
        heard: Counter[str] = Counter()
        lock = threading.Lock()

        def listener(instance: str, passed: bool, started: float, change: Any) -> None:
            with lock:
                heard[instance] += 1

        probe = checkers.subscribe(check, listener)
        probe.watch(servers.addresses)  # a listener of our own: it hears every probe
        time.sleep(seconds)
        with lock:
            probes = sum(heard.values()) / len(servers.addresses) / seconds
        probe.close()
        for balancer in balancers:
            balancer.close()
        endpointer.close()
        return probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (CI)")
    args = parser.parse_args()
    seconds = 8.0 if args.quick else 20.0
    print(f"6 instances, PeakEWMA, {RATE:g} calls/s, {CHECK!r}")
    print(f"1. one instance dies at t=1s, {seconds:g}s of load")
    results = {}
    for checked in (False, True):
        attempts, failed = asyncio.run(dead_instance(checked, seconds))
        results[checked] = (attempts, failed)
        label = "health checks" if checked else "passive only"
        print(f"  {label:<14} attempts on it after the first: {attempts:4d}   failed calls: "
              f"{failed}")
    print("2. one instance down for 2 s (ejected for 10 s): back in rotation after")
    for checked in (False, True):
        back = asyncio.run(back_after_outage(checked, 12.0 if not args.quick else 11.0))
        label = "health checks" if checked else "passive only"
        print(f"  {label:<14} {back:5.2f} s")
    print("3. probes per instance per second (interval 0.1 s)")
    one = sharing(1, 2.0)
    four = sharing(4, 2.0)
    print(f"  1 stack {one:.1f}/s, 4 stacks {four:.1f}/s: x{four / one:.2f}")
    attempts_passive, _ = results[False]
    attempts_checked, failed_checked = results[True]
    ok = failed_checked == 0 and attempts_checked < attempts_passive and four / one < 1.2
    print()
    print(f"  health checks: {failed_checked} failed, {attempts_checked} attempts on the dead "
          f"instance (passive: {attempts_passive}), probes x{four / one:.2f} with 4 stacks "
          f"(targets 0, fewer, x1): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
