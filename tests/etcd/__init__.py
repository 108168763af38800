"""Tests of the etcd driver (sd.etcd) and its real-server fixtures (compose.etcd)."""
