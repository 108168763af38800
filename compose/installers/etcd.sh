#!/usr/bin/env bash
# Install etcd (server and etcdctl) from Debian's packages, idempotently.
# The tests start their own members on loopback ports; the packaged service is not used.
set -euo pipefail
log() { printf '[install etcd] %s\n' "$*" >&2; }
if [[ -z "${KITSD_INSTALL_FORCE:-}" ]] && command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1; then
  log "already installed: $(etcd --version | head -n 1)"
  exit 0
fi
sudo=()
if [[ $EUID -ne 0 ]]; then
  command -v sudo >/dev/null || { log "ERROR: need root or sudo for apt-get"; exit 1; }
  sudo=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
log "apt-get install etcd-server etcd-client (usually under a minute)"
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
# --reinstall: the package may be installed with its binaries removed since
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --reinstall etcd-server etcd-client >/dev/null
# The package may start a system etcd on the default ports; the tests never use it.
if command -v systemctl >/dev/null 2>&1; then "${sudo[@]}" systemctl stop etcd >/dev/null 2>&1 || true; fi
log "installed: $(etcd --version | head -n 1)"
