#!/usr/bin/env bash
# Install a pinned kube-apiserver (and the etcd it stores in), built from source.
#
#   /usr/local/bin/kube-apiserver  Kubernetes v1.37.2, from k8s.io/kubernetes' Go module
#   /usr/local/bin/kube-etcd       etcd v3.7.3, from go.etcd.io/etcd/server/v3
#
# Why a separate etcd: Debian's etcd 3.4.23 is accepted by the apiserver, but its
# WatchList feature (watch bookmarks from resourceVersion 0/unset, sendInitialEvents)
# needs etcd >= 3.5.13 and fails with a 500 ERROR event on 3.4. It is installed as
# kube-etcd so that it never shadows the Debian etcd the etcd driver's tests use.
#
# No prebuilt download is possible here, so each release is built with the Go
# toolchain from the Go module proxy, in a throwaway module outside the repo (as
# installers/consul.sh does; KITSD_INSTALL_FORCE=1 skips step 1):
#   1. the installed binary already reports the pinned version -> done.
#   2. a cached binary ${KITSD_CACHE:-$HOME/.cache/kitsd}/<name>-<ver>/<name> reports
#      the pinned version -> install it (a second).
#   3. otherwise build it, cache it, install it. Cold, on 2 cores: kube-apiserver
#      about 6-10 min and 2.4 GB peak memory, etcd about 1-2 min. The Go module and
#      build caches stay in their defaults, so rebuilds take seconds.
# KITSD_K8S_INSTALL_DIR overrides /usr/local/bin.
set -euo pipefail

# --- pinned releases ------------------------------------------------------------
K8S_VERSION="1.37.2"
K8S_BUILD_DATE="2026-10-27T12:01:04Z" # tag time of v1.37.2 (proxy .info)
STAGING_VERSION="0.37.2"              # the staging modules' release for 1.37.2
ETCD_VERSION="3.7.3"
GO_MIN="1.26.0"                       # `go` directive of both go.mod files

# k8s.io/kubernetes' go.mod `replace`s its staging modules with ./staging/src/...;
# those replaces do not apply to a dependency, so the build module replaces each one
# it requires with its tagged v0.37.2 release. (Its go.mod also replaces
# sample-cli-plugin and sample-controller, which it does not require and which have
# no release on the proxy.)
STAGING_MODULES=(
  api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
  cloud-provider cluster-bootstrap code-generator component-base component-helpers
  controller-manager cri-api cri-client cri-streaming csi-translation-lib
  dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
  kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver streaming
)

INSTALL_DIR="${KITSD_K8S_INSTALL_DIR:-/usr/local/bin}"
CACHE="${KITSD_CACHE:-$HOME/.cache/kitsd}"

log() { printf '[install kube-apiserver] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# reports BIN WANT: BIN exists and its --version output contains WANT.
reports() {
  local out
  [[ -x "$1" ]] || return 1
  out="$("$1" --version 2>/dev/null)" || return 1
  [[ "$out" == *"$2"* ]]
}

install_bin() { # install_bin SRC DEST WANT
  local src="$1" dest="$2" want="$3" sudo=()
  if [[ ! -w "$INSTALL_DIR" && $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || die "$INSTALL_DIR not writable and no sudo"
    sudo=(sudo -n)
  fi
  "${sudo[@]}" mkdir -p "$INSTALL_DIR"
  # copy then rename, so a running server is never overwritten in place
  "${sudo[@]}" install -m 0755 "$src" "$dest.tmp.$$"
  "${sudo[@]}" mv -f "$dest.tmp.$$" "$dest"
  reports "$dest" "$want" || die "$dest does not report $want"
  log "installed $dest ($want)"
}

use_go() {
  if ! command -v go >/dev/null; then
    [[ -x /usr/local/go/bin/go ]] && PATH="/usr/local/go/bin:$PATH"
    command -v go >/dev/null || die "go is not installed (need go >= $GO_MIN)"
  fi
  local have
  have="$(go env GOVERSION)"; have="${have#go}"
  if [[ "$(printf '%s\n%s\n' "$GO_MIN" "$have" | sort -V | head -n1)" != "$GO_MIN" ]]; then
    log "go $have is older than $GO_MIN: using GOTOOLCHAIN=go$GO_MIN"
    export GOTOOLCHAIN="go$GO_MIN"
  fi
  export GO111MODULE=on GOWORK=off CGO_ENABLED=0
  unset GOMODCACHE # default: $(go env GOPATH)/pkg/mod, kept between runs
}

# ensure NAME WANT CACHED_BIN BUILD_FUNCTION
ensure() {
  local name="$1" want="$2" cached="$3" build="$4" dest="$INSTALL_DIR/$1"
  if [[ -z "${KITSD_INSTALL_FORCE:-}" ]] && reports "$dest" "$want"; then
    log "$want already at $dest"
    return
  fi
  if reports "$cached" "$want"; then
    log "using cached $cached"
    install_bin "$cached" "$dest" "$want"
    return
  fi
  use_go
  local t0=$SECONDS
  mkdir -p "$(dirname "$cached")"
  "$build" "$cached.tmp"
  mv -f "$cached.tmp" "$cached"
  reports "$cached" "$want" || die "built $cached does not report $want"
  log "built $cached in $((SECONDS - t0))s"
  install_bin "$cached" "$dest" "$want"
}

build_kube_apiserver() {
  local out="$1" dir="$CACHE/kube-apiserver-build-$K8S_VERSION" module
  log "building kube-apiserver v$K8S_VERSION from source in $dir (first time: 6-10 min, 2.4 GB)"
  mkdir -p "$dir"
  cd "$dir"
  {
    echo "module kitsd.invalid/kube-apiserver-build"
    echo
    echo "go $GO_MIN"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    for module in "${STAGING_MODULES[@]}"; do
      printf '\tk8s.io/%s => k8s.io/%s v%s\n' "$module" "$module" "$STAGING_VERSION"
    done
    echo ")"
  } >go.mod
  cat >tools.go <<'EOF'
//go:build tools

// Package tools only records the kube-apiserver main package as a dependency.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
EOF
  log "resolving modules (go mod tidy)"
  go mod tidy
  log "compiling k8s.io/kubernetes/cmd/kube-apiserver"
  local ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=${K8S_VERSION%%.*}"
    ldflags+=" -X $pkg.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION") -X $pkg.gitTreeState=clean"
    ldflags+=" -X $pkg.buildDate=$K8S_BUILD_DATE"
  done
  go build -mod=mod -buildvcs=false -trimpath -ldflags "$ldflags" \
    -o "$out" k8s.io/kubernetes/cmd/kube-apiserver
}

build_kube_etcd() {
  local out="$1" dir="$CACHE/kube-etcd-build-$ETCD_VERSION"
  log "building etcd v$ETCD_VERSION from source in $dir (first time: 1-2 min)"
  mkdir -p "$dir"
  cd "$dir"
  printf 'module kitsd.invalid/etcd-build\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' \
    "$GO_MIN" "$ETCD_VERSION" >go.mod
  cat >tools.go <<'EOF'
//go:build tools

// Package tools only records the etcd main package as a dependency.
package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
  log "resolving modules (go mod tidy)"
  go mod tidy
  log "compiling go.etcd.io/etcd/server/v3"
  go build -mod=mod -buildvcs=false -trimpath -ldflags "-s -w" -o "$out" go.etcd.io/etcd/server/v3
}

mkdir -p "$CACHE"
# serialise concurrent runs sharing the cache
if command -v flock >/dev/null; then
  exec 9>"$CACHE/.kube-apiserver-$K8S_VERSION.lock"
  flock 9
fi

ensure kube-etcd "etcd Version: $ETCD_VERSION" "$CACHE/kube-etcd-$ETCD_VERSION/kube-etcd" build_kube_etcd
ensure kube-apiserver "Kubernetes v$K8S_VERSION" \
  "$CACHE/kube-apiserver-$K8S_VERSION/kube-apiserver" build_kube_apiserver
