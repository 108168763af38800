"""``kitsd servers install NAME``: one table, installers shipped in the package, the same
code for the command line, ``.ci/run`` and the test run (which never installs while only
collecting)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from kitsd.cli import main
from kitsd.compose import install as installing
from kitsd.compose.install import SERVERS, InstallError, Server, ensure, hint, install, status
from tests import conftest

ROOT = Path(__file__).resolve().parents[2]


def fake_server(tmp_path: Path, script: str) -> Server:
    installer = tmp_path / "fake.sh"
    installer.write_text(script)
    return Server(name="fake", binary_env="KITSD_FAKE_BINARY",
                  default_binary=str(tmp_path / "bin" / "fake"),
                  external_env="KITSD_FAKE_ADDR", script=str(installer),
                  how_long="a fake; instant")


def test_the_table_ships_an_installer_for_each_server() -> None:
    assert set(SERVERS) >= {"consul", "etcd", "zookeeper", "kube-apiserver"}
    for name, server in SERVERS.items():
        assert server.name == name
        assert server.installer.is_file(), server.installer
        # inside the package, so a wheel carries it
        assert server.installer.resolve().is_relative_to(ROOT / "compose" / "installers")
        assert f"kitsd servers install {name}" in hint(name)
        if server.external_env:
            assert server.external_env in hint(name)


def test_install_runs_the_installer_and_reports(tmp_path: Path) -> None:
    server = fake_server(tmp_path, 'mkdir -p "$(dirname "$0")/bin"\n'
                                   'echo "[install fake] building"\necho noise\n'
                                   'touch "$(dirname "$0")/bin/fake"\n')
    said: list[str] = []
    assert "missing" in status(server)
    install(server, said.append)
    assert server.installed()
    assert "  [install fake] building" in said  # progress lines, not the noise
    assert not any("noise" in line for line in said)
    assert said[-1].startswith("kitsd: fake installed in ")
    assert status(server).startswith("installed: ")
    said.clear()
    install(server, said.append)  # installed: nothing runs
    assert said == [f"kitsd: fake is installed ({server.binary})"]


def test_force_reinstalls_and_tells_the_script(tmp_path: Path) -> None:
    server = fake_server(tmp_path, 'mkdir -p "$(dirname "$0")/bin"\n'
                                   'echo "$KITSD_INSTALL_FORCE" > "$(dirname "$0")/forced"\n'
                                   'touch "$(dirname "$0")/bin/fake"\n')
    install(server, lambda line: None)
    assert (tmp_path / "forced").read_text().strip() == ""
    install(server, lambda line: None, force=True)
    assert (tmp_path / "forced").read_text().strip() == "1"


def test_a_failing_installer_says_why(tmp_path: Path) -> None:
    server = fake_server(tmp_path, 'echo "[install fake] trying"\necho "E: no luck" >&2\n'
                                   "exit 3\n")
    with pytest.raises(InstallError, match=r"exit status 3:(.|\n)*E: no luck"):
        install(server, lambda line: None)


def test_an_installer_that_installs_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="still missing"):
        install(fake_server(tmp_path, "true\n"), lambda line: None)


def test_ensure_installs_only_what_is_missing_and_obeys_no_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fake_server(tmp_path, 'mkdir -p "$(dirname "$0")/bin"\n'
                                   'touch "$(dirname "$0")/bin/fake"\n')
    monkeypatch.setitem(SERVERS, "fake", server)
    said: list[str] = []
    monkeypatch.setenv(installing.NO_INSTALL_ENV, "1")
    ensure(["fake"], said.append)
    assert not server.installed()
    assert "KITSD_NO_INSTALL is set" in said[0]
    monkeypatch.delenv(installing.NO_INSTALL_ENV)
    ensure(["fake"], said.append)
    assert server.installed()
    monkeypatch.setenv("KITSD_FAKE_BINARY", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("KITSD_FAKE_ADDR", "127.0.0.1:1")  # an external server: nothing to do
    said.clear()
    ensure(["fake"], said.append)
    assert said == []


def test_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["servers", "list"]) == 0
    out = capsys.readouterr().out
    assert {line.split()[0] for line in out.splitlines()} == set(SERVERS)
    with pytest.raises(SystemExit) as caught:
        main(["servers", "install", "mysql"])
    assert caught.value.code == 2
    assert "invalid choice: 'mysql'" in capsys.readouterr().err


def test_the_command_line_installs_from_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = fake_server(tmp_path, 'mkdir -p "$(dirname "$0")/bin"\n'
                                   'touch "$(dirname "$0")/bin/fake"\n')
    monkeypatch.setitem(SERVERS, "fake", server)  # a new row is a new choice
    assert main(["servers", "install", "fake"]) == 0
    assert "kitsd: fake installed in" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    broken = fake_server(tmp_path / "b", "exit 1\n")
    monkeypatch.setitem(SERVERS, "broken", broken)
    assert main(["servers", "install", "broken"]) == 1
    assert "kitsd servers: installing fake" in capsys.readouterr().err


def test_ci_uses_the_same_command() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    assert "kitsd servers install etcd consul zookeeper" in run
    assert not list((ROOT / ".ci").glob("install-*"))  # no second copy of an installer


def test_python_m_works_without_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "kitsd.compose.install", "nosuch"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert "NAME: etcd, consul, kube-apiserver, zookeeper" in done.stderr


def _session(items: list[object], *, collect_only: bool) -> SimpleNamespace:
    return SimpleNamespace(
        items=items,
        config=SimpleNamespace(option=SimpleNamespace(collectonly=collect_only),
                               pluginmanager=SimpleNamespace(get_plugin=lambda name: None)))


def _item(path: str, *, integration: bool = True, servers: tuple[str, ...] = ()) -> object:
    return SimpleNamespace(
        path=Path(path),
        get_closest_marker=lambda name: object() if integration else None,
        iter_markers=lambda name: [SimpleNamespace(args=servers)] if servers else [])


def test_collecting_never_installs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15.1: ``pytest --collect-only`` built Consul (207 s)."""
    asked: list[set[str]] = []
    monkeypatch.setattr(conftest, "ensure", lambda names, say: asked.append(set(names)))
    items = [_item("tests/consul/test_x.py")]
    conftest.pytest_collection_finish(_session(items, collect_only=True))  # type: ignore[arg-type]
    assert asked == []
    conftest.pytest_collection_finish(_session(items, collect_only=False))  # type: ignore[arg-type]
    assert asked == [{"consul"}]


def test_the_servers_a_selection_needs() -> None:
    items = [_item("tests/zk/test_a.py"), _item("tests/dns/test_b.py"),
             _item("tests/kitsd/test_chaos_etcd.py"), _item("tests/etcd/test_c.py",
                                                            integration=False),
             _item("tests/test_readme.py", integration=False, servers=("etcd",))]
    assert conftest.servers_needed(items) == {"zookeeper", "consul", "etcd"}  # type: ignore[arg-type]
