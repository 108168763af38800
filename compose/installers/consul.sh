#!/usr/bin/env bash
# Install a pinned HashiCorp Consul as /usr/local/bin/consul, built from source.
#
# No prebuilt download is possible here, so the release is built with the Go
# toolchain from the Go module proxy, in a throwaway module outside the repo:
#   1. /usr/local/bin/consul already reports the pinned version -> done.
#   2. a cached binary ${KITSD_CACHE:-$HOME/.cache/kitsd}/consul-<ver>/consul
#      reports the pinned version -> install it.
#   3. otherwise build it (5-15 min on 2 cores, the first time), cache it, install it.
# The Go module cache stays in the default GOPATH, so rebuilds are fast.
set -euo pipefail

# --- pinned release -----------------------------------------------------------
CONSUL_VERSION="1.22.7"
CONSUL_BUILD_DATE="2026-04-22T11:26:40Z" # tag time of v1.22.7 (proxy .info)
GO_MIN="1.25.9"                          # `go` directive of consul v1.22.7

# Consul's own go.mod `replace`s its submodules with ./api, ./sdk, ...; those
# replaces do not apply to a dependency, so require tagged submodule versions
# that match the v1.22.7 tree. These are the versions its go.mod names, except
# api: v1.33.7 lacks ACLAuthMethod.TokenNameFormat and ACLToken.Name, which 1.22.7
# uses (GH-23444); api v1.34.1 (tagged 2026-04-14, before the release) has them.
CONSUL_REQUIRES=(
  "github.com/hashicorp/consul v${CONSUL_VERSION}"
  "github.com/hashicorp/consul/api v1.34.1"
  "github.com/hashicorp/consul/envoyextensions v0.9.6"
  "github.com/hashicorp/consul/proto-public v0.7.4"
  "github.com/hashicorp/consul/sdk v0.17.3"
  "github.com/hashicorp/consul/troubleshoot v0.8.7"
)
# Likewise consul's `exclude` block (go-msgpack 1.1.5/1.1.6 break consul's RPC
# encoding).
CONSUL_EXCLUDES=(
  "github.com/hashicorp/go-msgpack v1.1.5"
  "github.com/hashicorp/go-msgpack v1.1.6"
)

INSTALL_DIR="${CONSUL_INSTALL_DIR:-/usr/local/bin}"
DEST="$INSTALL_DIR/consul"
CACHE="${KITSD_CACHE:-$HOME/.cache/kitsd}"
CACHED_BIN="$CACHE/consul-$CONSUL_VERSION/consul"
BUILD_DIR="$CACHE/consul-build-$CONSUL_VERSION"

log() { printf '[install consul] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# has_version BIN: BIN exists and `BIN version` says "Consul v$CONSUL_VERSION".
has_version() {
  local out
  [[ -x "$1" ]] || return 1
  out="$("$1" version 2>/dev/null)" || return 1
  [[ "${out%%$'\n'*}" == "Consul v$CONSUL_VERSION" ]]
}

install_bin() {
  local src="$1" sudo=()
  if [[ ! -w "$INSTALL_DIR" && $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || die "$INSTALL_DIR not writable and no sudo"
    sudo=(sudo -n)
  fi
  "${sudo[@]}" mkdir -p "$INSTALL_DIR"
  # copy then rename, so a running consul is never overwritten in place
  "${sudo[@]}" install -m 0755 "$src" "$DEST.tmp.$$"
  "${sudo[@]}" mv -f "$DEST.tmp.$$" "$DEST"
  has_version "$DEST" || die "$DEST does not report Consul v$CONSUL_VERSION"
  log "installed $DEST (Consul v$CONSUL_VERSION)"
}

# 1. already installed (unless forced: KITSD_INSTALL_FORCE=1 installs again)
if [[ -z "${KITSD_INSTALL_FORCE:-}" ]] && has_version "$DEST"; then
  log "Consul v$CONSUL_VERSION already at $DEST"
  exit 0
fi

mkdir -p "$CACHE"
# serialise concurrent runs sharing the cache
if command -v flock >/dev/null; then
  exec 9>"$CACHE/.consul-$CONSUL_VERSION.lock"
  flock 9
  if [[ -z "${KITSD_INSTALL_FORCE:-}" ]] && has_version "$DEST"; then
    log "Consul v$CONSUL_VERSION already at $DEST"
    exit 0
  fi
fi

# 2. cached build
if has_version "$CACHED_BIN"; then
  log "using cached $CACHED_BIN"
  install_bin "$CACHED_BIN"
  exit 0
fi

# 3. build from source
if ! command -v go >/dev/null; then
  [[ -x /usr/local/go/bin/go ]] && PATH="/usr/local/go/bin:$PATH"
  command -v go >/dev/null || die "go is not installed (need go >= $GO_MIN)"
fi
go_have="$(go env GOVERSION)"; go_have="${go_have#go}"
if [[ "$(printf '%s\n%s\n' "$GO_MIN" "$go_have" | sort -V | head -n1)" != "$GO_MIN" ]]; then
  # the module proxy serves toolchains too
  log "go $go_have is older than $GO_MIN: using GOTOOLCHAIN=go$GO_MIN"
  export GOTOOLCHAIN="go$GO_MIN"
fi

export GO111MODULE=on GOWORK=off CGO_ENABLED=0
unset GOMODCACHE # default: $(go env GOPATH)/pkg/mod, kept between runs

log "building Consul v$CONSUL_VERSION from source in $BUILD_DIR (first time: 5-15 min)"
mkdir -p "$BUILD_DIR" "$(dirname "$CACHED_BIN")"
cd "$BUILD_DIR"
{
  echo "module kitsd.invalid/consul-build"
  echo
  echo "go $GO_MIN"
  echo
  echo "require ("
  printf '\t%s\n' "${CONSUL_REQUIRES[@]}"
  echo ")"
  echo
  echo "exclude ("
  printf '\t%s\n' "${CONSUL_EXCLUDES[@]}"
  echo ")"
} >go.mod
cat >tools.go <<'EOF'
//go:build tools

// Package tools only records the consul main package as a dependency.
package tools

import _ "github.com/hashicorp/consul"
EOF

t0=$SECONDS
log "resolving modules (go mod tidy)"
go mod tidy
log "compiling github.com/hashicorp/consul"
go build -mod=mod -buildvcs=false -trimpath \
  -ldflags "-s -w -X github.com/hashicorp/consul/version.BuildDate=$CONSUL_BUILD_DATE" \
  -o "$CACHED_BIN.tmp" github.com/hashicorp/consul
mv -f "$CACHED_BIN.tmp" "$CACHED_BIN"
has_version "$CACHED_BIN" || die "built binary does not report Consul v$CONSUL_VERSION"
log "built $CACHED_BIN in $((SECONDS - t0))s"
install_bin "$CACHED_BIN"
