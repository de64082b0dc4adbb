#!/usr/bin/env bash
# Make a Docker-compatible engine answer on this machine, and make the base image the stack's
# image is built from. Idempotent: where the engine already answers and the base image exists,
# it does nothing.
#
#   ELIZADB_ENGINE=auto    (default) an engine that already answers ($DOCKER_HOST, Docker's
#                          socket, Podman's socket); where none does, install and start Podman
#   ELIZADB_ENGINE=podman  Podman's Docker-compatible API on /run/podman/podman.sock
#   ELIZADB_ENGINE=docker  Docker Engine (Debian's docker.io) on /var/run/docker.sock
#
# Prints, as its last line, the environment to use:  DOCKER_HOST=... ELIZADB_BASE_IMAGE=...
set -euo pipefail

log() { printf '[bootstrap-engine] %s\n' "$*" >&2; }

PODMAN_SOCK=/run/podman/podman.sock
DOCKER_SOCK=/var/run/docker.sock
BASE_TAG=localhost/debian:trixie
ENGINE=${ELIZADB_ENGINE:-auto}

case "$ENGINE" in
  auto | podman | docker) ;;
  *)
    log "ELIZADB_ENGINE=$ENGINE is not an engine this kit knows: use auto, podman or docker"
    exit 2
    ;;
esac

engine_answers() {
  if [[ "$1" == unix://* ]]; then
    [[ -S "${1#unix://}" ]] && [[ "$(curl -s -m 5 --unix-socket "${1#unix://}" http://d/_ping)" == OK ]]
  else
    python3 - "$1" <<'PY' >/dev/null 2>&1
import sys, docker
docker.DockerClient(base_url=sys.argv[1], timeout=5).ping()
PY
  fi
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

# -- Podman -----------------------------------------------------------------------------------
install_podman() {
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null \
    || ! command -v debootstrap >/dev/null; then
    log "installing Podman from Debian's packages"
    apt_install podman runc debootstrap
  fi
  # crun fails here ("cgroups in hybrid mode not supported") and the default ulimits exceed the
  # machine's hard limits, so every container would fail to start without these settings.
  mkdir -p /etc/containers
  cat >/etc/containers/containers.conf <<'CONF'
# written by eliza-db scripts/bootstrap-engine.sh
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
}

start_podman() {
  engine_answers "unix://$PODMAN_SOCK" && return 0
  install_podman
  mkdir -p /run/podman # the service does not create it and fails to bind without it
  log "starting Podman's Docker-compatible API on unix://$PODMAN_SOCK"
  nohup podman system service --time=0 "unix://$PODMAN_SOCK" >/var/log/podman-service.log 2>&1 &
  wait_for "unix://$PODMAN_SOCK" /var/log/podman-service.log
}

# -- Docker Engine ----------------------------------------------------------------------------
start_docker() {
  engine_answers "unix://$DOCKER_SOCK" && return 0
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing Docker Engine (docker.io) from Debian's packages"
    apt_install docker.io debootstrap
  fi
  log "starting Docker Engine on unix://$DOCKER_SOCK"
  # No init system runs it on these machines: start the daemon directly, with its defaults.
  nohup dockerd --host "unix://$DOCKER_SOCK" >/var/log/elizadb-dockerd.log 2>&1 &
  wait_for "unix://$DOCKER_SOCK" /var/log/elizadb-dockerd.log
}

wait_for() {
  for _ in $(seq 1 150); do
    engine_answers "$1" && return 0
    sleep 0.2
  done
  log "the engine at $1 did not answer within 30 s; see $2"
  exit 1
}

# -- Base image -------------------------------------------------------------------------------
# The engine's own CLI (podman or docker) for image work on the chosen socket.
cli_for() {
  case "$1" in
    "unix://$PODMAN_SOCK") echo podman ;;
    *) echo "docker --host $1" ;;
  esac
}

registry_reachable() {
  # shellcheck disable=SC2086  # $cli is a command and its options
  timeout 8 $cli pull -q docker.io/library/debian:trixie-slim >/dev/null 2>&1
}

make_base_image() {
  # shellcheck disable=SC2086
  if $cli image inspect "$BASE_TAG" >/dev/null 2>&1; then return 0; fi
  # Podman may hold the image already: copying it is quicker than building it again.
  if [[ "$cli" != podman ]] && command -v podman >/dev/null \
    && podman image exists "$BASE_TAG" 2>/dev/null; then
    log "copying $BASE_TAG from Podman"
    # shellcheck disable=SC2086
    podman save "$BASE_TAG" | $cli load -q >/dev/null
    return 0
  fi
  local mirror rootfs
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n "$mirror" ]] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [[ -n "$mirror" ]] || {
    log "cannot find a Debian mirror in the apt sources"
    exit 1
  }
  rootfs=$(mktemp -d /var/tmp/elizadb-rootfs.XXXXXX)
  log "building $BASE_TAG with debootstrap from $mirror (about 30 s)"
  debootstrap --variant=minbase trixie "$rootfs" "$mirror" >/var/log/elizadb-debootstrap.log 2>&1 \
    || {
      log "debootstrap failed; see /var/log/elizadb-debootstrap.log"
      exit 1
    }
  # shellcheck disable=SC2086
  tar -C "$rootfs" -c . | $cli import - "$BASE_TAG" >/dev/null
  rm -rf "$rootfs"
}

# -- Choose ---------------------------------------------------------------------------------
pick_answering() {
  if [[ -n "${DOCKER_HOST:-}" ]] && engine_answers "$DOCKER_HOST"; then
    echo "$DOCKER_HOST"
    return
  fi
  for candidate in "unix://$DOCKER_SOCK" "unix://$PODMAN_SOCK"; do
    if engine_answers "$candidate"; then
      echo "$candidate"
      return
    fi
  done
  return 1
}

case "$ENGINE" in
  podman)
    start_podman
    host="unix://$PODMAN_SOCK"
    ;;
  docker)
    start_docker
    host="unix://$DOCKER_SOCK"
    ;;
  auto)
    host=$(pick_answering) || {
      log "no container engine answers"
      start_podman
      host="unix://$PODMAN_SOCK"
    }
    ;;
esac

base="${ELIZADB_BASE_IMAGE:-}"
if [[ -z "$base" ]]; then
  cli=$(cli_for "$host")
  # shellcheck disable=SC2086
  if $cli image inspect "$BASE_TAG" >/dev/null 2>&1 || ! registry_reachable; then
    make_base_image
    base=$BASE_TAG
  else
    base=debian:trixie-slim
  fi
fi
log "engine: $host   base image: $base"
echo "DOCKER_HOST=$host ELIZADB_BASE_IMAGE=$base"
