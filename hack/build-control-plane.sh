#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager, etcd) from Go
# modules and caches the binaries outside the clone, so a second run builds nothing.
# Go is used only here, to build test tools; the product is Python.
#
# Usage: hack/build-control-plane.sh            -> prints the bin directory
# Env:   K8S_VERSION, ETCD_VERSION, ASM_CACHE_DIR
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE=${ASM_CACHE_DIR:-$HOME/.cache/ack-secret-manager}
BIN="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
# Two cores: keep the build from starving everything else, and its peak memory modest.
export GOMAXPROCS=${GOMAXPROCS:-2}

log() { echo "build-control-plane: $*" >&2; }

if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/etcd" ]; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "Go is needed to build the test control plane"; exit 1; }
mkdir -p "$BIN"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -x "$BIN/etcd" ]; then
  log "building etcd $ETCD_VERSION"
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init asm-etcd-build >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go build -trimpath -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kube-controller-manager" ]; then
  log "building kube-apiserver and kube-controller-manager $K8S_VERSION (a few minutes, once)"
  mkdir -p "$work/k8s" && cd "$work/k8s"
  go mod init asm-k8s-build >/dev/null 2>&1
  # k8s.io/kubernetes maps its staging modules with replace directives that Go ignores in a
  # dependency; repeat them here, pointing at the published staging versions (v0.MINOR.PATCH).
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging="v0.${K8S_VERSION#v1.}"
  for mod in $(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod"); do
    go mod edit -replace="$mod=$mod@$staging"
  done
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
         "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" >&2
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  for cmd in kube-apiserver kube-controller-manager; do
    log "go build $cmd"
    go build -trimpath -ldflags "$ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$BIN/$cmd.tmp" "$BIN/$cmd"
  done
fi
echo "$BIN"
