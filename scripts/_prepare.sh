# shellcheck shell=bash
# Sourced by scripts/setup and scripts/test: a container engine, the base image and a Python
# environment with eliza-db installed. Idempotent and quick when everything is already there.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { printf '\n== %s  [%s]\n' "$*" "$(date -u +%T)" >&2; }

# prepare_engine [auto|podman|docker]: start (installing if need be) that engine and export its
# DOCKER_HOST and ELIZADB_BASE_IMAGE. A DOCKER_HOST that was set for another engine is dropped.
prepare_engine() {
  local engine=${1:-auto}
  say "container engine ($engine)"
  if [[ "$engine" != auto ]]; then unset DOCKER_HOST ELIZADB_BASE_IMAGE; fi
  engine_env=$(ELIZADB_ENGINE=$engine bash scripts/bootstrap-engine.sh | tail -n 1)
  local words
  read -r -a words <<<"$engine_env" # DOCKER_HOST=... ELIZADB_BASE_IMAGE=...
  export "${words[@]}"
}

prepare_python() {
  say "Python environment (.venv)"
  if [[ ! -x .venv/bin/python ]]; then
    if ! python3 -m venv .venv >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv .venv
    fi
  fi
  # Reinstall only when the dependency list changed.
  local stamp=.venv/.elizadb-deps want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" >"$stamp"
  fi
  export PATH="$ROOT/.venv/bin:$PATH"
}
