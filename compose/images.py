"""The container images ``compose/*.yaml`` run: the same servers, at the same versions, as
the launchers of :mod:`kitsd.compose.etcd` and :mod:`kitsd.compose.consul` start on loopback
(``tests/kitsd/test_chaos_compose.py`` checks that images, commands and ports agree)."""

from __future__ import annotations

__all__ = ["CONSUL_IMAGE", "DEMO_IMAGE", "ETCD_IMAGE"]

ETCD_IMAGE = "quay.io/coreos/etcd:v3.4.23"
"""etcd, as Debian's ``etcd-server`` 3.4.23 that ``kitsd servers install etcd`` installs."""

CONSUL_IMAGE = "hashicorp/consul:1.22.7"
"""Consul, as the 1.22.7 that ``kitsd servers install consul`` builds."""

DEMO_IMAGE = "kitsd-demo:latest"
"""kitsd with its extras (``compose/Dockerfile``): demo instances and the load client."""
