"""Rolling restarts under load, per registry: kitsd.serve's drain against the naive way.

    python -m bench.bench_rolling [--registries consul,etcd,zk] [--instances 3]
                                  [--steady 5] [--clients 8]

For each registry (a Consul dev agent, one etcd member and one ZooKeeper server,
started on loopback), three runs of :func:`kitsd.serve.rolling.rolling_restart`:
``drain`` (uvicorn instances served through ``kitsd.serve.asgi``, SIGTERM),
``naive`` (the registrar entered in the app's lifespan: it deregisters as uvicorn
stops) and ``sigkill`` (drained instances killed instead: no drain possible).
Clients call through ``kitsd.Transport``: GETs, and POSTs never retried once sent.
Prints one row per run: calls, failed GETs/POSTs, POSTs handled twice, failed
attempts, ejections, p99 in steady state and during the restart, and the median
seconds per instance restart (old instance signalled -> new one seen registered).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Iterator

from kitsd.serve.rolling import RollingReport, rolling_restart


@contextlib.contextmanager
def _registry(name: str) -> Iterator[str]:
    if name == "consul":
        from kitsd.compose.consul import dev_agent
        with dev_agent() as agent:
            yield f"consul://{agent.http_addr}"
    elif name == "etcd":
        from kitsd.compose.etcd import single_member
        server = single_member()
        try:
            yield f"etcd://{server.endpoint}"
        finally:
            server.close()
    else:
        from kitsd.compose.zookeeper import standalone
        with standalone() as zookeeper:
            yield f"zk://{zookeeper.address}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _row(name: str, report: RollingReport) -> str:
    return (f"{report.registry:<7} {name:<8} {report.gets + report.posts:>6} "
            f"{report.failed_gets:>5}/{report.failed_posts:<5} {report.duplicated_posts:>5} "
            f"{report.failed_attempts:>8} {report.ejections:>5} {_ms(report.p99_steady):>8} "
            f"{_ms(report.p99_restart):>8} "
            f"{statistics.median(report.restart_seconds or [0]):>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_rolling")
    parser.add_argument("--registries", default="consul,etcd,zk")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--steady", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    print(f"{'registry':<7} {'run':<8} {'calls':>6} {'failed G/P':>11} {'dup':>5} "
          f"{'attempts':>8} {'eject':>5} {'p99 st':>8} {'p99 rr':>8} {'s/inst':>8}")
    for name in args.registries.split(","):
        with _registry(name) as registry:
            runs = {
                "drain": rolling_restart(registry, mode="drain", instances=args.instances,
                                         steady=args.steady, clients=args.clients),
                "naive": rolling_restart(registry, mode="naive", instances=args.instances,
                                         steady=args.steady, clients=args.clients),
                "sigkill": rolling_restart(registry, mode="drain", kill="SIGKILL",
                                           instances=args.instances, steady=args.steady,
                                           clients=args.clients),
            }
            for run, report in runs.items():
                print(_row(run, report), flush=True)


if __name__ == "__main__":
    main()
