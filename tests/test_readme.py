"""Every Python example in README.md runs, as a file of its own, in a fresh interpreter.

For everyone who writes a README section (read this before adding a block):

* Every fenced block whose info string starts with ``python`` is a test here, named
  after its line and section (``pytest tests/test_readme.py -k serving`` runs a
  section's).  It is written to a file and run with ``python FILE`` from an empty
  directory, as a reader who copies it would, and must exit 0 within
  :data:`TIMEOUT` seconds.  So each block is a complete program: its own imports, no
  name from another block, no top-level ``await`` (use ``asyncio.run``), and it stops
  what it starts (a thread or server left running keeps the process alive).
* Each block says in a comment what a reader installs to run it, kitsd and its extras
  and anything else it imports: ``# pip install 'kitsd[grpc]'``, ``# pip install
  kitsd``, ``# pip install 'kitsd[serve,consul]' starlette``.  This test run has every
  extra; ``.ci/newcomer_proof.py`` runs each block in a virtual environment holding
  the wheel with only what its comment names.
* Servers: a block that names one of the addresses of :data:`SERVERS`
  (``127.0.0.1:8500``, or ``"127.0.0.1", 8500`` as separate host and port) gets that
  server for real: a session fixture starts it on a free port and the block is run
  with the address rewritten to it.  ``127.0.0.1:8080`` is a local HTTP instance that
  answers every ``GET`` with JSON ``{"instance": "host:port", "path": "/..."}``.  A new
  kind of server is one row in :data:`SERVERS` (the fixture that starts it, and the
  server ``kitsd servers install`` installs for it).  A test file using one of the
  plugin's server fixtures (:data:`PLUGIN_FIXTURES`) gets its server installed too.
* A block that defines ``test_`` functions is a user's test file: it is run with
  ``python -m pytest`` and kitsd's pytest plugin, and every test in it must pass.
* A fragment that cannot run (a configuration excerpt, a signature) is not a Python
  example: fence it as ``text``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIMEOUT = 180.0
"""Seconds a block may run (one that starts a 3-server cluster takes ~20 s)."""


@dataclass(frozen=True)
class Provided:
    """A server the README's blocks may name: the fixture that gives its ``host:port``,
    and what ``kitsd servers install`` installs for it (``None``: nothing)."""

    fixture: str
    server: str | None
    what: str


#: The addresses a block may name, by their usual port.
SERVERS: dict[str, Provided] = {
    "127.0.0.1:8500": Provided("readme_consul_http", "consul", "a Consul agent (-dev)"),
    "127.0.0.1:8600": Provided("readme_consul_dns", "consul",
                               "the same Consul agent's DNS interface"),
    "127.0.0.1:2379": Provided("readme_etcd", "etcd", "an etcd member"),
    "127.0.0.1:2181": Provided("readme_zookeeper", "zookeeper", "a ZooKeeper server"),
    "127.0.0.1:8080": Provided("readme_http", None,
                               "a local HTTP instance answering GET with JSON"),
}

#: The pytest plugin's fixtures that start a server, and the server each needs.
PLUGIN_FIXTURES: dict[str, str] = {
    "kitsd_etcd": "etcd", "kitsd_etcd_cluster": "etcd", "kitsd_consul": "consul",
    "kitsd_consul_cluster": "consul", "kitsd_kube": "kube-apiserver",
}

_ADDRESS = re.compile(r"127\.0\.0\.1(?P<sep>:|[\"'],\s*)(?P<port>\d+)\b")
# `pip install` and what follows it: quoted or bare requirements, one space apart
_INSTALL = re.compile(r"pip install((?: (?:'[^']+'|[A-Za-z0-9][A-Za-z0-9._\[\],<>=!~-]*))+)")
_REQUIREMENT = re.compile(r"'([^']+)'|(\S+)")


@dataclass(frozen=True)
class Block:
    line: int
    section: str
    code: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        return f"line{self.line}-{slug}"

    def servers(self) -> list[str]:
        """The :data:`SERVERS` addresses this block names, in order of first use."""
        named = [f"127.0.0.1:{m['port']}" for m in _ADDRESS.finditer(self.code)]
        return list(dict.fromkeys(a for a in named if a in SERVERS))

    def plugin_servers(self) -> list[str]:
        """The servers the plugin's fixtures this test file uses start."""
        if not self.is_test_file():
            return []
        tree = ast.parse(self.code)
        used = {arg.arg for node in tree.body
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name.startswith("test_") for arg in node.args.args}
        return sorted({PLUGIN_FIXTURES[name] for name in used & PLUGIN_FIXTURES.keys()})

    def requirements(self) -> tuple[str, ...]:
        """What its ``pip install`` comment names, normalised (``kitsd[consul,serve]``,
        extras sorted); ``()`` when it names nothing."""
        for line in self.code.splitlines():
            comment = line.partition("#")[2]
            match = _INSTALL.search(comment)
            if match is None:
                continue
            found = []
            for quoted, bare in _REQUIREMENT.findall(match.group(1)):
                requirement = (quoted or bare).strip().lower()
                name, bracket, extras = requirement.partition("[")
                if bracket:
                    extras = ",".join(sorted(e.strip() for e in extras.rstrip("]").split(",")))
                    requirement = f"{name}[{extras}]"
                found.append(requirement)
            return tuple(found)
        return ()

    @property
    def venv(self) -> str:
        """A name for the environment holding its :meth:`requirements` (blocks that
        need the same share one)."""
        return re.sub(r"[^a-z0-9]+", "-", "+".join(sorted(self.requirements()))).strip("-")

    def is_test_file(self) -> bool:
        tree = ast.parse(self.code)
        return any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                   and node.name.startswith("test_") for node in tree.body)


def blocks(text: str) -> list[Block]:
    """The README's Python blocks, with the line each starts on and its section."""
    found: list[Block] = []
    section = ""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if re.match(r"^#{1,6} ", line):  # a heading (fenced lines are skipped below)
            section = line.lstrip("#").strip()
        fence = re.match(r"^(`{3,}|~{3,})\s*(\S*)", line)
        if fence:
            marker, language = fence.group(1), fence.group(2)
            end = next(i for i in range(index + 1, len(lines))
                       if lines[i].startswith(marker[0] * len(marker)))
            if language.split(",")[0] == "python":
                found.append(Block(index + 2, section, "\n".join(lines[index + 1:end]) + "\n"))
            index = end
        index += 1
    return found


def rewrite(code: str, addresses: dict[str, str]) -> str:
    """``code`` with each named address replaced by the real server's ``host:port``."""
    def replace(match: re.Match[str]) -> str:
        address = f"127.0.0.1:{match['port']}"
        if address not in addresses:
            return match.group(0)
        host, port = addresses[address].rsplit(":", 1)
        separator = match["sep"]
        if separator == ":":
            return f"{host}:{port}"
        return f"{host}{separator}{port}"
    return _ADDRESS.sub(replace, code)


BLOCKS = blocks(README.read_text())


def _param(block: Block) -> Any:
    servers = [SERVERS[a].server for a in block.servers() if SERVERS[a].server]
    servers += block.plugin_servers()
    marks = [pytest.mark.integration, pytest.mark.kitsd_servers(*servers)] if servers else []
    return pytest.param(block, id=block.id, marks=marks)


# --- the servers -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _readme_consul() -> Iterator[Any]:
    from kitsd.compose.consul import ConsulDevAgent

    with ConsulDevAgent(name="kitsd-readme", dns=True) as agent:
        yield agent


@pytest.fixture(scope="session")
def readme_consul_http(_readme_consul: Any) -> str:
    return str(_readme_consul.http_addr)


@pytest.fixture(scope="session")
def readme_consul_dns(_readme_consul: Any) -> str:
    return str(_readme_consul.dns_addr)


@pytest.fixture(scope="session")
def readme_etcd(kitsd_etcd: Any) -> str:
    return str(kitsd_etcd.endpoint)


@pytest.fixture(scope="session")
def readme_zookeeper() -> Iterator[str]:
    from kitsd.compose.zookeeper import standalone

    with standalone() as server:
        yield server.address


@pytest.fixture(scope="session")
def readme_http() -> Iterator[str]:
    from kitsd.demo_server import DemoInstance

    instance = DemoInstance()
    try:
        yield instance.instance
    finally:
        instance.kill()


# --- the tests ---------------------------------------------------------------------------

# A user's conftest: the plugin comes from its pytest11 entry point once kitsd is installed;
# a checkout whose installed metadata predates the entry point registers it by hand.
_PLUGIN_CONFTEST = textwrap.dedent(
    """
    import kitsd.pytest_plugin

    def pytest_configure(config):
        manager = config.pluginmanager
        if not manager.has_plugin("kitsd") and not manager.is_registered(kitsd.pytest_plugin):
            manager.register(kitsd.pytest_plugin, "kitsd")
    """
)


PYTHON_ENV = "KITSD_README_PYTHON"
"""Set to an interpreter (``/tmp/venv/bin/python``): the blocks run with it and the
kitsd installed in it (from a wheel), not with this checkout: no ``PYTHONPATH``, no
conftest (its pytest finds the plugin through the installed entry point).  ``{venv}``
in it is each block's :attr:`Block.venv` (``/tmp/envs/{venv}/bin/python``: each block
in an environment of its own requirements).  The servers are still started here.
``.ci/newcomer_proof.py`` runs the blocks so."""


def interpreter(block: Block) -> tuple[str, bool]:
    """The Python that runs ``block``, and whether it is this checkout's (see
    :data:`PYTHON_ENV`)."""
    other = os.environ.get(PYTHON_ENV, "").strip()
    if not other:
        return sys.executable, True
    return other.replace("{venv}", block.venv), False


def run_block(block: Block, addresses: dict[str, str], workdir: Path) -> None:
    """Run ``block`` (rewritten for ``addresses``) as a reader would; fail with its output."""
    code = rewrite(block.code, addresses)
    python, checkout = interpreter(block)
    env = dict(os.environ)
    env.pop(PYTHON_ENV, None)
    if checkout:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    else:  # the installed kitsd only
        env.pop("PYTHONPATH", None)
    if block.is_test_file():
        if checkout:
            (workdir / "conftest.py").write_text(_PLUGIN_CONFTEST)
        (workdir / "test_example.py").write_text(code)
        command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"]
    else:
        (workdir / "example.py").write_text(code)
        command = [python, "example.py"]
    try:
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"README line {block.line} ({block.section}) did not finish in "
                    f"{TIMEOUT:g}s (a thread or server left running?)\n"
                    f"{_text(expired.stdout)}\n{_text(expired.stderr)}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"README line {block.line} ({block.section}) exited {done.returncode}\n"
                    f"--- the block, as run ---\n{code}\n--- stdout ---\n{done.stdout}\n"
                    f"--- stderr ---\n{done.stderr}", pytrace=False)


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


@pytest.mark.parametrize("block", [_param(block) for block in BLOCKS])
def test_readme_example_runs(block: Block, request: pytest.FixtureRequest,
                             tmp_path: Path) -> None:
    addresses = {address: request.getfixturevalue(SERVERS[address].fixture)
                 for address in block.servers()}
    run_block(block, addresses, tmp_path)


# --- the harness itself ------------------------------------------------------------------


def test_every_python_block_is_collected() -> None:
    fences = [line for line in README.read_text().splitlines()
              if re.match(r"^```python\b", line)]
    assert len(BLOCKS) == len(fences) > 0
    assert len({block.id for block in BLOCKS}) == len(BLOCKS)


def test_every_block_says_what_to_install() -> None:
    """Each block names what it needs (issue 15.3: one needed two extras without saying
    so); the extras it names exist.  That they are enough is proven from the wheel by
    ``.ci/newcomer_proof.py``."""
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["project"]["optional-dependencies"])
    for block in BLOCKS:
        named = block.requirements()
        kitsd = [r for r in named if r == "kitsd" or r.startswith("kitsd[")]
        assert len(kitsd) == 1, (
            f"README line {block.line}: say what a reader installs to run it, in a comment: "
            "`# pip install kitsd`, `# pip install 'kitsd[consul,etcd]' starlette`, ...")
        wanted = set(kitsd[0].partition("[")[2].rstrip("]").split(",")) - {""}
        assert wanted <= extras, f"README line {block.line}: unknown extras {wanted - extras}"
        if block.is_test_file():
            assert "testing" in wanted, f"README line {block.line}: a test file needs [testing]"


def test_requirements_and_plugin_servers_are_read() -> None:
    block = Block(1, "s", "# app.py -- pip install 'kitsd[serve, consul]' Starlette; run\n"
                          "def test_x(kitsd_kube, kitsd_etcd, tmp_path): pass\n")
    assert block.requirements() == ("kitsd[consul,serve]", "starlette")
    assert block.venv == "kitsd-consul-serve-starlette"
    assert block.plugin_servers() == ["etcd", "kube-apiserver"]
    assert Block(1, "s", "# test.py (pip install kitsd)\nx = 1\n").requirements() == ("kitsd",)
    assert Block(1, "s", "x = 1\n").requirements() == ()


def test_blocks_are_found_with_their_line_and_section() -> None:
    text = "# T\n\n## One\n\n```python\nprint(1)\n```\n\n```sh\nls\n```\n## Two\n" \
           "````python\nx = '''\n```\n'''\n````\n"
    found = blocks(text)
    assert [(b.line, b.section) for b in found] == [(6, "One"), (14, "Two")]
    assert found[1].code == "x = '''\n```\n'''\n"


def test_addresses_are_rewritten_in_both_spellings() -> None:
    code = ('connect("127.0.0.1:8500")\nRegistrar(c, "users", "127.0.0.1", 8080)\n'
            'x = "127.0.0.1:85001"\ny = "127.0.0.1:9999"\n')
    block = Block(1, "s", code)
    assert block.servers() == ["127.0.0.1:8500", "127.0.0.1:8080"]
    rewritten = rewrite(code, {"127.0.0.1:8500": "127.0.0.1:41000",
                               "127.0.0.1:8080": "127.0.0.1:41001"})
    assert rewritten == ('connect("127.0.0.1:41000")\n'
                         'Registrar(c, "users", "127.0.0.1", 41001)\n'
                         'x = "127.0.0.1:85001"\ny = "127.0.0.1:9999"\n')


def test_a_failing_block_fails_its_test(tmp_path: Path) -> None:
    broken: Callable[[], None] = lambda: run_block(  # noqa: E731
        Block(3, "Broken", "async with x:\n    pass\n"), {}, tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r"README line 3 \(Broken\) exited 1"):
        broken()
