#!/usr/bin/env bash
# elizadb-migrate DIR — apply the eliza-db schema migrations in DIR to one database.
#
# Installed in the image as /usr/local/bin/elizadb-migrate.
#
# Connection: libpq environment variables only (PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE,
# PGSSLROOTCERT, PGPASSFILE). The role must be a superuser: the first migrations create
# extensions, and later ones SET ROLE to the owner of the schema objects.
#
# Configuration: ELIZADB_EMBEDDING_DIMS is passed to every file as the psql variable
# :embedding_dims; ELIZADB_EMBEDDING_MAX_DIMS is its upper bound (both set by the bootstrap job).
#
# What it does:
#   1. holds a session advisory lock for the whole run, so that two runners started at once
#      (two containers, a restart loop) apply each file exactly once;
#   2. creates the ledger elizadb.schema_migrations if it is missing;
#   3. checks EVERY file against the ledger before applying ANY: a file that was applied with a
#      different checksum is drift, reported on stderr, and the run stops with exit 3;
#   4. applies each file not yet recorded, together with its ledger row, in one transaction
#      (psql --single-transaction -v ON_ERROR_STOP=1), and prints "applied F" or "unchanged F".
#
# Exit status: 0 success; 1 SQL or connection error (psql's message is on stderr); 2 usage or
# configuration error; 3 drift.
set -euo pipefail

# "C" makes the glob below sort file names bytewise, which is the documented apply order.
export LC_ALL=C
# Lets pg_stat_activity show who holds the lock; a caller's own PGAPPNAME wins.
export PGAPPNAME="${PGAPPNAME:-elizadb-migrate}"

readonly PROG=elizadb-migrate
# One fixed key: advisory locks are per database, so runs against different databases of the
# same server do not wait for each other.
readonly LOCK_KEY=7261746975730017

die() {
  local code=$1
  shift
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit "$code"
}

# psql as every step uses it: no ~/.psqlrc, quiet, unaligned, tuples only, stop on the first error.
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

[[ $# -eq 1 ]] || die 2 "usage: $PROG DIR"
dir=${1%/}
[[ -d $dir ]] || die 2 "$dir is not a directory"

# Both come from the bootstrap job, rendered from infra/settings.py (DEFAULT_EMBEDDING_DIMENSIONS,
# MAX_EMBEDDING_DIMENSIONS: the most an HNSW index accepts for the vector type; beyond it the
# index migrations would fail halfway through).
dims=${ELIZADB_EMBEDDING_DIMS:?ELIZADB_EMBEDDING_DIMS is not set (the bootstrap job sets it)}
max=${ELIZADB_EMBEDDING_MAX_DIMS:?ELIZADB_EMBEDDING_MAX_DIMS is not set (the bootstrap job sets it)}
[[ $max =~ ^[1-9][0-9]*$ ]] || die 2 "ELIZADB_EMBEDDING_MAX_DIMS must be a whole number, not '$max'"
if ! [[ $dims =~ ^[1-9][0-9]{0,5}$ ]] || ((dims > max)); then
  die 2 "ELIZADB_EMBEDDING_DIMS must be a whole number from 1 to $max, not '$dims'"
fi

# ---- the files, in apply order -------------------------------------------------------------
files=()
declare -A file_of_version=()
shopt -s nullglob
for path in "$dir"/*.sql; do
  base=${path##*/}
  if ! [[ $base =~ ^([0-9]{4})_[A-Za-z0-9_-]+\.sql$ ]]; then
    die 2 "$base: a migration file must be named NNNN_short_name.sql"
  fi
  version=${BASH_REMATCH[1]}
  if [[ -n ${file_of_version[$version]:-} ]]; then
    die 2 "$base and ${file_of_version[$version]} share the version $version"
  fi
  file_of_version[$version]=$base
  files+=("$path")
done
shopt -u nullglob
((${#files[@]} > 0)) || die 2 "$dir holds no NNNN_short_name.sql files"

# Fail early, and with a clear message, rather than on the first CREATE EXTENSION.
is_super=$(q -c "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") || exit 1
[[ $is_super == t ]] || die 2 "the role $(q -c 'SELECT current_user') is not a superuser; migrations create extensions and must run as one"

# ---- the lock -------------------------------------------------------------------------------
# A session lock has to live in one session for the whole run, but every file gets its own psql
# session (so that SET ROLE or SET in one file cannot leak into the next). So one extra psql
# session, fed through a coprocess, only holds the lock; closing its stdin ends it and releases
# the lock, also when this script dies.
coproc LOCKER { exec psql -X -q -A -t -v ON_ERROR_STOP=1; }
lock_out=${LOCKER[0]}
lock_in=${LOCKER[1]}
# shellcheck disable=SC2153  # LOCKER_PID is set by coproc
locker_pid=$LOCKER_PID

printf 'SELECT pg_try_advisory_lock(%s);\n' "$LOCK_KEY" >&"$lock_in"
IFS= read -r got <&"$lock_out" || die 1 "could not open a session to take the migration lock"
if [[ $got != t ]]; then
  printf '%s: another elizadb-migrate holds the lock on this database; waiting for it\n' "$PROG" >&2
  printf "SELECT 'locked' FROM pg_advisory_lock(%s);\n" "$LOCK_KEY" >&"$lock_in"
  IFS= read -r got <&"$lock_out" || die 1 "lost the session that waits for the migration lock"
fi

# ---- the ledger -----------------------------------------------------------------------------
q <<'SQL' || exit 1
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS elizadb;
CREATE TABLE IF NOT EXISTS elizadb.schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,  -- sha256 hex of the file's bytes
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE elizadb.schema_migrations IS
    'Migrations applied by elizadb-migrate: one row per sql/NNNN_name.sql file (version = NNNN).';
SQL

ledger=$(q -F $'\t' -c "SELECT version, checksum FROM elizadb.schema_migrations ORDER BY version") || exit 1
declare -A applied=()
while IFS=$'\t' read -r version checksum; do
  [[ -n $version ]] && applied[$version]=$checksum
done <<<"$ledger"

# ---- drift: check every file before applying any ---------------------------------------------
declare -A checksum_of=()
drift=0
for path in "${files[@]}"; do
  base=${path##*/}
  version=${base:0:4}
  sum=$(sha256sum -- "$path") || die 1 "cannot read $path"
  sum=${sum%% *}
  checksum_of[$version]=$sum
  if [[ -n ${applied[$version]:-} && ${applied[$version]} != "$sum" ]]; then
    printf '%s: drift: %s was applied with checksum %s but the file now has %s; an applied migration must not change — add a new migration instead\n' \
      "$PROG" "$base" "${applied[$version]}" "$sum" >&2
    drift=1
  fi
done
((drift == 0)) || exit 3

for version in "${!applied[@]}"; do
  if [[ -z ${file_of_version[$version]:-} ]]; then
    printf '%s: warning: version %s is recorded as applied but %s has no file for it\n' "$PROG" "$version" "$dir" >&2
  fi
done

# ---- apply ----------------------------------------------------------------------------------
# The ledger row goes in by a second -f in the same psql call, so --single-transaction commits
# the file and its row together or neither. RESET first: a file may have SET ROLE to the owner,
# who has no rights on the ledger.
ledger_sql=$(mktemp)
trap 'rm -f "$ledger_sql"' EXIT
cat >"$ledger_sql" <<'SQL'
RESET SESSION AUTHORIZATION;
RESET ROLE;
INSERT INTO elizadb.schema_migrations (version, name, checksum)
VALUES (:'migration_version', :'migration_name', :'migration_checksum');
SQL

for path in "${files[@]}"; do
  base=${path##*/}
  version=${base:0:4}
  if [[ -n ${applied[$version]:-} ]]; then
    echo "unchanged $base"
    continue
  fi
  # client_min_messages: keeps "already exists, skipping" notices of the idempotent DDL out of
  # the log; warnings and errors still show.
  if ! psql -X -q -1 -v ON_ERROR_STOP=1 \
    -v embedding_dims="$dims" \
    -v migration_version="$version" \
    -v migration_name="$base" \
    -v migration_checksum="${checksum_of[$version]}" \
    -c 'SET client_min_messages = warning' \
    -f "$path" \
    -f "$ledger_sql"; then
    die 1 "$base failed and was rolled back; files before it stay applied"
  fi
  echo "applied $base"
done

# ---- a dimension that no longer matches -----------------------------------------------------
# Applied files are never re-run, so a changed ELIZADB_EMBEDDING_DIMS does not alter an existing
# column. Say so, because every insert from an agent configured for the new size would fail.
actual=$(q -c "SELECT atttypmod FROM pg_attribute
               WHERE attrelid = to_regclass('public.memories') AND attname = 'embedding'") || exit 1
if [[ -n $actual && $actual != "$dims" ]]; then
  printf '%s: warning: public.memories.embedding is vector(%s) but ELIZADB_EMBEDDING_DIMS is %s; changing the dimension needs a new migration (and new embeddings)\n' \
    "$PROG" "$actual" "$dims" >&2
fi

exec {lock_in}>&-
wait "$locker_pid" 2>/dev/null || true
exit 0
