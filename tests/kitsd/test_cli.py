"""The command line: ``kitsd demo`` and ``kitsd watch``."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import textwrap
import threading

import pytest

import kitsd
from kitsd.cli import main
from kitsd.compose.process import free_ports
from kitsd.demo import format_report, run_demo


@pytest.mark.parametrize("balancer", ["round-robin", "random", "least-loaded"])
def test_demo_loses_no_call_while_an_instance_dies_and_one_arrives(
    balancer: str, no_thread_leaks: None
) -> None:
    report = run_demo(instances=3, requests=300, balancer=balancer, concurrency=3, seed=7)

    assert report.failed == 0
    assert sum(report.calls_per_instance.values()) == 300
    assert report.killed
    assert report.added
    assert report.killed != report.added
    # the new instance took calls, the killed one took some before it died
    assert report.calls_per_instance[report.added] > 0
    assert report.calls_per_instance[report.killed] > 0
    assert len(report.calls_per_instance) == 4
    assert len(report.latencies) == 300
    assert [what.split()[0] for _, what in report.timeline] == ["killed", "registry", "added"]


def test_summary_reads_at_a_glance() -> None:
    report = run_demo(instances=2, requests=60, concurrency=2)
    out = io.StringIO()
    format_report(report, out)
    text = out.getvalue()

    assert "failed 0" in text
    assert re.search(r"p50 [\d.]+ ms\s+p99 [\d.]+ ms", text)
    assert "(killed)" in text
    assert "(added)" in text
    assert text.rstrip().endswith("OK: every call succeeded")


@pytest.mark.parametrize("options", [["--instances", "1"], ["--requests", "2"]])
def test_demo_rejects_bad_options(options: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *options]) == 2
    assert capsys.readouterr().err.startswith("kitsd: ")


def test_watch_prints_the_static_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "static://127.0.0.1:81,127.0.0.1:80", "--count", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 instances: 127.0.0.1:80, 127.0.0.1:81" in out


def test_watch_says_one_instance(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "static://127.0.0.1:80", "--count", "1"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("  1 instance: 127.0.0.1:80")


@pytest.mark.parametrize("argv", [[], ["servers"]])
def test_a_command_alone_lists_what_it_can_do(argv: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``kitsd`` alone said only "the following arguments are required: command"."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: kitsd {' '.join(argv)}".rstrip() + " ")
    wanted = ["install", "list"] if argv else ["demo", "watch", "chaos", "servers"]
    for name in wanted:
        assert re.search(rf"^    {name}\s+\S", err, re.MULTILINE), (name, err)
    if not argv:
        assert "kitsd demo " in err  # the examples


def test_watch_of_a_registry_failing_before_the_watch_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An etcd URL with credentials logs in when it connects: with etcd down that raised
    RegistryUnavailableError out of ``kitsd watch`` (a 40-line traceback, exit 1)."""
    (port,) = free_ports(1)
    url = f"etcd://user:S3CRET@127.0.0.1:{port}/services/users/"
    assert main(["watch", url, "--count", "1", "--duration", "5"]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"kitsd watch: the registry was never reached: connecting to etcd at "
        f"127.0.0.1:{port}: etcd unavailable (connection refused)"]
    assert "S3CRET" not in captured.out + captured.err


def test_watch_rejects_unknown_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "zookeeper://x:1/a"]) == 2
    assert "unknown instancer URL scheme" in capsys.readouterr().err


@pytest.mark.parametrize(("url", "says"), [
    # each said what was wrong but not what to write instead
    ("dns://_users._tcp.example", "unknown instancer URL scheme 'dns' in "
     "dns://_users._tcp.example: did you mean dnssrv://? (want static://"),
    ("zookeeper://x:1/a", "did you mean zk://?"),
    ("static://", "static URL names no instances, as static://10.0.0.1:8080,10.0.0.2:8080: "
     "static://"),
    ("etcd://", "etcd URL names no host, as etcd://127.0.0.1:2379/services/api/"),
    ("zk://", "zk:// URL names no host, as zk://127.0.0.1:2181/services/api: zk://"),
])
def test_a_bad_url_says_what_to_write(url: str, says: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", url]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("kitsd: ")
    assert says in line


def test_console_script_runs_the_demo() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kitsd", "demo", "--requests", "90", "--instances", "2"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "OK: every call succeeded" in done.stdout
    assert threading.active_count() >= 1


def test_demo_tells_its_story_as_it_happens() -> None:
    """The whole report came at the end: ``kitsd demo --requests 100000`` said nothing
    for a minute and a half."""
    events: list[tuple[float, str]] = []
    report = run_demo(instances=2, requests=60, concurrency=2,
                      on_event=lambda at, what: events.append((at, what)))
    assert events == report.timeline
    assert [what.split()[0] for _, what in events] == ["killed", "registry", "added"]
    with subprocess.Popen([sys.executable, "-m", "kitsd", "demo", "--requests", "10000000"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          stdin=subprocess.DEVNULL) as demo:
        assert demo.stdout is not None
        try:  # without it the header came after the whole run: bounded, not a hang
            readable, _, _ = select.select([demo.stdout], [], [], 60)
            first = demo.stdout.readline() if readable else ""
            running = demo.poll() is None
        finally:
            demo.terminate()
    assert first.startswith("kitsd demo: 3 instances, round-robin, 10000000 calls")
    assert running  # the header came while the calls were running, not after them


@pytest.mark.parametrize("argv", [
    ["watch", "static://127.0.0.1:1", "--duration", "5"],  # `kitsd watch URL | head -1`
    ["demo", "--requests", "300"],
    ["servers", "list"],
])
def test_a_closed_output_ends_the_command_silently(argv: list[str]) -> None:
    """With its reader gone, ``kitsd watch`` logged a BrokenPipeError traceback from its
    subscriber, said 'no answer from the registry' and ran on; the demo ended in a
    traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away
    try:
        done = subprocess.run([sys.executable, "-m", "kitsd", *argv], stdout=write_end,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                              timeout=60, check=False)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"kitsd {kitsd.__version__}"


@pytest.mark.parametrize("argv", [
    ["watch", "static://127.0.0.1:1", "--duration", "inf"],
    ["watch", "static://127.0.0.1:1", "--duration", "nan"],
    ["watch", "static://127.0.0.1:1", "--duration", "-1"],
    ["watch", "static://127.0.0.1:1", "--duration", "0"],
    ["watch", "static://127.0.0.1:1", "--duration", "1e300"],
    ["watch", "static://127.0.0.1:1", "--duration", "soon"],
    ["watch", "static://127.0.0.1:1", "--count", "0"],
    ["chaos", "--duration", "inf"],
    ["chaos", "--duration", "nan"],
    ["chaos", "--rate", "inf"],
    ["chaos", "--rate", "0"],
    ["chaos", "--instances", "-3"],
    ["demo", "--requests", "nan"],
    ["demo", "--concurrency", "0"],
    # --instances 100000 started them all, and ran on for minutes after SIGTERM
    ["demo", "--instances", "101"],
    ["demo", "--concurrency", "257"],
    ["chaos", "--instances", "51"],
])
def test_bad_numbers_are_usage_errors(argv: list[str],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16.11: --duration inf ended in an OverflowError traceback; nan exited 0 at once."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {argv[-2]}: " in err
    assert "Traceback" not in err


def test_chaos_help_says_the_default_registry(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["chaos", "--help"])
    assert "default memory" in " ".join(capsys.readouterr().out.split())


def test_watch_exits_nonzero_when_the_registry_was_never_reached(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15.5: it exited 0; and each failure was printed twice (its line and a
    logged WARNING)."""
    (port,) = free_ports(1)  # nothing listens there
    assert main(["watch", f"consul://127.0.0.1:{port}/users", "--duration", "1"]) == 1
    captured = capsys.readouterr()
    assert "kitsd watch: the registry was never reached: " in captured.err
    assert "cannot connect" in captured.err
    assert "error, keeping 0" in captured.out
    assert [r for r in caplog.records if r.name.startswith("kitsd")] == []


def test_watch_prints_a_failure_once() -> None:
    (port,) = free_ports(1)
    done = subprocess.run(
        [sys.executable, "-m", "kitsd", "watch", f"consul://127.0.0.1:{port}/users",
         "--duration", "1"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "WARNING" not in done.stderr
    assert done.stderr.count("cannot connect") == 1  # the last error, once
    # -v shows the drivers' own logs again
    verbose = subprocess.run(
        [sys.executable, "-m", "kitsd", "-v", "watch", f"consul://127.0.0.1:{port}/users",
         "--duration", "1"], capture_output=True, text=True, timeout=60, check=False)
    assert "WARNING kitsd.sd.consul" in verbose.stderr


def test_watch_exits_zero_when_the_last_answer_was_good(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["watch", "static://127.0.0.1:1", "--duration", "0.2"]) == 0
    assert capsys.readouterr().err == ""


def test_chaos_without_the_client_library_starts_nothing() -> None:
    """Issue 15.4: with --registry etcd and no etcd extra it started a cluster, then
    failed with an instance process's traceback."""
    script = textwrap.dedent(
        """
        import sys
        for name in ("pyetcd", "etcd3"):
            sys.modules[name] = None
        from kitsd.cli import main
        from kitsd.compose import reaper
        code = main(["chaos", "--registry", "etcd", "--duration", "5"])
        print("watcher", reaper.watcher_pid())  # None: no process was ever started
        sys.exit(code)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "pip install 'kitsd[etcd]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert "watcher None" in done.stdout
