"""The ``kitsd`` command: ``demo``, ``watch URL``, ``chaos`` and ``servers install NAME``.

Exit status: 0 success, 1 the command ran and found a failure (a failed call, a
registry never reached), 2 a usage error (argparse's), 128 + N after signal N:
130 for Ctrl-C (SIGINT), 143 for SIGTERM, 129 for SIGHUP: each stops what the
command started (threads, local instances, server processes) before the command
exits, with one line saying so on stderr.  141 (SIGPIPE's) when the reader of the
output went away (``kitsd watch URL | head -1``): the same, silently.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

from kitsd import __version__

__all__ = ["Terminated", "main"]

#: ``kitsd chaos --instances``' most (each is a process); ``kitsd.chaos.MAX_INSTANCES``.
CHAOS_MAX_INSTANCES = 50

DEFAULT_REGISTRY = "memory"
"""``kitsd chaos``'s registry when ``--registry`` is not given."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: raised in the main thread, as Ctrl-C raises
    ``KeyboardInterrupt``, so every ``finally`` and ``with`` runs and what was
    started is stopped.  ``signum`` is the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` in the main thread while inside;
    the handlers found are put back after (so ``main`` embedded in a program or a
    test leaves its signals as they were).  Outside the main thread: no change."""
    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, _raise_terminated)
    except ValueError:  # not the main thread: signals are not ours to handle
        pass
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _number(kind: Callable[[str], Any], *, minimum: float, strict: bool = False,
            maximum: float | None = None, unit: str = "") -> Callable[[str], Any]:
    """An argparse ``type=`` that accepts finite numbers ``>= minimum`` (``> minimum``
    with ``strict``) and ``<= maximum``, refusing ``inf``, ``nan`` and the rest with a
    usage error (exit status 2) that names the argument."""
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    if maximum is not None:
        bound += f" and <= {maximum:,.0f}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'number' if kind is float else 'whole number'}") from None
        if (not math.isfinite(value) or value < minimum or (strict and value == minimum)
                or (maximum is not None and value > maximum)):
            raise argparse.ArgumentTypeError(
                f"must be a finite {'number' if kind is float else 'whole number'}{unit} "
                f"{bound}, not {text!r}")
        return value

    return parse


#: The longest --duration: a year (a longer wait overflows the clock's timeout).
MAX_DURATION = 365 * 24 * 3600.0
_seconds = _number(float, minimum=0, strict=True, maximum=MAX_DURATION, unit=" of seconds")
_rate = _number(float, minimum=0, strict=True, maximum=1e6)


def _positive(minimum: int) -> Callable[[str], Any]:
    return _number(int, minimum=minimum)


def _hedge(text: str) -> Any:
    """``--hedge``: an ``lb.Hedge`` (see :func:`kitsd.chaos.parse_hedge`), or a usage error."""
    from kitsd.chaos import parse_hedge  # imported when the option is given

    try:
        return parse_hedge(text)
    except ValueError as error:
        # argparse says "argument --hedge:" first: once is enough
        raise argparse.ArgumentTypeError(str(error).removeprefix("--hedge ")) from None


_EXAMPLES = """\
examples:
  kitsd demo                    the whole stack on local instances, no server needed
  kitsd watch consul://127.0.0.1:8500/users
                                a service's live instances, as they change
  kitsd servers install etcd    the servers the pytest plugin and kitsd chaos start
  kitsd chaos --duration 30     faults under load (in-process registry by default)

in Python: httpx.Client(transport=kitsd.Transport("consul://127.0.0.1:8500/{service}"))
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kitsd", description="Client-side service discovery and load balancing.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EXAMPLES)
    parser.add_argument("--version", action="version", version=f"kitsd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    # not required=True: without a command the whole help is printed (see main), not
    # argparse's "the following arguments are required: command"
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     title="commands (kitsd COMMAND --help for each)")
    _demo_parser(commands)
    _chaos_parser(commands)
    _watch_parser(commands)
    _servers_parser(commands)
    return parser


def _demo_parser(commands: Any) -> None:
    from kitsd.demo import BALANCERS, MAX_CONCURRENCY, MAX_INSTANCES

    demo = commands.add_parser(
        "demo", help="run the whole stack on local instances while they die and arrive")
    demo.add_argument("--instances", type=_number(int, minimum=1, maximum=MAX_INSTANCES),
                      default=3,
                      help="instances to start (default 3)")
    demo.add_argument("--requests", type=_positive(1), default=2000,
                      help="calls to make (default 2000)")
    demo.add_argument("--balancer", choices=BALANCERS, default=None,
                      help="default round-robin (peak-ewma with --slow-instance)")
    demo.add_argument("--concurrency", type=_number(int, minimum=1, maximum=MAX_CONCURRENCY),
                      default=4,
                      help="calling threads (default 4)")
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


def _chaos_parser(commands: Any) -> None:
    chaos = commands.add_parser(
        "chaos", help="run a fault schedule against a real local cluster under load",
        description="Start a registry (3-member etcd, 3-server Consul, or in-process), "
                    "instance processes registering themselves, and a load through the whole "
                    "client stack; run the fault schedule; print a table per phase. Exit "
                    "status 1 if any call failed (every call is an idempotent GET the stack "
                    "is meant to keep succeeding) or the instance set did not converge.")
    chaos.add_argument("--registry", choices=("etcd", "consul", "k8s", "memory"),
                       default=DEFAULT_REGISTRY,
                       help=f"the registry to start (default {DEFAULT_REGISTRY}: in-process, "
                            "no server; etcd: 3 members, consul: 3 servers, k8s: a "
                            "kube-apiserver, on loopback)")
    chaos.add_argument("--registry-url", default=None,
                       help="use your servers: etcd://host:port[,host:port]/prefix/ or "
                            "consul://host:port (registry faults: only cutting ourselves off)")
    chaos.add_argument("--service", default=None,
                       help="with --registry-url: load an existing service's instances "
                            "instead of starting our own (Consul service name; for etcd the "
                            "URL's prefix is the service's); faults: cut, lost")
    chaos.add_argument("--duration", type=_seconds, default=60.0,
                       help="seconds (default 60)")
    chaos.add_argument("--rate", type=_rate, default=50.0,
                       help="calls per second (default 50)")
    chaos.add_argument("--instances", type=_number(int, minimum=1, maximum=CHAOS_MAX_INSTANCES),
                       default=3,
                       help="instances (default 3)")
    chaos.add_argument("--faults", default="kill,hang,slow,leader,cut,lost",
                       help="the schedule, in order (default: kill,hang,slow,leader,cut,lost; "
                            "also rolling: a drained rolling restart of every instance)")
    chaos.add_argument("--seed", type=int, default=None, help="seed choosing the victims")
    chaos.add_argument("--transport", action="store_true",
                       help="load through kitsd.Transport with its default options (one "
                            "httpx.Client, the registry's URL template), not the building "
                            "blocks")
    chaos.add_argument("--hedge", type=_hedge, default=None, metavar="pNN|SECONDS",
                       help="hedge the transport's calls (implies --transport): p95 hedges "
                            "after the 95th percentile of the latencies seen, 0.05 after 50 ms")
    chaos.add_argument("--json", action="store_true", help="print the report as JSON")


def _watch_parser(commands: Any) -> None:
    watch_cmd = commands.add_parser(
        "watch", help="print the live instance set of a URL",
        description="Print every change of the URL's instance set until Ctrl-C, --count "
                    "updates or --duration seconds. Exit status 0 if the registry's last "
                    "answer was good, 1 (with the last error) if it was an error or no "
                    "answer came at all.")
    watch_cmd.add_argument(
        "url", help="static://h:p,h:p | etcd[s]://host:port/prefix/ | "
                    "consul[s]://host:port/service | dnssrv://NAME?server=h:p | zk://host:port/path")
    watch_cmd.add_argument("--count", type=_positive(1), default=None,
                           help="exit after N updates")
    watch_cmd.add_argument("--duration", type=_seconds, default=None,
                           help="exit after N seconds")


def _servers_parser(commands: Any) -> None:
    from kitsd.compose.install import SERVERS

    names = sorted(SERVERS)
    servers = commands.add_parser(
        "servers", help="install the real servers the pytest plugin and chaos run",
        description="The registry servers kitsd's pytest fixtures, `kitsd chaos` and kitsd's "
                    "own test suite start on loopback ports. `install` installs the missing "
                    "ones (system packages or a build; needs root or passwordless sudo); "
                    "`list` says what is installed where.")
    servers.set_defaults(help=servers.format_help)
    actions = servers.add_subparsers(dest="action", metavar="ACTION", title="actions")
    install = actions.add_parser("install", help="install servers that are missing")
    install.add_argument("names", nargs="+", choices=names, metavar="NAME",
                         help=f"one or more of: {', '.join(names)}")
    install.add_argument("--force", action="store_true",
                         help="run the installer even if the server looks installed")
    actions.add_parser("list", help="say which servers are installed")


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


def _exposition(metrics: Any) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def _demo(args: argparse.Namespace) -> int:
    from kitsd.demo import check_options, format_event, format_header, format_report, run_demo

    balancer = args.balancer or ("peak-ewma" if args.slow_instance else "round-robin")
    check_options(instances=args.instances, requests=args.requests,
                  concurrency=args.concurrency, balancer=balancer)
    metrics = _metrics() if args.metrics else None
    if args.metrics and metrics is None:
        return 2
    exposition: list[str] = []

    def show(text: str) -> None:  # as it happens: a long run is not a silent one
        sys.stdout.write(text)
        sys.stdout.flush()

    show(format_header(instances=args.instances, balancer=balancer, requests=args.requests,
                       concurrency=args.concurrency, building_blocks=args.building_blocks))
    try:
        report = run_demo(
            instances=args.instances, requests=args.requests, balancer=balancer,
            concurrency=args.concurrency, seed=args.seed, slow_instance=args.slow_instance,
            observer=metrics, building_blocks=args.building_blocks,
            # scraped while the client is open: its breakers are alive to be shown
            before_close=None if metrics is None else
            (lambda: exposition.append(_exposition(metrics))),
            on_event=lambda at, what: show(format_event(at, what)))
    finally:
        if metrics is not None:
            metrics.close()
    format_report(report, sys.stdout, shown_live=True)
    if exposition:
        sys.stdout.write("\n# Prometheus metrics of this run (what a scrape of /metrics "
                         "shows before the client closes)\n")
        sys.stdout.write(exposition[0])
    return 0 if report.failed == 0 else 1


def _servers(args: argparse.Namespace) -> int:
    from kitsd.compose.install import SERVERS, InstallError, install, status

    if args.action == "list":
        width = max(map(len, SERVERS)) + 2
        for name in sorted(SERVERS):
            print(f"{name:<{width}}{status(SERVERS[name])}")
        return 0
    try:
        for name in args.names:
            install(SERVERS[name], say=lambda line: print(line, file=sys.stderr, flush=True),
                    force=args.force)
    except InstallError as error:
        print(f"kitsd servers: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module doc)."""
    command = "kitsd"
    try:  # from the first import on: a Ctrl-C while loading is one line too
        with _signals_raise():
            parser = _parser()
            args = parser.parse_args(argv)
            if args.command is None or getattr(args, "action", "") is None:
                # `kitsd` or `kitsd servers` alone: what there is to run, not an error line
                sys.stderr.write(getattr(args, "help", parser.format_help)())
                return 2
            command = f"kitsd {args.command}"
            logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            return _run(args)
    except ValueError as error:
        print(f"kitsd: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{command}: interrupted; everything it started is stopped", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # `kitsd watch URL | head -1`: the reader has all it wanted
        _drop_stdout()
        return 128 + signal.SIGPIPE
    except Terminated as terminated:
        name = signal.Signals(terminated.signum).name
        print(f"\n{command}: {name}; everything it started is stopped", file=sys.stderr)
        return 128 + terminated.signum


def _drop_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and the interpreter's own flush at
    exit would otherwise print 'Exception ignored ... BrokenPipeError'."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return _demo(args)
    if args.command == "chaos":
        from kitsd.chaos import main_chaos  # starts nothing until asked

        return main_chaos(args)
    if args.command == "servers":
        return _servers(args)
    from kitsd.watch import main_watch

    return main_watch(args)
