#!/usr/bin/env bash
# Builds StreamTrain's images without a Docker engine (podman/buildah with runc), checks them and
# exports them as OCI archives, on a Debian bookworm machine with no registry for base images.
#
#   tools/images/build.sh [all|setup|bases|build|check|export]...   (default: all = every step in order)
#
#   setup   install what is missing (Debian packages) and use tools/images/containers.conf
#   bases   stand-in base images, made once and cached in podman's storage: a debootstrap of
#           bookworm tagged localhost/debian:bookworm, then Python, Maven + JDK 17 and a JRE 17
#           tagged with the names the Dockerfiles' ARG defaults pin, without their digests
#           (docker.io/library/...), which every build passes as --build-arg
#   build   images/Dockerfile (three times: the trainer's and scorer's image, the -lite one of the
#           programs without TensorFlow with EXTRAS empty, and the operator's with EXTRAS=operator),
#           images/hivemq.Dockerfile, images/scorer-streams.Dockerfile as they are, tagged
#           <repository>[-lite|-operator|-hivemq|-scorer-streams]:<appVersion> and :dev (the names
#           the chart, the operator and skaffold use), and the pause image registry.k8s.io/pause:3.10.
#           IMAGES="streamtrain-operator ..." builds only those.
#   check   the built images started and checked by pytest (tests/images, marker `images`)
#   export  `podman save --format oci-archive` of each image into .streamtrain/images/, for
#           `ctr -n k8s.io images import .streamtrain/images/<name>.tar`
#
# Every podman build runs under the shared lock (STREAMTRAIN_HEAVY_LOCK, default /tmp/streamtrain-heavy.lock).
# Users with Docker keep the documented path: `docker build -f images/Dockerfile .` (images/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/tools/images
export CONTAINERS_CONF=$HERE/containers.conf
OUT=${STREAMTRAIN_IMAGES_DIR:-$ROOT/.streamtrain/images}
CACHE=$ROOT/.streamtrain/image-bases
LOCK=${STREAMTRAIN_HEAVY_LOCK:-/tmp/streamtrain-heavy.lock}
PACKAGES=(runc podman buildah skopeo debootstrap containernetworking-plugins uidmap fuse-overlayfs
          slirp4netns catatonit conmon golang-github-containers-common iptables openjdk-17-jdk-headless
          maven)

log() { printf '%s images: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# Runs a command under the shared lock and logs how long it ran once it had the lock.
locked() {
  flock "$LOCK" bash -c 'SECONDS=0; "$@" && rc=0 || rc=$?; echo "$(date -u +%H:%M:%S) images: ${SECONDS} s (lock held): ${*:1:3}..." >&2; exit $rc' locked "$@"
}
have_image() { podman image exists "$1"; }
# The value of `ARG NAME=value` in a Dockerfile: the stand-ins follow the Dockerfiles' pins.
arg_default() { sed -n "s/^ARG $2=//p" "$ROOT/$1" | head -n1; }
# A Docker short name as Docker resolves it: python:3.11 -> docker.io/library/python:3.11.
qualified() {
  case "$1" in
    */*.*/* | localhost/*) echo "$1" ;;
    */*) case "${1%%/*}" in *.* | *:*) echo "$1" ;; *) echo "docker.io/$1" ;; esac ;;
    *) echo "docker.io/library/$1" ;;
  esac
}

# The programs' image: a StreamingTraining's default spec.image (the CRD); the operator's: the chart's.
REPOSITORY=$(awk '$1 == "repository:" {print $2; exit}' charts/streamtrain/crds/streamingtrainings.yaml)
OPERATOR_REPOSITORY=$(awk '/^operator:/ {o = 1} o && $1 == "repository:" {print $2; exit}' charts/streamtrain/values.yaml)
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/streamtrain/Chart.yaml)
# The Dockerfiles pin their bases by digest; a stand-in cannot carry the registry's digest (a digest names
# content), so the stand-ins are tagged with the pinned tag alone and every build names them (BASE_ARGS).
PYTHON_BASE=$(qualified "$(arg_default images/Dockerfile PYTHON_IMAGE | sed 's/@sha256:.*//')")
MAVEN_BASE=$(qualified "$(arg_default images/hivemq.Dockerfile MAVEN_IMAGE | sed 's/@sha256:.*//')")
JRE_BASE=$(qualified "$(arg_default images/hivemq.Dockerfile JRE_IMAGE | sed 's/@sha256:.*//')")
BASE_ARGS=(--build-arg "PYTHON_IMAGE=$PYTHON_BASE" --build-arg "MAVEN_IMAGE=$MAVEN_BASE" --build-arg "JRE_IMAGE=$JRE_BASE")
PAUSE=registry.k8s.io/pause:3.10
# name (the OCI archive's file name) -> Dockerfile
declare -A DOCKERFILES=([streamtrain]=images/Dockerfile [streamtrain-lite]=images/Dockerfile
                        [streamtrain-operator]=images/Dockerfile
                        [streamtrain-hivemq]=images/hivemq.Dockerfile
                        [streamtrain-scorer-streams]=images/scorer-streams.Dockerfile)
# The operator needs only the base install and the `operator` extra: no TensorFlow, no matplotlib.
# The -lite image (simulate, bridge, preprocess) only the base install.
declare -A BUILD_ARGS=([streamtrain-operator]="--build-arg EXTRAS=operator" [streamtrain-lite]="--build-arg EXTRAS=")
# The image name (without tag) of each.
repository_of() { [ "$1" = streamtrain-operator ] && echo "$OPERATOR_REPOSITORY" || echo "$REPOSITORY${1#streamtrain}"; }

setup() {
  [ -r /etc/debian_version ] || { echo "error: tools/images/build.sh needs Debian (bookworm)" >&2; exit 1; }
  local missing=()
  for p in "${PACKAGES[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
  fi
  podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} {{.Store.GraphDriverName}}' >&2
}

# The apt mirror this machine uses for bookworm (the stand-ins install from the same one).
mirror() {
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' | awk '$2 == "bookworm" {print $1; exit}'
}

# A build context holding the machine's extra CA certificates (pip and Maven inside builds reach the
# registries through them) plus the given files.
context() {
  local dir=$CACHE/context/$1; shift
  rm -rf "$dir" && mkdir -p "$dir/ca"
  cp /usr/local/share/ca-certificates/*.crt "$dir/ca/" 2>/dev/null || true
  [ $# -eq 0 ] || cp -a "$@" "$dir/"
  echo "$dir"
}

base_debian() {
  have_image localhost/debian:bookworm && return
  local root=$CACHE/bookworm
  log "debootstrap bookworm from $(mirror)"
  rm -rf "$root"
  locked debootstrap --variant=minbase bookworm "$root" "$(mirror)" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # Like the official slim images: no package lists or downloaded packages (every stand-in runs apt-get update).
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" --numeric-owner -c . | podman import -q --change 'CMD ["/bin/bash"]' - localhost/debian:bookworm >/dev/null
  rm -rf "$root"
}

# A JRE 17 like Temurin's: the boot and platform modules of the machine's JDK (jlink), so no
# jdk.compiler, as in eclipse-temurin's JRE images.
jre_dir() {
  local out=$CACHE/jre
  if [ ! -x "$out/bin/java" ]; then
    rm -rf "$out"
    local modules; modules=$(java --add-modules ALL-SYSTEM "$HERE/JreModules.java" 2>/dev/null | paste -sd, -)
    jlink --add-modules "$modules" --strip-debug --no-man-pages --no-header-files --output "$out" >&2
  fi
  echo "$out"
}

# Apache Maven's binary distribution of the version in the Maven image's tag, by the machine's Maven.
maven_dir() {
  local version; version=$(sed -n 's/.*maven:\([0-9.]*\)-.*/\1/p' <<<"$MAVEN_BASE")
  local out=$CACHE/apache-maven-$version
  if [ ! -x "$out/bin/mvn" ]; then
    mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      -Dartifact="org.apache.maven:apache-maven:$version:tar.gz:bin" -DoutputDirectory="$CACHE" >&2
    tar -C "$CACHE" -xzf "$CACHE/apache-maven-$version-bin.tar.gz"
  fi
  echo "$out"
}

base_build() {  # tag containerfile [context files...]
  local tag=$1 file=$2; shift 2
  have_image "$tag" && return
  log "stand-in base $tag"
  locked podman build --network host --pull=never -q -f "$HERE/bases/$file" -t "$tag" "$(context "${file%%.*}" "$@")" >/dev/null
}

bases() {
  mkdir -p "$CACHE"
  base_debian
  base_build "$PYTHON_BASE" python.Containerfile
  base_build "$MAVEN_BASE" maven.Containerfile "$(maven_dir)"
  base_build "$JRE_BASE" jre.Containerfile "$(jre_dir)"
}

build() {
  local name started repository
  for name in ${IMAGES:-streamtrain streamtrain-lite streamtrain-operator streamtrain-hivemq streamtrain-scorer-streams}; do
    [ -n "${DOCKERFILES[$name]:-}" ] || { echo "error: no image $name (${!DOCKERFILES[*]})" >&2; exit 2; }
    started=$(date +%s)
    repository=$(repository_of "$name")
    log "building $repository:$VERSION from ${DOCKERFILES[$name]} ${BUILD_ARGS[$name]:-}"
    # shellcheck disable=SC2086  # BUILD_ARGS holds separate words
    locked podman build --network host --pull=never -f "${DOCKERFILES[$name]}" "${BASE_ARGS[@]}" ${BUILD_ARGS[$name]:-} \
      -t "$repository:$VERSION" -t "$repository:dev" .
    log "built $name in $(( $(date +%s) - started )) s with the wait for the lock"
  done
  local ctx; ctx=$(context pause "$(command -v catatonit)")
  locked podman build --network host --pull=never -q -f "$HERE/pause.Containerfile" -t "$PAUSE" "$ctx" >/dev/null
  podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^($REPOSITORY|$OPERATOR_REPOSITORY|${PAUSE%:*})" >&2 || true
}

check() {  # real Kafka and HiveMQ, TensorFlow in a container: heavy, so under the lock too
  locked "${PY:-.venv/bin/python}" -m pytest -q -m images tests/images
}

export_archives() {
  mkdir -p "$OUT"
  local name image
  for name in "${!DOCKERFILES[@]}" pause; do
    image=$([ "$name" = pause ] && echo "$PAUSE" || echo "$(repository_of "$name"):$VERSION")
    rm -f "$OUT/$name.tar"
    locked podman save -q --format oci-archive -o "$OUT/$name.tar" "$image"  # compresses: a minute of CPU for all
    log "exported $image to $OUT/$name.tar ($(du -h "$OUT/$name.tar" | cut -f1))"
  done
}

[ $# -gt 0 ] || set -- all
for step in "$@"; do
  case "$step" in
    all) setup; bases; build; check; export_archives ;;
    setup | bases | build | check) "$step" ;;
    export) export_archives ;;
    *) echo "usage: $0 [all|setup|bases|build|check|export]..." >&2; exit 2 ;;
  esac
done
