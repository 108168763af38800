"""compose/*.yaml run what the process launchers run: the same images (versions), the same
command-line flags, and publish the ports the commands listen on.

CI also loads every file with the real Compose loader (``.ci/validate-compose``); these
tests read the YAML themselves, so they need no Go toolchain.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kitsd.chaos_instance import _parser as instance_parser
from kitsd.cli import _parser as cli_parser
from kitsd.compose import consul as compose_consul
from kitsd.compose.consul import ConsulCluster
from kitsd.compose.etcd import ETCD_BINARY, EtcdMember
from kitsd.compose.images import CONSUL_IMAGE, DEMO_IMAGE, ETCD_IMAGE
from kitsd.compose.install import SERVERS
from kitsd.compose.instance import INSTANCE_MODULE, InstanceProcess

COMPOSE = Path(compose_consul.__file__).resolve().parent
ROOT = COMPOSE.parent


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE / name).read_text())
    return data


def flags(command: list[str]) -> set[str]:
    """The option names of a command line (``--name``, ``-server``), not their values
    (``-1`` is a value)."""
    return {word for word in command if re.fullmatch(r"--?[a-z][a-z0-9-]*", word)}


def options(command: list[str]) -> dict[str, list[str]]:
    """Each option's values, in order (flags without a value map to ``[]``)."""
    found: dict[str, list[str]] = {}
    names = flags(command)
    for index, word in enumerate(command):
        if word in names:
            values = found.setdefault(word, [])
            following = command[index + 1] if index + 1 < len(command) else None
            if following is not None and following not in names:
                values.append(following)
    return found


def container_ports(service: dict[str, Any]) -> set[int]:
    """The container ports a service publishes (``host:port:container``)."""
    return {int(str(entry).rsplit(":", 1)[1]) for entry in service.get("ports", [])}


# --- etcd -----------------------------------------------------------------------------


def test_etcd_members_run_the_launchers_image_flags_and_ports(tmp_path: Path) -> None:
    services = load("etcd.yaml")["services"]
    assert sorted(services) == ["etcd-1", "etcd-2", "etcd-3"]
    initial = ",".join(f"{name}=http://{name}:2380" for name in sorted(services))
    for name, service in services.items():
        assert service["image"] == ETCD_IMAGE
        command = service["command"]
        assert command[0] == "etcd"
        member = EtcdMember(name, client_port=2379, peer_port=2380, workdir=tmp_path,
                            initial_cluster=initial, cluster_token="t")  # noqa: S106
        launched = member.command()
        assert flags(command) == flags(launched)
        given = options(command)
        assert given["--name"] == [name]
        assert given["--initial-cluster"] == [initial]
        assert given["--advertise-client-urls"] == [f"http://{name}:2379"]
        client_port = int(given["--listen-client-urls"][0].rsplit(":", 1)[1])
        assert container_ports(service) == {client_port}
        assert given["--initial-cluster-state"] == options(launched)["--initial-cluster-state"]


@pytest.mark.integration
def test_etcd_image_is_the_installed_etcd_version() -> None:
    out = subprocess.run([ETCD_BINARY, "--version"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    installed = re.search(r"etcd Version: (\d+\.\d+)\.\d+", out)
    assert installed is not None, out
    tag = ETCD_IMAGE.rsplit(":v", 1)[1]
    assert tag.startswith(installed.group(1) + ".")  # same minor: same flags and API


# --- Consul ---------------------------------------------------------------------------


@pytest.fixture
def consul_commands(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """The command lines ``ConsulCluster(3)`` would run (the binary need not exist)."""
    monkeypatch.setattr(compose_consul, "CONSUL_BINARY", __file__)
    cluster = ConsulCluster(3, start=False)
    try:
        yield [agent.command() for agent in cluster.agents]
    finally:
        cluster.close()


def test_consul_servers_run_the_launchers_image_flags_and_ports(
    consul_commands: list[list[str]]
) -> None:
    services = load("consul.yaml")["services"]
    assert sorted(services) == ["consul-1", "consul-2", "consul-3"]
    for (name, service), launched in zip(sorted(services.items()), consul_commands,
                                         strict=True):
        assert service["image"] == CONSUL_IMAGE
        command = service["command"]
        assert command[0] == launched[1] == "agent"
        assert flags(command) == flags(launched)
        given, ours = options(command), options(launched)
        assert given["-node"] == [name]
        assert given["-bootstrap-expect"] == ours["-bootstrap-expect"] == [str(len(services))]
        assert sorted(given["-retry-join"]) == sorted(set(services) - {name})
        assert given["-hcl"] == ours["-hcl"]
        for same in ("-dns-port", "-grpc-port", "-grpc-tls-port", "-https-port",
                     "-retry-interval", "-log-level"):
            assert given[same] == ours[same], same
        assert container_ports(service) == {int(given["-http-port"][0])}


def test_consul_image_is_the_version_ci_builds() -> None:
    script = SERVERS["consul"].installer.read_text()
    pinned = re.search(r'^CONSUL_VERSION="([^"]+)"', script, re.MULTILINE)
    assert pinned is not None
    assert f"hashicorp/consul:{pinned.group(1)}" == CONSUL_IMAGE


# --- the demo service and its load client ------------------------------------------------


def test_demo_replicas_run_the_instance_launchers_command(tmp_path: Path) -> None:
    demo = load("demo.yaml")
    assert demo["include"] == ["consul.yaml"]
    consul = load("consul.yaml")["services"]
    service = demo["services"]["demo"]
    assert service["image"] == DEMO_IMAGE
    command = service["command"]
    args = instance_parser().parse_args(command[3:])
    launched = InstanceProcess("i", workdir=tmp_path, port=args.port,
                               args=command[3:]).command()
    assert command[:3] == ["python", "-m", INSTANCE_MODULE]
    assert command[1:] == launched[1:]
    assert args.consul.split(":")[0] in consul
    assert int(args.consul.split(":")[1]) == 8500
    assert [str(args.port)] == service["expose"]


def test_load_client_runs_kitsd_chaos_on_the_demo_service() -> None:
    services = load("demo.yaml")["services"]
    load_client = services["load"]
    assert load_client["image"] == DEMO_IMAGE
    command = load_client["command"]
    assert command[0] == "kitsd"
    args = cli_parser().parse_args([re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", word)
                                    for word in command[1:]])
    assert args.command == "chaos"
    demo = instance_parser().parse_args(services["demo"]["command"][3:])
    assert args.registry_url == f"consul://{demo.consul}"
    assert args.service == demo.service
