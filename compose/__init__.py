"""Real registry servers on loopback, for the integration tests and for trying kitsd by hand.

There is no container engine on our machines, so "compose" here means processes:
:mod:`kitsd.compose.etcd` starts real etcd members and clusters, :mod:`kitsd.compose.consul`
real Consul dev agents and server clusters, each on free loopback ports in a
temporary directory, and stops them leaving nothing behind.
"""
