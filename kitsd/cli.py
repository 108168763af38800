"""The ``kitsd`` command: ``kitsd demo``, ``kitsd watch URL`` and ``kitsd chaos``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from kitsd.demo import BALANCERS, format_report, run_demo
from kitsd.watch import watch

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kitsd", description="Client-side service discovery and load balancing.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run the whole stack on local instances while they die and arrive")
    demo.add_argument("--instances", type=int, default=3, help="instances to start (default 3)")
    demo.add_argument("--requests", type=int, default=2000, help="calls to make (default 2000)")
    demo.add_argument("--balancer", choices=BALANCERS, default=None,
                      help="default round-robin (peak-ewma with --slow-instance)")
    demo.add_argument("--concurrency", type=int, default=4, help="calling threads (default 4)")
    demo.add_argument("--seed", type=int, default=None, help="seed for the random choices")
    demo.add_argument(
        "--slow-instance", action="store_true",
        help="make one instance 20x slower with occasional stalls, and hedge calls "
             "(balancer peak-ewma unless --balancer says otherwise)")
    demo.add_argument("--metrics", action="store_true",
                      help="print the Prometheus metrics of the run at the end "
                           "(needs the 'prometheus' extra)")
    demo.add_argument("--building-blocks", action="store_true",
                      help="call through the hand-built stack (sd, lb, breaker) instead of "
                           "the one-line kitsd.Transport client")

    chaos = commands.add_parser(
        "chaos", help="run a fault schedule against a real local cluster under load",
        description="Start a registry (3-member etcd, 3-server Consul, or in-process), "
                    "instance processes registering themselves, and a load through the whole "
                    "client stack; run the fault schedule; print a table per phase. Exit "
                    "status 1 if any call failed (every call is an idempotent GET the stack "
                    "is meant to keep succeeding) or the instance set did not converge.")
    chaos.add_argument("--registry", choices=("etcd", "consul", "memory"), default="memory")
    chaos.add_argument("--registry-url", default=None,
                       help="use your servers: etcd://host:port[,host:port]/prefix/ or "
                            "consul://host:port (registry faults: only cutting ourselves off)")
    chaos.add_argument("--service", default=None,
                       help="with --registry-url: load an existing service's instances "
                            "instead of starting our own (Consul service name; for etcd the "
                            "URL's prefix is the service's); faults: cut, lost")
    chaos.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    chaos.add_argument("--rate", type=float, default=50.0, help="calls per second (default 50)")
    chaos.add_argument("--instances", type=int, default=3, help="instances (default 3)")
    chaos.add_argument("--faults", default="kill,hang,slow,leader,cut,lost",
                       help="the schedule, in order (default: kill,hang,slow,leader,cut,lost; "
                            "also rolling: a drained rolling restart of every instance)")
    chaos.add_argument("--seed", type=int, default=None, help="seed choosing the victims")
    chaos.add_argument("--json", action="store_true", help="print the report as JSON")

    watch_cmd = commands.add_parser("watch", help="print the live instance set of a URL")
    watch_cmd.add_argument(
        "url", help="static://h:p,h:p | etcd[s]://host:port/prefix/ | "
                    "consul[s]://host:port/service | dnssrv://NAME?server=h:p | zk://host:port/path")
    watch_cmd.add_argument("--count", type=int, default=None, help="exit after N updates")
    watch_cmd.add_argument("--duration", type=float, default=None, help="exit after N seconds")
    return parser


def _metrics() -> Any:
    """A PrometheusObserver on a registry of its own, or ``None`` (said why) without
    prometheus_client."""
    try:
        from prometheus_client import CollectorRegistry, disable_created_metrics

        from kitsd.prometheus import PrometheusObserver
    except ImportError:
        print("kitsd: --metrics needs prometheus_client: pip install 'kitsd[prometheus]'",
              file=sys.stderr)
        return None
    # This process only prints the metrics once: the *_created series are noise here.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    return PrometheusObserver(CollectorRegistry())


def _print_metrics(metrics: Any) -> None:
    from prometheus_client import generate_latest

    sys.stdout.write("\n# Prometheus metrics of this run (what a scrape of /metrics shows)\n")
    sys.stdout.write(generate_latest(metrics.registry).decode())
    metrics.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            balancer = args.balancer or ("peak-ewma" if args.slow_instance else "round-robin")
            metrics = _metrics() if args.metrics else None
            if args.metrics and metrics is None:
                return 2
            report = run_demo(instances=args.instances, requests=args.requests,
                              balancer=balancer, concurrency=args.concurrency,
                              seed=args.seed, slow_instance=args.slow_instance,
                              observer=metrics, building_blocks=args.building_blocks)
            format_report(report, sys.stdout)
            if metrics is not None:
                _print_metrics(metrics)
            return 0 if report.failed == 0 else 1
        if args.command == "chaos":
            from kitsd.chaos import main_chaos  # starts nothing until asked

            return main_chaos(args)
        return watch(args.url, sys.stdout, count=args.count, duration=args.duration)
    except ValueError as error:
        print(f"kitsd: {error}", file=sys.stderr)
        return 2
