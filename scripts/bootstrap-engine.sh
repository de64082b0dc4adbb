#!/usr/bin/env bash
# Make a Docker-compatible engine answer on this machine, and make the base image the stack's
# image is built from. Idempotent: on a machine where an engine already answers and the base
# image exists, it does nothing.
#
# Prints, as its last line, the environment to use:  DOCKER_HOST=... ELIZADB_BASE_IMAGE=...
set -euo pipefail

log() { printf '[bootstrap-engine] %s\n' "$*" >&2; }

SOCK_PATH=/run/podman/podman.sock
BASE_TAG=localhost/debian:trixie

engine_answers() {
  python3 - "$1" <<'PY' >/dev/null 2>&1
import sys, docker
docker.DockerClient(base_url=sys.argv[1], timeout=5).ping()
PY
}

pick_docker_host() {
  if [[ -n "${DOCKER_HOST:-}" ]] && engine_answers "$DOCKER_HOST"; then echo "$DOCKER_HOST"; return; fi
  for candidate in unix:///var/run/docker.sock "unix://$SOCK_PATH"; do
    if engine_answers "$candidate"; then echo "$candidate"; return; fi
  done
  return 1
}

install_podman() {
  log "no container engine answers: installing Podman from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq podman runc debootstrap >/dev/null
  fi
  # crun fails here ("cgroups in hybrid mode not supported") and the default ulimits exceed the
  # machine's hard limits, so every container would fail to start without these settings.
  mkdir -p /etc/containers
  cat > /etc/containers/containers.conf <<'CONF'
# written by eliza-db scripts/bootstrap-engine.sh
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
}

start_podman_socket() {
  mkdir -p /run/podman  # the service does not create it and fails to bind without it
  log "starting Podman's Docker-compatible API on unix://$SOCK_PATH"
  nohup podman system service --time=0 "unix://$SOCK_PATH" >/var/log/podman-service.log 2>&1 &
  for _ in $(seq 1 50); do
    engine_answers "unix://$SOCK_PATH" && return 0
    sleep 0.2
  done
  log "Podman's API did not answer within 10 s; see /var/log/podman-service.log"
  exit 1
}

registry_reachable() {
  timeout 8 podman pull -q docker.io/library/debian:trixie-slim >/dev/null 2>&1
}

make_base_image() {
  if podman image exists "$BASE_TAG" 2>/dev/null; then return 0; fi
  local mirror rootfs
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n "$mirror" ]] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [[ -n "$mirror" ]] || { log "cannot find a Debian mirror in the apt sources"; exit 1; }
  rootfs=$(mktemp -d /var/tmp/elizadb-rootfs.XXXXXX)
  log "building $BASE_TAG with debootstrap from $mirror (about 30 s)"
  debootstrap --variant=minbase trixie "$rootfs" "$mirror" >/var/log/elizadb-debootstrap.log 2>&1 \
    || { log "debootstrap failed; see /var/log/elizadb-debootstrap.log"; exit 1; }
  tar -C "$rootfs" -c . | podman import -q - "$BASE_TAG" >/dev/null
  rm -rf "$rootfs"
}

host=$(pick_docker_host) || { install_podman; start_podman_socket; host="unix://$SOCK_PATH"; }

base="${ELIZADB_BASE_IMAGE:-}"
if [[ -z "$base" ]]; then
  if command -v podman >/dev/null && [[ "$host" == "unix://$SOCK_PATH" ]]; then
    if podman image exists "$BASE_TAG" || ! registry_reachable; then
      make_base_image
      base=$BASE_TAG
    else
      base=debian:trixie-slim
    fi
  else
    base=debian:trixie-slim
  fi
fi
log "engine: $host   base image: $base"
echo "DOCKER_HOST=$host ELIZADB_BASE_IMAGE=$base"
