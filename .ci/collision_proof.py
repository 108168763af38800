#!/usr/bin/env python3
"""Proof that kitsd lives beside the distributions whose top-level names it used to take.

Until the move to one import name, kitsd's wheel installed ``sd``, ``lb``, ``breaker`` and
``compose`` next to ``kitsd``: installed after docker-compose 1.29.2 it broke
``docker-compose version``, uninstalling it deleted docker-compose's files, and ``lb``
0.0.5 or ``breaker`` 2.0.1 broke ``kitsd demo``.  This script builds kitsd's wheel from
this checkout and, in fresh virtual environments (needs the package index):

1. baseline: the four others (docker-compose 1.29.2, compose 1.6.2, lb 0.0.5, breaker
   2.0.1) alone; each one's probe is recorded;
2. the same environment, kitsd installed after them; and a second environment with kitsd
   installed first and the four after it;
3. in both: every file of every distribution still matches its RECORD hash, each of the
   four answers its probe exactly as in the baseline, and kitsd works (``kitsd demo``,
   ``from kitsd import sd, lb, breaker``, ``kitsd --version``);
4. ``pip uninstall kitsd`` in both: the four's files and probes are unchanged, and no
   ``kitsd`` is left.

The four have problems of their own, unrelated to kitsd, which the probes take as they
are: docker-compose's ``compose/`` package and compose 1.6.2's ``compose.py`` shadow one
another (so compose 1.6.2 is probed by loading its file, and in a third environment with
kitsd and compose 1.6.2 alone by importing it); ``import breaker`` fails without kitsd
too (breaker 2.0.1 needs a ``utKit`` it does not declare), so its probe is that it fails
the same way and that ``breaker`` resolves to its own files; PyYAML is held below 6 for
docker-compose; HMpTy (a dependency of breaker) needs numpy and pandas before it builds.

Run: ``python .ci/collision_proof.py [--python python3.11] [--keep DIR]``; exit 0 when
everything holds.  It prints one line per check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OTHERS = ["docker-compose==1.29.2", "compose==1.6.2", "lb==0.0.5", "breaker==2.0.1"]
DISTRIBUTIONS = ["docker-compose", "compose", "lb", "breaker"]

# Each probe prints what the distribution does; compared with the baseline verbatim.
PROBES = {
    "docker-compose": ["{bin}/docker-compose", "version", "--short"],
    "compose": ["{python}", "-c", textwrap.dedent("""
        import importlib.util, sysconfig, os
        path = os.path.join(sysconfig.get_paths()["purelib"], "compose.py")
        spec = importlib.util.spec_from_file_location("compose_1_6", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(module.__version__, module.compose(str, len)("abc"))
        """)],
    "lb": ["{python}", "-c",
           "import lb; print(lb.__file__.split('site-packages')[1], lb.__author__, "
           "lb.get_environment_variable.__module__)"],
    "breaker": ["{python}", "-c", textwrap.dedent("""
        import importlib.util
        print(importlib.util.find_spec("breaker").origin.split("site-packages")[1])
        try:
            import breaker
        except Exception as error:
            print(type(error).__name__, error)
        else:
            print("imported", breaker.__file__.split("site-packages")[1])
        """)],
}

VERIFY = textwrap.dedent("""
    import base64, hashlib, json, sys
    from importlib import metadata
    out = {}
    for name in sys.argv[1:]:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            out[name] = None
            continue
        bad, checked = [], 0
        for file in dist.files or ():
            if file.hash is None:
                continue
            path = file.locate()
            try:
                data = path.read_bytes()
            except OSError:
                bad.append(f"missing {file}")
                continue
            digest = base64.urlsafe_b64encode(hashlib.new(file.hash.mode, data).digest())
            if digest.rstrip(b"=").decode() != file.hash.value:
                bad.append(f"changed {file}")
            checked += 1
        out[name] = {"version": dist.version, "checked": checked, "bad": bad}
    print(json.dumps(out))
""")

failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {what}", flush=True)
    if not ok:
        failures.append(what)


#: Every command runs here: outside the checkout, whose sd/, lb/, breaker/ and kitsd/
#: would otherwise be found first on the path of ``python -c``.
NEUTRAL = Path(tempfile.gettempdir())


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False,
                          timeout=1800, cwd=NEUTRAL)


def must(command: list[str], what: str) -> str:
    done = run(command)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    return done.stdout


class Venv:
    def __init__(self, base: Path, name: str, python: str) -> None:
        self.path = base / name
        must([python, "-m", "venv", str(self.path)], f"venv {name}")
        self.bin = self.path / "bin"
        self.python = str(self.bin / "python")
        self.pip(["install", "--upgrade", "pip", "setuptools", "wheel"])

    def pip(self, args: list[str]) -> str:
        return must([self.python, "-m", "pip", "--disable-pip-version-check", *args],
                    f"pip {' '.join(args)}")

    def install_others(self, constraints: Path, build_constraints: Path) -> None:
        # HMpTy (breaker's) imports numpy and pandas in its setup.py
        self.pip(["install", "-c", str(constraints), "numpy", "pandas"])
        self.pip(["install", "-c", str(constraints), "--build-constraint",
                  str(build_constraints), *OTHERS[:3]])
        self.pip(["install", "-c", str(constraints), "--no-build-isolation", OTHERS[3]])

    def probe(self, name: str) -> str:
        command = [part.format(bin=self.bin, python=self.python) for part in PROBES[name]]
        done = run(command)
        return f"rc={done.returncode} {done.stdout.strip()} {done.stderr.strip()[-300:]}"

    def verify(self, names: list[str]) -> dict[str, dict[str, object] | None]:
        result: dict[str, dict[str, object] | None] = json.loads(
            must([self.python, "-c", VERIFY, *names], "verify RECORDs"))
        return result

    def kitsd_works(self, label: str) -> None:
        demo = run([str(self.bin / "kitsd"), "demo", "--requests", "300"])
        check(demo.returncode == 0 and "OK: every call succeeded" in demo.stdout,
              f"{label}: kitsd demo succeeds")
        names = run([self.python, "-c",
                     "from kitsd import sd, lb, breaker; import kitsd.compose.etcd; "
                     "print(lb.RoundRobin.__module__, breaker.circuit_breaker.__module__, "
                     "sd.Endpointer.__module__)"])
        modules = names.stdout.split()
        check(names.returncode == 0 and len(modules) == 3
              and all(m.startswith("kitsd.") for m in modules),
              f"{label}: from kitsd import sd, lb, breaker gives kitsd's "
              f"({names.stdout.strip()}{names.stderr.strip()[-200:]})")
        version = run([str(self.bin / "kitsd"), "--version"])
        check(version.returncode == 0 and version.stdout.startswith("kitsd "),
              f"{label}: kitsd --version ({version.stdout.strip()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--keep", default=None, help="work here and keep it")
    args = parser.parse_args()
    global NEUTRAL
    base = Path(args.keep or tempfile.mkdtemp(prefix="kitsd-collision-")).absolute()
    base.mkdir(parents=True, exist_ok=True)
    NEUTRAL = base
    try:
        return prove(base, args.python)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def prove(base: Path, python: str) -> int:
    constraints = base / "constraints.txt"
    constraints.write_text("PyYAML<6\n")  # docker-compose 1.29.2 requires it
    build_constraints = base / "build-constraints.txt"
    build_constraints.write_text("cython<3\n")  # PyYAML 5.4.1 does not build with Cython 3

    wheels = base / "wheels"
    source = base / "source"  # a copy: building writes kitsd.egg-info into the tree
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))
    must([python, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(source)],
         "building kitsd's wheel")
    (wheel,) = wheels.glob("kitsd-*.whl")
    print(f"kitsd wheel: {wheel.name}", flush=True)

    print("\n[1] baseline: the four alone", flush=True)
    after = Venv(base, "others-then-kitsd", python)
    after.install_others(constraints, build_constraints)
    baseline = {name: after.probe(name) for name in DISTRIBUTIONS}
    records = after.verify(DISTRIBUTIONS)
    for name in DISTRIBUTIONS:
        print(f"      {name}: {records[name]}; probe: {baseline[name]}", flush=True)
    check(baseline["docker-compose"].startswith("rc=0 1.29.2"),
          "baseline: docker-compose version works")

    print("\n[2] kitsd after the four; a second environment with kitsd first", flush=True)
    after.pip(["install", "-c", str(constraints), str(wheel)])
    first = Venv(base, "kitsd-then-others", python)
    first.pip(["install", "-c", str(constraints), str(wheel)])
    first.install_others(constraints, build_constraints)

    for venv, label in ((after, "kitsd installed last"), (first, "kitsd installed first")):
        print(f"\n[3] {label}", flush=True)
        top = run([venv.python, "-c", "from importlib import metadata; "
                   "print(metadata.distribution('kitsd').read_text('top_level.txt') or '')"])
        files = run([venv.python, "-c", "from importlib import metadata; "
                     "print(sorted({str(f).split('/')[0] for f in "
                     "metadata.distribution('kitsd').files if not str(f).startswith('..')}))"])
        dist_info = wheel.name.split("-py")[0] + ".dist-info"
        check(files.stdout.strip() == str(["kitsd", dist_info]),
              f"{label}: in site-packages kitsd installs kitsd/ and {dist_info} only "
              f"({files.stdout.strip()}; top_level.txt: {top.stdout.strip() or '-'}; "
              "and bin/kitsd)")
        verified = venv.verify([*DISTRIBUTIONS, "kitsd"])
        for name in [*DISTRIBUTIONS, "kitsd"]:
            entry = verified[name]
            check(entry is not None and not entry["bad"],
                  f"{label}: every file of {name} matches its RECORD ({entry})")
        for name in DISTRIBUTIONS:
            got = venv.probe(name)
            check(got == baseline[name], f"{label}: {name} behaves as without kitsd: {got}")
        venv.kitsd_works(label)

        print(f"\n[4] {label}, then pip uninstall kitsd", flush=True)
        venv.pip(["uninstall", "-y", "kitsd"])
        verified = venv.verify([*DISTRIBUTIONS, "kitsd"])
        check(verified["kitsd"] is None, f"{label}: kitsd is gone")
        for name in DISTRIBUTIONS:
            entry = verified[name]
            check(entry is not None and not entry["bad"],
                  f"{label}, kitsd uninstalled: every file of {name} is intact ({entry})")
            got = venv.probe(name)
            check(got == baseline[name], f"{label}, kitsd uninstalled: {name} still: {got}")
        gone = run([venv.python, "-c", "import kitsd"])
        check(gone.returncode != 0, f"{label}, kitsd uninstalled: import kitsd fails")

    print("\n[5] compose 1.6.2 without docker-compose (they shadow each other): imported",
          flush=True)
    alone = Venv(base, "kitsd-and-compose", python)
    alone.pip(["install", str(wheel), "compose==1.6.2"])
    imported = run([alone.python, "-c", "import compose; print(compose.__version__, "
                    "compose.compose(str, len)('abc'), compose.__file__.endswith('compose.py'))"])
    check(imported.stdout.strip() == "1.6.2 3 True",
          f"kitsd beside compose 1.6.2: import compose works ({imported.stdout.strip()})")
    alone.kitsd_works("kitsd beside compose 1.6.2")

    print(f"\n{'ALL HOLD' if not failures else f'{len(failures)} FAILED'}", flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    os.environ.pop("PYTHONPATH", None)  # the environments' own packages, not a checkout's
    sys.exit(main())
