#!/usr/bin/env python3
"""Write the sync twin of each asyncio module that differs from it only by
``async``/``await`` and names (httpcore's ``scripts/unasync.py``, token-based).

    python .ci/unasync.py            # (re)write every sync twin listed in PAIRS
    python .ci/unasync.py --check    # exit 1 naming each twin that differs from what
                                     # its source generates (a hand edit, or a stale twin)

The asyncio module is the one written by hand; its twin is generated, starts with
a comment saying so, and is checked in (so that it is read, imported, type-checked
and linted like any module).  The rewrite works on Python tokens, never on text
matching, so nothing inside a string or a longer name is touched by accident:

* ``async def`` / ``async with`` / ``async for`` lose ``async``; ``await x`` is ``x``;
* a name in :data:`NAMES` (or in the pair's own table) becomes its sync name
  wherever it stands as a whole token: a name, an attribute (``x.aclose``), a
  keyword argument, a dotted module path (``kitsd.lb._async.retry``);
* inside strings and comments, the same names are rewritten as whole words, so
  docstrings name the sync classes; the words ``async``/``await`` in prose stay.

Differences that are not of that kind (threads against tasks, how a deadline
interrupts a call) do not belong in a generated pair: they live in hand-written
pairs of primitives (``lb/_concurrency.py``) that the source imports by their
asyncio names and its twin by their sync names.

To generate another twin, add a row to :data:`PAIRS` (paths from the repository
root) and the names it needs to :data:`NAMES` (or to the row's own table).  The
twin is linted like the source: pick names whose sync forms sort as the asyncio
ones do in an import list (``AsyncGuarded``/``Guarded`` before ``Req``), or ruff's
import sorting will ask for an order the rewrite does not produce.
"""

from __future__ import annotations

import argparse
import difflib
import io
import re
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Names rewritten in every pair: the asyncio name, then the sync one.
NAMES: dict[str, str] = {
    # packages of generated modules
    "_async": "_sync",
    # kitsd.core.endpoint
    "AsyncEndpoint": "Endpoint",
    # lb/_concurrency.py: the hand-written primitives
    "AsyncCallDeadlines": "CallDeadlines",
    "AsyncRace": "Race",
    "async_sleep": "sleep",
    # lb/_async -> lb/_sync
    "retrying_async": "retrying",
    "AsyncHedgedEndpoint": "HedgedEndpoint",
    # breaker/_async -> breaker/_sync
    "AsyncBreakerEndpoint": "SyncBreakerEndpoint",
    # dunder and close methods
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aclose": "close",
}

#: (asyncio source, generated sync twin, names of this pair only).
PAIRS: list[tuple[str, str, dict[str, str]]] = [
    ("lb/_async/retry.py", "lb/_sync/retry.py", {}),
    ("lb/_async/hedging.py", "lb/_sync/hedging.py", {}),
    ("lb/_async/measured.py", "lb/_sync/measured.py",
     {"AsyncCounted": "SyncCounted", "AsyncTimed": "SyncTimed"}),
    ("breaker/_async/endpoint.py", "breaker/_sync/endpoint.py",
     {"AsyncGuarded": "Guarded"}),
    ("sd/http/_async/deadline.py", "sd/http/_sync/deadline.py",
     {"AsyncDeadlineStream": "DeadlineStream", "AsyncDeadlineBackend": "DeadlineBackend",
      "install_async": "install", "AsyncNetworkStream": "NetworkStream",
      "AsyncNetworkBackend": "NetworkBackend", "AsyncConnectionPool": "ConnectionPool",
      "AsyncHTTPTransport": "HTTPTransport"}),
    ("sd/http/_async/endpoint.py", "sd/http/_sync/endpoint.py",
     {"AsyncHTTPEndpoint": "HTTPEndpoint", "AsyncClient": "Client", "async_client": "client",
      "async_factory": "factory", "async_close_client": "close_client",
      "async_running_loop": "running_loop", "ASYNC_CLIENTS": "SYNC_CLIENTS"}),
    ("kitsd/transport/_async/transport.py", "kitsd/transport/_sync/transport.py",
     {"AsyncTransport": "Transport", "AsyncInstanceEndpoint": "InstanceEndpoint",
      "AsyncSender": "Sender", "aread": "read",
      "AsyncBaseTransport": "BaseTransport", "AsyncHTTPTransport": "HTTPTransport",
      "AsyncClient": "Client", "install_async": "install", "retry_async": "retry",
      "handle_async_request": "handle_request", "wait_answer_async": "wait_answer",
      "async_build_stack": "build_stack", "async_result": "result",
      "AsyncHealthCheckers": "HealthCheckers"}),
]

HEADER = (
    "# Generated from {source} by .ci/unasync.py: do not edit.\n"
    "# Edit the source and run `python .ci/unasync.py`; `python .ci/unasync.py --check`\n"
    "# fails on a hand edit.\n"
)

_BLOCK_KEYWORDS = frozenset({"def", "with", "for"})
_SKIP = frozenset({tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT,
                   tokenize.DEDENT})


def _words(names: dict[str, str]) -> re.Pattern[str]:
    alternatives = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def unasync(text: str, names: dict[str, str]) -> str:
    """The sync twin of the asyncio module ``text`` (see the module docstring)."""
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def at(position: tuple[int, int]) -> int:
        return offsets[position[0] - 1] + position[1]

    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    words = _words(names)
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in `text`
    for index, token in enumerate(tokens):
        start, end = at(token.start), at(token.end)
        if token.type == tokenize.NAME:
            following = next((t for t in tokens[index + 1:] if t.type not in _SKIP), None)
            if token.string == "await" or (
                token.string == "async" and following is not None
                and following.string in _BLOCK_KEYWORDS
            ):
                # drop the keyword and the blanks after it
                stop = end
                while stop < len(text) and text[stop] in " \t":
                    stop += 1
                edits.append((start, stop, ""))
            elif token.string in names:
                edits.append((start, end, names[token.string]))
        elif token.type in (tokenize.STRING, tokenize.COMMENT):
            rewritten = words.sub(lambda match: names[match.group(0)], token.string)
            if rewritten != token.string:
                edits.append((start, end, rewritten))
    out: list[str] = []
    cursor = 0
    for start, end, replacement in edits:
        out.append(text[cursor:start])
        out.append(replacement)
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def generate(source: str, names: dict[str, str]) -> str:
    """The whole generated twin of the repository file ``source``: header and body."""
    path = ROOT / source
    if not path.is_file():
        raise SystemExit(f"unasync: the asyncio source {source} (listed in PAIRS) is missing")
    text = path.read_text(encoding="utf-8")
    return HEADER.format(source=source) + unasync(text, {**NAMES, **names})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a twin differs from its source's")
    options = parser.parse_args(argv)
    stale: list[str] = []
    for source, target, names in PAIRS:
        wanted = generate(source, names)
        path = ROOT / target
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == wanted:
            continue
        if options.check:
            stale.append(target)
            diff = difflib.unified_diff(
                (current or "").splitlines(keepends=True), wanted.splitlines(keepends=True),
                f"{target} (as checked in)", f"{target} (as {source} generates it)")
            sys.stderr.writelines(list(diff)[:60])
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(wanted, encoding="utf-8")
            print(f"wrote {target} from {source}")
    if stale:
        print(f"unasync: {len(stale)} generated file(s) differ from their asyncio source: "
              f"{', '.join(stale)}.  Edit the source, not the twin, and run "
              "`python .ci/unasync.py`.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
