#!/usr/bin/env bash
# Builds a real Kubernetes control plane from the Go module proxy, once, into the project's
# cache (.streamtrain/kube/<version>/bin): etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, helm, kwok and skaffold; with --node also what a real node runs: the kubelet,
# kube-proxy (Service addresses), CoreDNS (Service names; only the plugins a node's DNS needs) and
# crictl (stops a node's Pods through the CRI, so their networks are released); with --registry the
# container registry of distribution/distribution (skaffold pushes to it on loopback, the node pulls).
# Cold: about 10 minutes on 2 cores. Warm: it only checks that every binary is there.
# --check builds nothing: it prints the folder when every binary is there, else names the missing
# ones and exits 1 (the test fixtures use it: a build never runs inside a timed test).
#
# The wrapper module requires k8s.io/kubernetes and replaces every staging module that
# kubernetes' own go.mod replaces with the matching published v0.x version; the list is read
# from that go.mod, never written by hand (new staging modules appear between versions).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.5.35}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
CRICTL_VERSION=${CRICTL_VERSION:-v1.34.0}  # the newest cri-tools the module proxy serves below 1.37
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
SKAFFOLD_VERSION=${SKAFFOLD_VERSION:-v2.13.2}
REGISTRY_VERSION=${REGISTRY_VERSION:-v3.1.2}
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${STREAMTRAIN_KUBE_CACHE:-$root/.streamtrain/kube}
bin=$cache/$K8S_VERSION/bin
work=$cache/$K8S_VERSION/src
with_node=0
with_registry=0
check_only=0
for arg in "$@"; do
  case $arg in
    --node) with_node=1 ;;
    --registry) with_registry=1 ;;
    --check) check_only=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; echo "usage: $0 [--node] [--registry] [--check]"; exit 0 ;;
    *) echo "error: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$check_only" = 1 ]; then
  wanted=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm kwok skaffold)
  [ "$with_node" = 1 ] && wanted+=(kubelet kube-proxy crictl coredns)
  [ "$with_registry" = 1 ] && wanted+=(registry)
  missing=()
  for name in "${wanted[@]}"; do [ -x "$bin/$name" ] || missing+=("$name"); done
  [ -d "$cache/$K8S_VERSION/kwok-stages" ] || missing+=(kwok-stages)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "error: not built yet in $bin: ${missing[*]}; run \`make kube-build\`$([ "$with_node" = 1 ] && echo ' (with --node: bash tools/kube/build.sh --node)')$([ "$with_registry" = 1 ] && echo ' (with --registry: bash tools/kube/build.sh --registry)') first (cold: about 10 minutes)" >&2
    exit 1
  fi
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "error: go is required to build the control plane" >&2; exit 1; }
mkdir -p "$bin" "$work"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -p=2"
export CGO_ENABLED=0

log() { printf '%s kube-build %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

build_kubernetes() {
  local wanted=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  [ "$with_node" = 1 ] && wanted+=(kubelet kube-proxy)
  local missing=() name
  for name in "${wanted[@]}"; do [ -x "$bin/$name" ] || missing+=("$name"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "building ${missing[*]} $K8S_VERSION (cold: about 7 minutes)"
  local mod=$work/kubernetes
  mkdir -p "$mod"
  (
    cd "$mod"
    [ -f go.mod ] || go mod init streamtrain.local/kubebuild >/dev/null 2>&1
    go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
    local upstream
    upstream=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
    [ -f "$upstream" ] || { echo "error: could not download k8s.io/kubernetes@$K8S_VERSION's go.mod" >&2; exit 1; }
    local staging_version=v0.${K8S_VERSION#v1.}
    # Every "k8s.io/X => ./staging/src/k8s.io/X" line becomes "k8s.io/X => k8s.io/X v0.N.P".
    local count=0 module
    for module in $(grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/' "$upstream" | awk '{print $1}'); do
      go mod edit -replace "$module=$module@$staging_version"
      count=$((count + 1))
    done
    [ "$count" -gt 0 ] || { echo "error: no staging replace lines found in $upstream" >&2; exit 1; }
    log "replaced $count staging modules with $staging_version"
    local pkgs=()
    for name in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$name"); done
    go get "${pkgs[@]/%/@$K8S_VERSION}" >/dev/null
    local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
    local v=k8s.io/component-base/version
    go build -trimpath -o "$bin/" \
      -ldflags "-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z" \
      "${pkgs[@]}"
  )
}

build_etcd() {
  [ -x "$bin/etcd" ] && return 0
  log "building etcd $ETCD_VERSION (cold: about 40 s)"
  local mod=$work/etcd
  mkdir -p "$mod"
  (
    cd "$mod"
    [ -f go.mod ] || go mod init streamtrain.local/etcdbuild >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
  )
}

# CoreDNS the way its README describes builds with chosen plugins: a main package of our own that
# imports coremain and the plugins, in the order of CoreDNS's plugin.cfg.
build_coredns() {
  [ -x "$bin/coredns" ] && return 0
  log "building coredns $COREDNS_VERSION (cold: about 3 minutes)"
  local mod=$work/coredns
  mkdir -p "$mod"
  (
    cd "$mod"
    [ -f go.mod ] || go mod init streamtrain.local/corednsbuild >/dev/null 2>&1
    local plugins="bind errors log cache kubernetes forward"
    {
      echo 'package main'
      echo 'import ('
      echo '	"github.com/coredns/coredns/core/dnsserver"'
      echo '	"github.com/coredns/coredns/coremain"'
      for p in $plugins; do echo "	_ \"github.com/coredns/coredns/plugin/$p\""; done
      echo ')'
      printf 'func init() { dnsserver.Directives = []string{'
      for p in $plugins; do printf '"%s", ' "$p"; done
      echo '} }'
      echo 'func main() { coremain.Run() }'
    } > main.go
    go get "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null
    go mod tidy >/dev/null
    go build -trimpath -ldflags "-s -w" -o "$bin/coredns" .
  )
}

go_install() { # name module version
  [ -x "$bin/$1" ] && return 0
  log "building $1 $3 (cold: about 90 s)"
  GOBIN=$bin go install -trimpath -ldflags "-s -w" "$2@$3"
}

# skaffold v2.13.2 does not build with this Go as released: its golang.org/x/tools v0.19.0 fails to
# compile on today's Go (internal/tokeninternal asserts the old size of token.FileSet), and
# `go install module@version` cannot take a fix (nor run here: the proxy refuses the version list it
# reads for deprecations). So its module is copied (its go.mod keeps its excludes), x/tools is raised
# to v0.34.0 (v0.24-v0.32 still fail the same way), and vbom.ml/util, an old module the proxy no
# longer serves that the graph names but no package imports, becomes a local empty module. Then
# `go build -mod=mod` resolves the rest from the proxy.
build_skaffold() {
  [ -x "$bin/skaffold" ] && return 0
  log "building skaffold $SKAFFOLD_VERSION (cold: several minutes)"
  local dir src=$work/skaffold-$SKAFFOLD_VERSION
  dir=$(cd "$work" && go mod download -json "github.com/GoogleContainerTools/skaffold/v2@$SKAFFOLD_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "error: could not download skaffold $SKAFFOLD_VERSION" >&2; exit 1; }
  rm -rf "$src" && mkdir -p "$src" && cp -r "$dir"/. "$src"/ && chmod -R u+w "$src" && rm -rf "$src/vendor"
  mkdir -p "$src/stub/vbom" && echo 'module vbom.ml/util' >"$src/stub/vbom/go.mod"
  printf '%s\n' 'replace golang.org/x/tools => golang.org/x/tools v0.34.0' \
    'replace vbom.ml/util => ./stub/vbom' >>"$src/go.mod"
  (cd "$src" && GOFLAGS="$GOFLAGS -mod=mod" go build -trimpath -ldflags "-s -w" -o "$bin/skaffold" ./cmd/skaffold)
}

build_etcd
build_kubernetes
go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
build_skaffold
go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"
if [ "$with_node" = 1 ]; then
  go_install crictl sigs.k8s.io/cri-tools/cmd/crictl "$CRICTL_VERSION"
  build_coredns
fi
# The registry's main package lives in its module; `go install` takes it as released.
[ "$with_registry" = 1 ] && go_install registry github.com/distribution/distribution/v3/cmd/registry "$REGISTRY_VERSION"
# kwok's stage files (fake Pod/Node lifecycles) ship in its module source.
if [ ! -d "$cache/$K8S_VERSION/kwok-stages" ]; then
  src=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
  [ -d "$src" ] || (cd "$work/etcd" && go mod download "sigs.k8s.io/kwok@$KWOK_VERSION")
  mkdir -p "$cache/$K8S_VERSION/kwok-stages"
  cp -r "$src"/. "$cache/$K8S_VERSION/kwok-stages/"
  chmod -R u+w "$cache/$K8S_VERSION/kwok-stages"
fi
log "ready: $(ls "$bin" | tr '\n' ' ')in $bin"
echo "$bin"
