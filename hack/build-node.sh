#!/usr/bin/env bash
# Builds what a real node in the test bed needs on top of the control plane, from Go modules,
# cached beside it (a second run builds nothing):
#   - kubelet and kube-scheduler, with the control plane's wrapper module (the release's
#     staging replace directives, version stamped) and the same Go caches;
#   - pause, the sandbox image's only binary: build/pause/linux/pause.c of the same
#     k8s.io/kubernetes module, compiled statically (no registry to pull registry.k8s.io/pause);
#   - helm v3 (the newest v3 release on the module proxy, or HELM3_VERSION), for the chart
#     tests on Helm 3 as well as Helm 4.
# Go and gcc are used only here, to build test tools; the product is Python.
#
# Usage: hack/build-node.sh [node|helm3|all]   -> prints key=value lines (bin, pause, helm3)
# Env:   K8S_VERSION, HELM3_VERSION, ASM_CACHE_DIR
set -euo pipefail
shopt -s inherit_errexit

K8S_VERSION=${K8S_VERSION:-v1.37.2}
CACHE=${ASM_CACHE_DIR:-$HOME/.cache/ack-secret-manager}
BIN="$CACHE/k8s-$K8S_VERSION-node/bin"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOMAXPROCS=${GOMAXPROCS:-2}

log() { echo "build-node: $*" >&2; }

need_go() { command -v go >/dev/null || { log "Go is needed to build the test node and helm 3"; exit 1; }; }

build_node() {
  if [ -x "$BIN/kubelet" ] && [ -x "$BIN/kube-scheduler" ] && [ -x "$BIN/pause" ]; then return; fi
  need_go
  command -v gcc >/dev/null || { log "gcc is needed for pause (apt-get install gcc libc6-dev)"; exit 1; }
  mkdir -p "$BIN"
  local work gomod staging mod minor pkg ldflags cmd src
  work=$(mktemp -d)
  trap 'cd /; rm -rf "$work"' RETURN
  cd "$work"
  go mod init asm-k8s-node-build >/dev/null 2>&1
  # As in build-control-plane.sh: repeat k8s.io/kubernetes's staging replace directives.
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging="v0.${K8S_VERSION#v1.}"
  for mod in $(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod"); do
    go mod edit -replace="$mod=$mod@$staging"
  done
  log "building kubelet and kube-scheduler $K8S_VERSION"
  go get "k8s.io/kubernetes/cmd/kubelet@$K8S_VERSION" \
         "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" >&2
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  for cmd in kubelet kube-scheduler; do
    go build -trimpath -ldflags "$ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$BIN/$cmd.tmp" "$BIN/$cmd"
  done
  src=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  gcc -Os -static -o "$BIN/pause.tmp" -DVERSION="$K8S_VERSION" "$src/build/pause/linux/pause.c"
  strip "$BIN/pause.tmp" 2>/dev/null || true
  mv "$BIN/pause.tmp" "$BIN/pause"
}

helm3_bin() {
  local version=${HELM3_VERSION:-} dir
  if [ -z "$version" ]; then
    # The newest v3 release the proxy serves; remembered so that later runs stay offline.
    if [ -s "$CACHE/helm3.version" ]; then
      version=$(cat "$CACHE/helm3.version")
    else
      need_go
      local list
      list=$(cd "$(mktemp -d)" && go mod init asm-helm3-query >/dev/null 2>&1 \
        && go list -m -versions helm.sh/helm/v3)
      version=$(echo "$list" | tr ' ' '\n' | grep -E '^v3\.[0-9]+\.[0-9]+$' | sort -V | tail -n1)
      [ -n "$version" ] || { log "no helm v3 release found on the module proxy"; exit 1; }
      mkdir -p "$CACHE" && echo "$version" >"$CACHE/helm3.version"
    fi
  fi
  dir="$CACHE/helm-$version/bin"
  if [ ! -x "$dir/helm" ]; then
    need_go
    log "building helm $version"
    mkdir -p "$dir"
    cd "${TMPDIR:-/tmp}"
    # As helm's Makefile does: the Kubernetes version that `helm template` and `helm lint`
    # assume is that of the client-go it is built with (else v1.20, and kubeVersion fails).
    local gomod minor h=helm.sh/helm/v3
    gomod=$(go mod download -json "$h@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    minor=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod")
    GOBIN="$dir" go install -trimpath -ldflags "-s -w -X $h/internal/version.version=$version \
      -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$minor \
      -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$minor" \
      "$h/cmd/helm@$version" >&2
  fi
  echo "$dir/helm"
}

case ${1:-all} in
  node) build_node; echo "bin=$BIN" ;;
  helm3) h=$(helm3_bin); echo "helm3=$h" ;;
  all) build_node; h=$(helm3_bin); echo "bin=$BIN"; echo "helm3=$h" ;;
  *) log "usage: $0 [node|helm3|all]"; exit 2 ;;
esac
