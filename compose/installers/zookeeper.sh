#!/usr/bin/env bash
# Install Apache ZooKeeper from Debian's package, idempotently (Java 17 is a dependency).
# The tests start their own standalone servers on loopback ports (compose/zookeeper.py);
# the packaged service is not used.
set -euo pipefail
log() { printf '[install zookeeper] %s\n' "$*" >&2; }
if [[ -z "${KITSD_INSTALL_FORCE:-}" ]] && [[ -f /usr/share/java/zookeeper.jar ]] && command -v java >/dev/null 2>&1; then
  log "already installed: zookeeper $(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo '?')"
  exit 0
fi
sudo=()
if [[ $EUID -ne 0 ]]; then
  command -v sudo >/dev/null || { log "ERROR: need root or sudo for apt-get"; exit 1; }
  sudo=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
log "apt-get install zookeeper (with a Java runtime; usually 1-2 minutes)"
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
# --reinstall: the packages may be installed with the jar (libzookeeper-java's) removed since
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --reinstall zookeeper libzookeeper-java >/dev/null
# The package may start a system ZooKeeper on port 2181; the tests never use it.
if command -v systemctl >/dev/null 2>&1; then "${sudo[@]}" systemctl stop zookeeper >/dev/null 2>&1 || true; fi
log "installed: zookeeper $(dpkg-query -W -f='${Version}' zookeeper)"
