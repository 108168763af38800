"""Instructions executed by a benchmark's own process, counted by valgrind's callgrind:
a figure that the load of other processes does not move (wall and CPU time on a
shared 2-core machine do, by ±20 % between runs).

A benchmark run with ``--instructions`` re-runs itself under
``valgrind --tool=callgrind --instr-atstart=no`` (:func:`run`): nothing is counted
until the child calls :meth:`Marks.start` around the calls it measures and
:meth:`Marks.stop` with a label after them, which dumps the count.  The marks are
callgrind's client requests (``valgrind/callgrind.h``), compiled on first use into a
tiny shared library cached like :mod:`bench.backend`'s binary and called through
``ctypes``.  Valgrind runs the child ~50x slower: keep its call counts small.
Kernel work (the system calls themselves) is not counted, only user space.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_SOURCE = """
#include <valgrind/callgrind.h>
void kitsd_cg_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void kitsd_cg_stop(const char *label) {
    CALLGRIND_DUMP_STATS_AT(label); CALLGRIND_STOP_INSTRUMENTATION; }
"""

#: The environment variable that tells a child it runs under callgrind.
ENV = "KITSD_BENCH_CALLGRIND"


def unavailable() -> str | None:
    """Why instructions cannot be counted here, or ``None`` if they can."""
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (apt-get install valgrind)"
    if not Path("/usr/include/valgrind/callgrind.h").exists():
        return "valgrind/callgrind.h is missing (apt-get install valgrind)"
    if shutil.which("cc") is None:
        return "no C compiler to build the callgrind marks"
    return None


def _library() -> Path:
    digest = hashlib.sha256(_SOURCE.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("KITSD_CACHE") or Path.home() / ".cache" / "kitsd")
    target = cache / f"callgrind-marks-{digest}" / "libmarks.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as work:
            source = Path(work) / "marks.c"
            source.write_text(_SOURCE)
            partial = target.with_suffix(".tmp")
            subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(partial),  # noqa: S603,S607
                            str(source)], check=True, capture_output=True)
            partial.replace(target)
    return target


class Marks:
    """Start and stop counting from inside the child (no-ops outside callgrind)."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(str(_library())) if os.environ.get(ENV) else None

    def start(self) -> None:
        if self._lib is not None:
            self._lib.kitsd_cg_start()

    def stop(self, label: str) -> None:
        if self._lib is not None:
            self._lib.kitsd_cg_stop(label.encode())


def run(argv: list[str]) -> dict[str, int]:
    """Run ``python argv...`` under callgrind; instructions per label it marked."""
    _library()  # built here, not under valgrind
    with tempfile.TemporaryDirectory(prefix="kitsd-callgrind-") as work:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={work}/out.%p", sys.executable, *argv]
        done = subprocess.run(command, check=False, env={**os.environ, ENV: "1"},  # noqa: S603
                              stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.splitlines()[-20:])
            raise RuntimeError(f"the callgrind run failed ({done.returncode}):\n{tail}")
        counts: dict[str, int] = {}
        for path in Path(work).iterdir():
            text = path.read_text(errors="replace")
            label = re.search(r"^desc: Trigger: Client Request: (.*)$", text, re.MULTILINE)
            total = re.search(r"^totals: (\d+)", text, re.MULTILINE)
            if label and total:
                counts[label.group(1)] = int(total.group(1))
        return counts
