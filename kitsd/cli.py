"""The ``kitsd`` command: ``kitsd demo`` and ``kitsd watch URL``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

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
    demo.add_argument("--balancer", choices=BALANCERS, default="round-robin")
    demo.add_argument("--concurrency", type=int, default=4, help="calling threads (default 4)")
    demo.add_argument("--seed", type=int, default=None, help="seed for the random choices")
    demo.add_argument("--building-blocks", action="store_true",
                      help="call through the hand-built stack (sd, lb, breaker) instead of "
                           "the one-line kitsd.Transport client")

    watch_cmd = commands.add_parser("watch", help="print the live instance set of a URL")
    watch_cmd.add_argument(
        "url", help="static://h:p,h:p | etcd://host:port/prefix/ | consul://host:port/service")
    watch_cmd.add_argument("--count", type=int, default=None, help="exit after N updates")
    watch_cmd.add_argument("--duration", type=float, default=None, help="exit after N seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            report = run_demo(instances=args.instances, requests=args.requests,
                              balancer=args.balancer, concurrency=args.concurrency,
                              seed=args.seed, building_blocks=args.building_blocks)
            format_report(report, sys.stdout)
            return 0 if report.failed == 0 else 1
        return watch(args.url, sys.stdout, count=args.count, duration=args.duration)
    except ValueError as error:
        print(f"kitsd: {error}", file=sys.stderr)
        return 2
