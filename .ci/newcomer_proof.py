#!/usr/bin/env python3
"""A newcomer's first hour, from the wheel alone (issue 15: "Done when").

Builds kitsd's wheel from this checkout (``pip wheel --no-deps``), installs it with
``kitsd[all,testing]`` and the other packages the README's examples name from the
package index into a fresh ``python -m venv`` outside the repository, and then, from a
directory outside the repository, with no ``PYTHONPATH``, does what a new user does:

1. ``kitsd --version``, ``kitsd`` alone (the commands, exit 2), ``kitsd demo`` (and
   Ctrl-C in it: one line, exit 130), ``kitsd servers list``, ``kitsd servers install
   etcd`` (installed: says so at once); the time ``import kitsd`` takes (reported);
2. ``kitsd watch etcd://…/services/users/ --count 1`` against a real etcd holding one
   instance (started by the wheel's own launcher): prints ``1 instance``;
3. bad URLs of every scheme: one line naming the problem, no traceback, exit 2, no
   secret echoed; a registry that fails before the watch starts: one line, exit 1;
4. ``kitsd chaos --registry memory --duration 5``; ``help(kitsd)``;
5. the error of ``httpx.Client(transport=kitsd.Transport("consul://…/{service}"))
   .get("http://users/")`` with nothing listening ("the registry is unreachable" and
   why) and with an agent up and no instance ("the registry answered: no instances");
6. every Python block of README.md, each in a virtual environment holding the wheel and
   *only* what the block's ``# pip install`` comment names (run by tests/test_readme.py,
   whose fixtures start the servers the blocks name);
7. a user's own test file on the pytest plugin's fixtures (``kitsd_etcd``,
   ``kitsd_consul``, ``kitsd_faults``, ``kitsd_memory_registry``), run by the
   environment's pytest, which finds the plugin through its entry point.

Each check prints ``PASS``/``FAIL`` with the seconds it took; exit status 0 when every
check holds.  Needs the package index (or pip's cache) and the servers
(``kitsd servers install etcd consul zookeeper kube-apiserver``; the README step
installs what is missing as the test run does).  Takes 2-4 minutes on 2 cores.

Run: ``python .ci/newcomer_proof.py [--keep DIR]``.  tests/test_packaging.py runs it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_readme import BLOCKS  # noqa: E402  (the README's blocks, as the test reads them)

failures: list[str] = []


def check(ok: bool, what: str, seconds: float, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  [{seconds:6.1f}s] {what}", flush=True)
    if not ok:
        failures.append(what)
        if detail:
            print(textwrap.indent(detail.rstrip()[-4000:], "        | "), flush=True)
    return ok


class User:
    """A person with the wheel installed in a virtual environment, in a directory of
    their own, without this checkout anywhere on their path."""

    def __init__(self, venv: Path, home: Path) -> None:
        self.venv = venv
        self.bin = venv / "bin"
        self.python = str(self.bin / "python")
        self.home = home
        env = {name: value for name, value in os.environ.items()
               if name != "PYTHONPATH" and not name.startswith("PYTEST_")
               # servers of one's own would stand in for the plugin's (no kill, no restart)
               and name not in ("KITSD_ETCD_ENDPOINT", "KITSD_CONSUL_HTTP_ADDR",
                                "KITSD_ZK_HOSTS")}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"  # an activated venv
        env["VIRTUAL_ENV"] = str(venv)
        env["PAGER"] = "cat"
        self.env = env

    def run(self, *command: str, timeout: float = 300, cwd: Path | None = None,
            ) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        done = subprocess.run(list(command), cwd=cwd or self.home, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
        return done, time.monotonic() - started

    def kitsd(self, *args: str, timeout: float = 300) -> tuple[
            subprocess.CompletedProcess[str], float]:
        return self.run(str(self.bin / "kitsd"), *args, timeout=timeout)


def output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


def must(command: list[str], what: str, *, cwd: Path, timeout: float = 900) -> float:
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    seconds = time.monotonic() - started
    if not check(done.returncode == 0, what, seconds, output(done)):
        raise SystemExit(f"cannot go on: {what} failed")
    return seconds


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the steps ---------------------------------------------------------------------------


def build(base: Path, python: str) -> tuple[Path, str]:
    print("\n[build] the wheel, from a copy of this checkout", flush=True)
    source = base / "source"  # building writes kitsd.egg-info into the tree
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".venv"))
    wheels = base / "wheels"
    must([python, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(source)],
         "pip wheel --no-deps .", cwd=base)
    (wheel,) = wheels.glob("kitsd-*.whl")
    version = wheel.name.split("-")[1]
    print(f"      {wheel.name} ({wheel.stat().st_size / 1024:.0f} KiB)", flush=True)
    return wheel, version


def install(base: Path, python: str, wheel: Path) -> User:
    print("\n[install] a fresh virtual environment, the wheel and its extras from the index",
          flush=True)
    others = sorted({r for block in BLOCKS for r in block.requirements()
                     if r != "kitsd" and not r.startswith("kitsd[")})
    venv = base / "venv"
    must([python, "-m", "venv", str(venv)], "python -m venv (outside the repository)", cwd=base)
    must([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
          f"{wheel}[all,testing]", *others],
         f"pip install 'kitsd[all,testing]' {' '.join(others)} (from the index)", cwd=base)
    home = base / "home"
    home.mkdir()
    user = User(venv, home)
    where, seconds = user.run(user.python, "-c", "import kitsd; print(kitsd.__file__)")
    check(where.returncode == 0 and where.stdout.startswith(str(venv))
          and not where.stdout.startswith(str(ROOT)),
          f"import kitsd comes from the environment ({where.stdout.strip()})", seconds,
          output(where))
    return user


def commands(user: User, version: str) -> None:
    print("\n[cli] the first commands", flush=True)
    done, seconds = user.kitsd("--version")
    check(done.returncode == 0 and done.stdout.strip() == f"kitsd {version}",
          f"kitsd --version: {done.stdout.strip()!r}", seconds, output(done))

    done, seconds = user.kitsd()
    check(done.returncode == 2 and "Traceback" not in done.stderr
          and all(f"    {name} " in done.stderr for name in ("demo", "watch", "chaos", "servers"))
          and "kitsd demo" in done.stderr,
          "kitsd alone: the commands and examples, exit 2", seconds, output(done))

    done, seconds = user.kitsd("demo")
    check(done.returncode == 0 and "OK: every call succeeded" in done.stdout,
          f"kitsd demo: {_last(done.stdout)}", seconds, output(done))

    done, seconds = user.kitsd("servers", "list")
    check(done.returncode == 0 and re.search(r"^etcd\s+installed: ", done.stdout, re.M)
          is not None, "kitsd servers list: " + "; ".join(
              " ".join(line.split()[:2]) for line in done.stdout.splitlines()), seconds,
          output(done))

    done, seconds = user.kitsd("servers", "install", "etcd")
    check(done.returncode == 0 and "etcd is installed" in done.stderr and seconds < 15,
          f"kitsd servers install etcd: {done.stderr.strip()!r}", seconds, output(done))

    done, seconds = user.kitsd("chaos", "--registry", "memory", "--duration", "5",
                               timeout=120)
    check(done.returncode == 0 and "OK: no call failed" in done.stdout,
          f"kitsd chaos --registry memory --duration 5: {_last(done.stdout)}", seconds,
          output(done))

    interrupt(user)
    import_time(user)

    done, seconds = user.run(user.python, "-c", "import kitsd; help(kitsd)")
    check(done.returncode == 0 and "kitsd.Transport(" in done.stdout
          and "kitsd demo" in done.stdout and "kitsd servers install" in done.stdout,
          f"python -c 'import kitsd; help(kitsd)': {len(done.stdout.splitlines())} lines",
          seconds, output(done))


def interrupt(user: User) -> None:
    """Ctrl-C in the middle of ``kitsd demo``: one line, exit 130, nothing left."""
    started = time.monotonic()
    process = subprocess.Popen(
        [str(user.bin / "kitsd"), "demo", "--requests", "1000000"], cwd=user.home,
        env=user.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        # as from a terminal, even when this proof runs in a background job (SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stdout = process.stdout
    if stdout is None:
        raise SystemExit("no pipe from kitsd demo")
    first = stdout.readline()  # its header
    deadline = time.monotonic() + 30  # then its 3 instances and 4 callers: mid-run
    while _threads(process.pid) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    lines = err.strip().splitlines()
    check(first.startswith("kitsd demo:") and process.returncode == 128 + signal.SIGINT
          and lines == ["kitsd demo: interrupted; everything it started is stopped"],
          f"Ctrl-C in kitsd demo: exit {process.returncode}, {lines}",
          time.monotonic() - started, f"exit {process.returncode}\n{first}{out}\n{err}")


def _threads(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next((line.split()[1] for line in status.splitlines()
                     if line.startswith("Threads:")), "0"))


def import_time(user: User) -> None:
    """The figure issue 15 asks for: ``import kitsd`` (and the transport's first use),
    median of 5 fresh interpreters.  Reported, never asserted."""
    code = ("import time; t0 = time.perf_counter(); import kitsd; t1 = time.perf_counter(); "
            "kitsd.Transport; t2 = time.perf_counter(); print(t1 - t0, t2 - t1)")
    runs = []
    for _ in range(5):
        done, _seconds = user.run(user.python, "-c", code)
        if done.returncode != 0:
            check(False, "import kitsd", 0.0, output(done))
            return
        runs.append(tuple(float(x) for x in done.stdout.split()))
    alone = statistics.median(r[0] for r in runs) * 1000
    transport = statistics.median(r[1] for r in runs) * 1000
    print(f"      import kitsd: {alone:.1f} ms; then kitsd.Transport: {transport:.0f} ms "
          "(median of 5 fresh interpreters)", flush=True)


#: A bad URL of each scheme, and a word its one-line error must hold.
BAD_URLS = [
    ("", "not an instancer URL"),
    ("users", "not an instancer URL"),
    ("http://users/", "unknown instancer URL scheme 'http'"),
    ("static://", "names no instances"),
    ("static://10.0.0.1", "no port"),
    ("static://10.0.0.1:S3CRET", "port is not a number"),
    ("etcd://127.0.0.1:2379", "key prefix"),
    ("etcd://127.0.0.1:S3CRET/services/", "port is not a number"),
    ("etcds://127.0.0.1:2379/services/", "ca="),
    ("consul://", "consul://127.0.0.1:8500/web: consul://"),
    ("consul://127.0.0.1:8500/users?bogus=S3CRET", "unknown consul:// URL parameter"),
    ("consul://token:S3CRET@127.0.0.1:8500/users", "KITSD_CONSUL_TOKEN"),
    ("dns://_users._tcp.example", "did you mean dnssrv://?"),
    ("dnssrv://", "names one SRV name"),
    ("dnssrv://_users._tcp.example?server=S3CRET", "server must be an IP address"),
    ("zk://127.0.0.1:2181", "absolute node path"),
    ("zk://user:S3CRET@127.0.0.1:2181/services", "KITSD_ZK_AUTH"),
    ("k8s://", "names a Service"),
    ("k8s:///users", "k8s:///users"),
]


def bad_urls(user: User) -> None:
    print("\n[watch] bad URLs of every scheme: one line, exit 2", flush=True)
    for url, says in BAD_URLS:
        done, seconds = user.kitsd("watch", url, "--count", "1", "--duration", "5")
        lines = done.stderr.strip().splitlines()
        check(done.returncode == 2 and len(lines) == 1 and lines[0].startswith("kitsd: ")
              and says in lines[0] and "S3CRET" not in done.stderr + done.stdout,
              f"kitsd watch {url!r}: {lines[0] if lines else '(nothing)'}", seconds,
              output(done))
    # a registry that fails before there is a watch: an etcd URL with credentials
    # authenticates when it connects
    url = f"etcd://user:S3CRET@127.0.0.1:{closed_port()}/services/users/"
    done, seconds = user.kitsd("watch", url, "--count", "1", "--duration", "5")
    lines = done.stderr.strip().splitlines()
    check(done.returncode == 1 and len(lines) == 1
          and lines[0].startswith("kitsd watch: the registry was never reached: ")
          and "S3CRET" not in done.stderr + done.stdout,
          f"kitsd watch etcd://user:***@<closed port>/…: {lines[0] if lines else ''}",
          seconds, output(done))


SERVERS = textwrap.dedent("""
    # The servers a newcomer starts with the wheel's own launchers: one etcd member with
    # one instance registered under /services/users/, and a Consul agent with none.
    import sys
    from kitsd import sd
    from kitsd.compose.consul import ConsulDevAgent
    from kitsd.compose.etcd import EtcdCluster

    with EtcdCluster(1) as cluster, ConsulDevAgent(name="newcomer") as consul:
        (etcd,) = cluster.members
        client = sd.etcd.connect(etcd.host, etcd.client_port)
        with sd.etcd.EtcdRegistrar(client, "/services/users/127.0.0.1:8080", "127.0.0.1:8080"):
            print(etcd.endpoint, consul.http_addr, flush=True)
            sys.stdin.read()  # until the proof closes it
        sd.etcd.close_client(client)
""")

CALL = textwrap.dedent("""
    import sys
    import httpx, kitsd
    try:
        httpx.Client(transport=kitsd.Transport(sys.argv[1])).get("http://users/")
    except Exception as error:
        print(type(error).__name__)
        print(str(error).splitlines()[0])
""")


@contextmanager
def servers(user: User) -> Iterator[tuple[str, str]]:
    (user.home / "servers.py").write_text(SERVERS)
    started = time.monotonic()
    process = subprocess.Popen([user.python, "servers.py"], cwd=user.home, env=user.env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    stdout, stdin = process.stdout, process.stdin
    if stdout is None or stdin is None:
        raise SystemExit("no pipes to the servers' process")
    try:
        line = stdout.readline().split()
        if not check(len(line) == 2, f"etcd and Consul started by the wheel's launchers "
                     f"({' '.join(line) or 'failed'})", time.monotonic() - started):
            raise SystemExit("cannot go on without the servers")
        yield line[0], line[1]
    finally:
        stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def against_servers(user: User) -> None:
    print("\n[registries] watch a real etcd; the errors a caller meets", flush=True)
    with servers(user) as (etcd, consul):
        url = f"etcd://{etcd}/services/users/"
        done, seconds = user.kitsd("watch", url, "--count", "1", "--duration", "30")
        check(done.returncode == 0 and len(done.stdout.splitlines()) == 1
              and done.stdout.rstrip().endswith("  1 instance: 127.0.0.1:8080"),
              f"kitsd watch {url} --count 1: {done.stdout.strip()!r}", seconds, output(done))

        read_end, write_end = os.pipe()
        os.close(read_end)  # `kitsd watch URL | head -1`: the reader has gone
        started = time.monotonic()
        piped = subprocess.run([str(user.bin / "kitsd"), "watch", url], stdout=write_end,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                               cwd=user.home, env=user.env, timeout=60, check=False)
        os.close(write_end)
        check(piped.returncode == 141 and piped.stderr == "",
              f"kitsd watch {url} | head -1: exit {piped.returncode}, stderr "
              f"{piped.stderr.strip()!r}", time.monotonic() - started,
              f"exit {piped.returncode}\n{piped.stderr}")

        closed = f"consul://127.0.0.1:{closed_port()}/{{service}}"
        done, seconds = user.run(user.python, "-c", CALL, closed)
        kind, _, first = done.stdout.partition("\n")
        first = first.strip()
        check(kind == "NoEndpointsError" and first.startswith(
            "no endpoints available for service 'users': the registry is unreachable: "
            f"{closed}: RegistryUnavailableError: ") and "cannot connect" in first,
            f"Transport({closed!r}), nothing listening: {kind}: {first}", seconds,
            output(done))

        up = f"consul://{consul}/{{service}}"
        done, seconds = user.run(user.python, "-c", CALL, up)
        kind, _, first = done.stdout.partition("\n")
        first = first.strip()
        check(kind == "NoEndpointsError" and first == (
            "no endpoints available for service 'users': the registry answered: "
            "no instances of 'users'"),
            f"Transport({up!r}), agent up, no instance: {kind}: {first}", seconds,
            output(done))


def readme(user: User, base: Path, wheel: Path, python: str) -> None:
    print("\n[readme] every Python block, each with only what its `# pip install` names",
          flush=True)
    wheelhouse = base / "wheelhouse"
    others = sorted({r for block in BLOCKS for r in block.requirements()
                     if r != "kitsd" and not r.startswith("kitsd[")})
    must([user.python, "-m", "pip", "wheel", "--disable-pip-version-check", "--wheel-dir",
          str(wheelhouse), f"{wheel}[all,testing]", *others],
         "the wheels of every requirement, once (from pip's cache)", cwd=base)
    envs = base / "envs"
    started = time.monotonic()
    names = sorted({block.venv for block in BLOCKS})
    for block in sorted(BLOCKS, key=lambda b: b.venv):
        target = envs / block.venv
        if target.exists():
            continue
        began = time.monotonic()
        subprocess.run([python, "-m", "venv", "--without-pip", str(target)],
                       check=True, timeout=120)
        requirements = [r.replace("kitsd", str(wheel), 1) if r.split("[")[0] == "kitsd" else r
                        for r in block.requirements()]
        done = subprocess.run(
            [user.python, "-m", "pip", "--disable-pip-version-check", "--python",
             str(target / "bin" / "python"), "install", "--no-index", "--find-links",
             str(wheelhouse), *requirements], capture_output=True, text=True, timeout=600,
            check=False)
        if not check(done.returncode == 0, f"environment {block.venv}: pip install "
                     f"{' '.join(block.requirements())}", time.monotonic() - began,
                     output(done)):
            return
    check(True, f"{len(names)} environments, one per distinct `# pip install` comment",
          time.monotonic() - started)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
           "PYTHONPATH": str(ROOT),  # the harness and its fixtures are the checkout's
           "KITSD_README_PYTHON": str(envs / "{venv}" / "bin" / "python")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE",
         "tests/test_readme.py", "-k", "test_readme_example_runs"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    summary = _last(done.stdout)
    check(done.returncode == 0 and f"{len(BLOCKS)} passed" in summary,
          f"README.md's {len(BLOCKS)} Python blocks, each in its environment: {summary}",
          time.monotonic() - started, output(done))


USER_TESTS = textwrap.dedent('''
    """A newcomer's own tests on kitsd's pytest plugin (found through its entry point)."""
    import httpx
    import pytest

    import kitsd
    from kitsd import sd


    def test_an_etcd_registration_is_discovered(kitsd_etcd):
        etcd = sd.etcd.connect(kitsd_etcd.host, kitsd_etcd.client_port)
        try:
            with sd.etcd.EtcdRegistrar(etcd, "/services/orders/127.0.0.1:9000",
                                       "127.0.0.1:9000"), \\
                    sd.etcd.EtcdInstancer(etcd, "/services/orders/") as instancer:
                assert instancer.state.instances == ("127.0.0.1:9000",)
        finally:
            sd.etcd.close_client(etcd)


    def test_a_consul_registration_is_discovered(kitsd_consul):
        consul = sd.consul.connect(kitsd_consul.http_addr)
        with sd.consul.ConsulRegistrar(consul, "orders", "127.0.0.1", 9000), \\
                sd.consul.ConsulInstancer(consul, "orders") as instancer:
            assert instancer.state.instances == ("127.0.0.1:9000",)


    def test_a_call_through_the_memory_registry(kitsd_memory_registry):
        kitsd_memory_registry.registrar("users", "127.0.0.1:8080").register()
        seen = []

        def users(request):
            seen.append(request.url.netloc.decode())
            return httpx.Response(200, json={"id": 42})

        transport = kitsd.Transport(kitsd_memory_registry, transport=httpx.MockTransport(users))
        with httpx.Client(transport=transport, base_url="http://users") as client:
            assert client.get("/profile/42").json() == {"id": 42}
        assert seen == ["127.0.0.1:8080"]


    def test_a_killed_etcd_is_an_unreachable_registry(kitsd_etcd, kitsd_faults):
        kitsd_faults.kill(kitsd_etcd)          # restarted after the test
        template = f"etcd://{kitsd_etcd.endpoint}/services/{{service}}/"
        with httpx.Client(transport=kitsd.Transport(template)) as client:
            with pytest.raises(kitsd.lb.NoEndpointsError, match="the registry is unreachable"):
                client.get("http://users/", timeout=10)


    def test_the_killed_etcd_serves_again(kitsd_etcd):
        assert kitsd_etcd.running
        etcd = sd.etcd.connect(kitsd_etcd.host, kitsd_etcd.client_port)
        try:
            with sd.etcd.EtcdInstancer(etcd, "/services/orders/") as instancer:
                assert instancer.state.error is None
        finally:
            sd.etcd.close_client(etcd)
''')


def plugin(user: User) -> None:
    print("\n[plugin] a user's test file on the plugin's fixtures", flush=True)
    tests = user.home / "my_tests"
    tests.mkdir()
    (tests / "test_with_kitsd.py").write_text(USER_TESTS)
    done, seconds = user.run(user.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "test_with_kitsd.py", timeout=600, cwd=tests)
    summary = _last(done.stdout)
    check(done.returncode == 0 and "5 passed" in summary,
          f"pytest test_with_kitsd.py (kitsd_etcd, kitsd_consul, kitsd_faults, "
          f"kitsd_memory_registry): {summary}", seconds, output(done))


def _last(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(nothing)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter that builds the wheel and the environment")
    parser.add_argument("--keep", default=None, help="work in this directory and keep it")
    args = parser.parse_args()
    base = Path(args.keep or tempfile.mkdtemp(prefix="kitsd-newcomer-")).absolute()
    if base.is_relative_to(ROOT):
        parser.error("--keep must be outside the repository")
    base.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        wheel, version = build(base, args.python)
        user = install(base, args.python, wheel)  # every command runs in base/home
        commands(user, version)
        bad_urls(user)
        against_servers(user)
        plugin(user)
        readme(user, base, wheel, args.python)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    total = time.monotonic() - started
    print(f"\n{'ALL HOLD' if not failures else f'{len(failures)} FAILED'} "
          f"in {total:.0f}s", flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
