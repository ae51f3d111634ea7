#!/usr/bin/env bash
# Builds the controller image (`make image`) and writes it as an OCI archive (`make image-save`),
# on a fresh machine, with no container registry needed:
#   - installs the container engine with apt when neither a working docker nor podman is
#     there (podman, runc, mmdebstrap; root only);
#   - detects this host's podman quirks (crun cannot set rlimits above the hard limits of a
#     process without CAP_SYS_RESOURCE, nor run on a cgroup v1 "hybrid" host) and writes a
#     containers.conf for them in the cache (exported as CONTAINERS_CONF; /etc is not touched);
#   - uses the Dockerfile's official base when it is present or a registry answers, else
#     builds the same Debian bookworm python 3.11 base locally with mmdebstrap;
#   - mounts the machine's CA bundle for pip at build time only (not in any layer);
#   - labels the image (OCI: version, revision, created, source) and tags it
#     VERSION and VERSION-<digest of the build inputs>; an image with that tag is not rebuilt;
#   - writes a CycloneDX SBOM of the image's virtualenv beside it in dist/.
#
# Usage: hack/build-image.sh [build|save|env]     (default: build)
#   build  prints key=value lines: engine, image, tag, version, sbom, containers_conf
#   save   also writes dist/ack-secret-manager-TAG.oci.tar (FORMAT=docker-archive for ctr)
#   env    prints CONTAINERS_CONF=... (for running the engine by hand or from tests)
# Env: IMAGE (localhost/ack-secret-manager), ENGINE (podman|docker), PYTHON_IMAGE,
#      ASM_CACHE_DIR, DEBIAN_MIRROR, SOURCE (the source URL label), FORMAT, OUT
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
REPO=$PWD
CACHE=${ASM_CACHE_DIR:-$HOME/.cache/ack-secret-manager}
IMAGE=${IMAGE:-localhost/ack-secret-manager}
LOCAL_BASE=localhost/python:3.11-slim-bookworm
DIST=${OUT:-$REPO/dist}
CONTEXT_FILES=(Dockerfile .dockerignore pyproject.toml setup.cfg README.md hack/build-image-rootfs.sh)
APT_UPDATED=

log() { echo "build-image: $*" >&2; }
die() { log "$*"; exit 1; }

apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] \
    || die "missing packages ${missing[*]}: install them (apt-get install ${missing[*]})"
  log "apt-get install ${missing[*]}"
  if [ -z "$APT_UPDATED" ]; then apt-get update -qq >&2; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
}

# ------------------------------------------------------------------ engine and its quirks
pick_engine() {
  if [ -n "${ENGINE:-}" ]; then echo "$ENGINE"; return; fi
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; return; fi
  echo podman
}

# The limits podman gives containers by default (nofile 1048576) must not exceed what this
# host lets runc set; a root without CAP_SYS_RESOURCE cannot raise them (and, seen on these
# machines, not even set nproc to its own hard limit). Probed: this process's hard limits
# first, then 4096, each by running `true` in the base image.
ulimits_line() {
  local n
  for n in "$(ulimit -Hn) $(ulimit -Hu)" "4096 4096"; do
    n=${n//unlimited/1048576}
    set -- $n
    echo "default_ulimits = [\"nofile=$1:$1\", \"nproc=$2:$2\"]"
  done
}

probe_ulimits() {
  local base=$1 line
  (ulimit -Hn 1048576) 2>/dev/null && return 0
  if grep -q '^default_ulimits' "$PODMAN_CONF" \
     && podman run --rm --network none --entrypoint /bin/true "$base" >/dev/null 2>&1; then
    return 0
  fi
  while read -r line; do
    write_podman_conf "$line"
    if podman run --rm --network none --entrypoint /bin/true "$base" >/dev/null 2>&1; then
      return 0
    fi
  done < <(ulimits_line)
  die "podman cannot start a container here with any of these limits: $(ulimits_line | tr '\n' ' ')"
}

# crun needs the unified cgroup hierarchy here; runc copes with v1 and "hybrid" hosts.
runtime_line() {
  if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] || ! command -v crun >/dev/null; then
    echo 'runtime = "runc"'
  fi
}

PODMAN_CONF="$CACHE/podman/containers.conf"

write_podman_conf() {
  local body
  body=$(printf '# Written by hack/build-image.sh for this host.\n[containers]\n%s\n[engine]\n%s\n' \
    "$1" "$(runtime_line)")
  mkdir -p "$(dirname "$PODMAN_CONF")"
  [ -f "$PODMAN_CONF" ] && [ "$(cat "$PODMAN_CONF")" = "$body" ] || printf '%s\n' "$body" >"$PODMAN_CONF"
}

# Before any container runs: the runtime, and the limits from an earlier probe if any.
podman_setup() {
  apt_install podman runc
  if [ ! -f "$PODMAN_CONF" ]; then write_podman_conf ""; fi
  export CONTAINERS_CONF=$PODMAN_CONF
}

# ------------------------------------------------------------------ base image
dockerfile_base() { sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile; }

registry_reachable() {
  local code
  code=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' https://registry-1.docker.io/v2/ 2>/dev/null) \
    || return 1
  [ "$code" = 401 ] || [ "$code" = 200 ]
}

apt_mirror() {
  local m
  m=$(grep -rhoE 'https?://[^ ]*debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null \
    | head -n1 | tr -d ' ') || true
  echo "${DEBIAN_MIRROR:-${m:-http://deb.debian.org/debian}}"
}

# Debian's python 3.11 as a base shaped like the official slim image: python, venv, and pip,
# setuptools and wheel in /usr/local (Debian ships ensurepip disabled, and pip only as a wheel).
build_local_base() {
  apt_install mmdebstrap
  local mirror tar hook
  mirror=$(apt_mirror)
  tar=$(mktemp --suffix=.tar)
  hook=$(mktemp)
  cat >"$hook" <<'EOF_HOOK'
set -e
w=/usr/share/python-wheels
pip=$(ls $w/pip-*.whl)
rm -f /usr/lib/python3.*/EXTERNALLY-MANAGED
# Debian's pip installs into /usr/local/lib/python3.X/dist-packages by default, as root.
python3 "$pip/pip" install -q --no-index --no-warn-script-location "$pip" $w/setuptools-*.whl $w/wheel-*.whl
python3 -m pip --version
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /root/.cache
EOF_HOOK
  log "building the local base $LOCAL_BASE with mmdebstrap from $mirror"
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s) \
  mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,python-is-python3,python3-pip-whl,python3-setuptools-whl,python3-wheel-whl,ca-certificates \
    --customize-hook="chroot \"\$1\" sh -s < $hook" \
    bookworm "$tar" "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
    "deb ${mirror%/debian*}/debian-security bookworm-security main" >&2
  rm -f "$hook"
  "$ENGINE_BIN" import --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["python3"]' \
    "$tar" "$LOCAL_BASE" >/dev/null
  rm -f "$tar"
}

pick_base() {
  local base=${PYTHON_IMAGE:-$(dockerfile_base)}
  if "$ENGINE_BIN" image inspect "$base" >/dev/null 2>&1; then echo "$base"; return; fi
  if registry_reachable && "$ENGINE_BIN" pull -q "docker.io/library/$base" >&2; then
    echo "$base"; return
  fi
  if ! "$ENGINE_BIN" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then build_local_base; fi
  echo "$LOCAL_BASE"
}

# ------------------------------------------------------------------ build
ca_bundle() {
  local f
  for f in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}" \
           /etc/ssl/certs/ca-certificates.crt; do
    [ -n "$f" ] && [ -f "$f" ] && { echo "$f"; return; }
  done
}

# A digest of everything that goes into the image: the build context, the base image's id,
# and the labels' values. Same inputs, same tag, no rebuild.
inputs_digest() {
  {
    for f in "${CONTEXT_FILES[@]}"; do echo "$f"; cat "$f"; done
    find controller -type f -name '*.py' | LC_ALL=C sort | while read -r f; do
      echo "$f"; cat "$f"
    done
    echo "$BASE_ID $VERSION $REVISION $CREATED $SOURCE"
  } | sha256sum | cut -c1-12
}

build() {
  ENGINE=$(pick_engine)
  ENGINE_BIN=$ENGINE
  if [ "$ENGINE" = podman ]; then podman_setup; fi
  BASE=$(pick_base)
  if [ "$ENGINE" = podman ]; then probe_ulimits "$BASE"; fi
  BASE_ID=$("$ENGINE_BIN" image inspect --format '{{.Id}}' "$BASE")
  VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' controller/__init__.py)
  REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  if [ "$REVISION" != unknown ] && ! git diff --quiet HEAD -- "${CONTEXT_FILES[@]}" controller; then
    REVISION="$REVISION-dirty"
  fi
  CREATED=$(git log -1 --format=%cI 2>/dev/null || echo unknown)
  SOURCE=${SOURCE:-$(git remote get-url origin 2>/dev/null || echo unknown)}
  TAG="$VERSION-$(inputs_digest)"
  if "$ENGINE_BIN" image inspect "$IMAGE:$TAG" >/dev/null 2>&1; then
    log "$IMAGE:$TAG is up to date"
  else
    local args=(build --network=host -f Dockerfile -t "$IMAGE:$TAG" -t "$IMAGE:$VERSION"
                --build-arg "PYTHON_IMAGE=$BASE" --build-arg "VERSION=$VERSION"
                --build-arg "REVISION=$REVISION" --build-arg "CREATED=$CREATED"
                --build-arg "SOURCE=$SOURCE")
    local ca
    ca=$(ca_bundle)
    if [ "$ENGINE" = podman ]; then
      args+=(--pull=never --layers)
      if [ -n "$ca" ]; then
        args+=(-v "$ca:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
      fi
    fi
    log "$ENGINE build $IMAGE:$TAG (base $BASE)"
    "$ENGINE_BIN" "${args[@]}" . >&2
  fi
  "$ENGINE_BIN" tag "$IMAGE:$TAG" "$IMAGE:$VERSION"
  prune_old
  SBOM="$DIST/ack-secret-manager-$TAG.cdx.json"
  [ -s "$SBOM" ] || write_sbom
}

report() {
  echo "engine=$ENGINE"
  echo "image=$IMAGE:$TAG"
  echo "tag=$TAG"
  echo "version=$VERSION"
  echo "sbom=$SBOM"
  echo "containers_conf=${CONTAINERS_CONF:-}"
}

# Only the newest build is kept: older VERSION-digest tags and their files in dist/.
prune_old() {
  local ref f
  for ref in $("$ENGINE_BIN" images --format '{{.Repository}}:{{.Tag}}' "$IMAGE" 2>/dev/null); do
    case $ref in
      "$IMAGE:$TAG" | "$IMAGE:$VERSION") ;;
      "$IMAGE:"*-*) "$ENGINE_BIN" rmi "$ref" >/dev/null 2>&1 || true ;;
    esac
  done
  for f in "$DIST"/ack-secret-manager-*; do
    [ -e "$f" ] || continue
    case ${f##*/} in ack-secret-manager-"$TAG".*) ;; *) rm -f "$f" ;; esac
  done
}

# The SBOM lists what the image's virtualenv holds: copy its site-packages out of the image
# into a throw-away virtualenv of this machine's python and let cyclonedx-py read that.
write_sbom() {
  local py=${SBOM_PYTHON:-$REPO/.venv/bin/python} tmp cid
  [ -x "$py" ] && "$py" -m cyclonedx_py --version >/dev/null 2>&1 \
    || { log "no SBOM: cyclonedx-py is missing (make venv installs it, the dev extra)"; return 0; }
  tmp=$(mktemp -d)
  cid=$("$ENGINE_BIN" create "$IMAGE:$TAG")
  if ! "$ENGINE_BIN" cp "$cid:/opt/ack-secret-manager/lib" "$tmp/lib" >/dev/null; then
    "$ENGINE_BIN" rm "$cid" >/dev/null; rm -rf "$tmp"; die "cannot copy the virtualenv out of $IMAGE:$TAG"
  fi
  "$ENGINE_BIN" rm "$cid" >/dev/null
  "$py" -m venv --without-pip "$tmp/venv"
  rm -rf "$tmp"/venv/lib/python3*/site-packages
  mv "$tmp"/lib/python3*/site-packages "$(echo "$tmp"/venv/lib/python3*)/"
  mkdir -p "$DIST"
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s) \
    "$py" -m cyclonedx_py environment --output-reproducible \
    --of JSON -o "$SBOM.tmp" "$tmp/venv/bin/python" >&2
  mv "$SBOM.tmp" "$SBOM"
  rm -rf "$tmp"
  log "SBOM: $SBOM"
}

save() {
  local out format=${FORMAT:-oci-archive} ext
  build
  ext=$([ "$format" = oci-archive ] && echo oci.tar || echo docker.tar)
  out="$DIST/ack-secret-manager-$TAG.$ext"
  mkdir -p "$DIST"
  if [ ! -s "$out" ]; then
    log "$ENGINE save $IMAGE:$TAG -> $out"
    if [ "$ENGINE" = podman ]; then
      podman save --format "$format" -o "$out.tmp" "$IMAGE:$TAG"
    else
      docker save -o "$out.tmp" "$IMAGE:$TAG"
    fi
    mv "$out.tmp" "$out"
  fi
  report
  echo "archive=$out"
}

case ${1:-build} in
  build) build; report ;;
  save) save ;;
  env) if [ "$(pick_engine)" = podman ]; then podman_setup; fi; echo "CONTAINERS_CONF=${CONTAINERS_CONF:-}" ;;
  *) die "usage: $0 [build|save|env]" ;;
esac
