#!/usr/bin/env bash
# elizadb-entrypoint MODE — what every eliza-db container runs.
#
#   primary    initdb on first start, then PostgreSQL
#   replica    pg_basebackup from the primary on first start (over TLS, into a physical slot),
#              then PostgreSQL as a hot standby
#
# The mode matters only for an empty data directory. Afterwards the data directory decides
# (standby.signal or not), so a promoted replica stays primary when its container restarts.
#   pgbouncer  PgBouncer in front of the primary
#   job        bootstrap roles, database and slots on the primary, apply sql/ migrations, then
#              keep only the HNSW indexes of elizadb:vector.operators (vector_indexes.sql)
#   patroni    Patroni runs PostgreSQL and decides its role (highly available stacks)
#   etcd       one member of the etcd cluster Patroni elects its leader in
#   router     HAProxy: the pooler's way to whichever node Patroni made leader
#
# Files arrive as uploads under /etc/elizadb (rendered by infra/render, identical for `pulumi up`
# and the local deploy). Uploads get default owner and mode, and PostgreSQL and libpq refuse keys
# and password files that others can read, so this script copies them into place with mode 0600
# before dropping to the postgres user.
set -euo pipefail

MODE=${1:?usage: elizadb-entrypoint primary|replica|pgbouncer|job|backup|patroni|etcd|router}
ETC=/etc/elizadb
PRIVATE=/var/lib/postgresql/private
CONF="$ETC/postgresql.conf"

log() { printf '%s elizadb-entrypoint[%s]: %s\n' "$(date -u +%FT%TZ)" "$MODE" "$*" >&2; }
as_postgres() { HOME=/var/lib/postgresql setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

install_private_files() {
  install -d -o postgres -g postgres -m 0700 "$PRIVATE"
  local f
  for f in "$ETC"/tls/server.key "$ETC"/secrets/*; do
    [[ -f "$f" ]] || continue
    install -o postgres -g postgres -m 0600 "$f" "$PRIVATE/$(basename "$f")"
  done
  # The uploaded originals are no longer needed by anyone else.
  chmod -R go-rwx "$ETC/secrets" "$ETC/tls/server.key" 2>/dev/null || true
  install -d -o postgres -g postgres -m 2775 /run/postgresql
  install -d -o postgres -g postgres -m 0700 "$(dirname "$PGDATA")"
}

# Another node that accepts writes, or nothing. Asked of every peer but this node, as the
# superuser (pg_rewind will need that connection anyway), over verified TLS. ELIZADB_PEERS is
# "name=address,..." so that no name is looked up (names of replicas that do not exist would be
# forwarded to upstream DNS and time out).
other_primary() {
  local pair name addr
  IFS=, read -ra pairs <<< "${ELIZADB_PEERS:-}"
  for pair in "${pairs[@]}"; do
    name=${pair%%=*} addr=${pair#*=}
    [[ "$name" == "${ELIZADB_NODE:-}" ]] && continue
    if as_postgres env PGPASSFILE="$PRIVATE/pgpass" psql -X -q -At -c "SELECT 1" \
        "host=$name hostaddr=$addr port=5432 user=postgres dbname=postgres connect_timeout=2 $(tls_params) target_session_attrs=read-write" \
        >/dev/null 2>&1; then
      echo "$name=$addr"
      return 0
    fi
  done
  return 1
}

tls_params() {
  if grep -q "^ssl = on" "$CONF"; then echo "sslmode=verify-full sslrootcert=$ETC/tls/ca.crt"; else echo "sslmode=disable"; fi
}

clone_from_primary() {
  deadline=$((SECONDS + ${ELIZADB_CLONE_TIMEOUT:-300}))
  until as_postgres env PGPASSFILE="$PRIVATE/pgpass" pg_basebackup -D "$PGDATA" \
      -d "$ELIZADB_PRIMARY_CONNINFO" -X stream -S "$ELIZADB_SLOT" -c fast; do
    rm -rf "${PGDATA:?}"
    if ((SECONDS >= deadline)); then log "the primary could not be cloned in time"; exit 1; fi
    log "primary not ready for cloning yet; retrying"
    sleep 1
  done
  # A hot standby from now on. Only the clone decides this: later starts keep whatever the
  # data directory says, so a promoted node stays primary. primary_conninfo (every node,
  # read-write target) and primary_slot_name come from the rendered postgresql.conf.
  as_postgres touch "$PGDATA/standby.signal"
}

# Never a second primary: a node whose data says "primary" but finds another primary among
# its peers (it was failed over while down) rewinds onto that primary's timeline and comes back
# as its standby. When rewind cannot, it is cloned afresh; the old data is kept aside.
rejoin_if_superseded() {
  [[ -f "$PGDATA/standby.signal" ]] && return 0
  local other
  other=$(other_primary) || return 0
  log "another primary is running (${other%%=*}): rejoining it as a standby"
  if as_postgres env PGPASSFILE="$PRIVATE/pgpass" pg_rewind --target-pgdata="$PGDATA" \
      --source-server="host=${other%%=*} hostaddr=${other#*=} port=5432 user=postgres dbname=postgres connect_timeout=5 $(tls_params)" \
      --progress; then
    log "pg_rewind done"
  else
    local aside
    aside="$PGDATA.superseded-$(date -u +%Y%m%dT%H%M%SZ)"
    log "pg_rewind failed: keeping the old data in $aside and cloning afresh"
    mv "$PGDATA" "$aside"
    clone_from_primary
  fi
  as_postgres touch "$PGDATA/standby.signal"
}

# A stack moving from the builtin engine to Patroni: every node's Patroni finds a data directory
# and no cluster in etcd. With no leader yet, each of them runs for the lock, and a standby can
# win it — one that lags behind the old primary would then lose the rows it never received. So a
# standby of the builtin engine (standby.signal) that Patroni has never run (Patroni renames
# initdb's postgresql.conf to postgresql.base.conf the first time it starts PostgreSQL) starts
# Patroni only once a leader holds the lock: the old primary's node, which starts Patroni at
# once and is the only candidate meanwhile. Patroni then makes this node follow it. Later starts
# of the node find postgresql.base.conf and do not wait.
wait_for_leader_if_builtin_standby() {
  [[ -f "$PGDATA/standby.signal" && ! -f "$PGDATA/postgresql.base.conf" ]] || return 0
  log "a standby of the builtin engine, not yet run by Patroni: waiting until the cluster has a leader (the old primary) before starting Patroni"
  local started=$SECONDS next=30
  until patroni_leader_elected; do
    if ((SECONDS - started >= next)); then
      log "no leader after $((SECONDS - started))s: the node that was the primary leads first; see its log"
      next=$((next + 30))
    fi
    sleep 2
  done
  log "the cluster has a leader after $((SECONDS - started))s"
}

patroni_leader_elected() {
  as_postgres timeout 20 patronictl -c "$PRIVATE/patroni.yml" list --format json 2>/dev/null |
    python3 -c 'import json, sys; sys.exit(not any(m.get("Role") == "Leader" for m in json.load(sys.stdin)))'
}

run_postgres() {
  # PostgreSQL refuses a data directory that others can read.
  chmod 0700 "$PGDATA"
  log "starting PostgreSQL"
  HOME=/var/lib/postgresql exec setpriv --reuid=postgres --regid=postgres --init-groups \
    postgres -D "$PGDATA" -c config_file="$CONF"
}

case "$MODE" in
  primary)
    install_private_files
    if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
      log "empty data directory: initdb (scram-sha-256, data checksums for pg_rewind)"
      as_postgres initdb -D "$PGDATA" --username=postgres --pwfile="$PRIVATE/superuser" \
        --auth-local=peer --auth-host=scram-sha-256 --data-checksums \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    else
      rejoin_if_superseded
    fi
    run_postgres
    ;;

  replica)
    install_private_files
    : "${ELIZADB_PRIMARY_CONNINFO:?}" "${ELIZADB_SLOT:?}"
    if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
      log "empty data directory: cloning the primary with pg_basebackup into slot $ELIZADB_SLOT"
      clone_from_primary
    else
      rejoin_if_superseded
    fi
    run_postgres
    ;;

  pgbouncer)
    install_private_files
    log "starting PgBouncer"
    HOME=/var/lib/postgresql exec setpriv --reuid=postgres --regid=postgres --init-groups pgbouncer "$ETC/pgbouncer.ini"
    ;;

  job)
    install_private_files
    export PGPASSFILE="$PRIVATE/pgpass"
    deadline=$((SECONDS + ${ELIZADB_WAIT_TIMEOUT:-120}))
    until pg_isready -q -d "dbname=postgres connect_timeout=2"; do
      if ((SECONDS >= deadline)); then log "the primary did not accept connections in time"; exit 1; fi
      sleep 0.5
    done
    log "bootstrap: roles, database, pooler auth function, replication slots"
    as_postgres env PGPASSFILE="$PGPASSFILE" psql -X -q -v ON_ERROR_STOP=1 -d postgres \
      -f "$ETC/job/bootstrap.sql"
    log "migrations"
    as_postgres env PGPASSFILE="$PGPASSFILE" elizadb-migrate "$ETC/sql"
    # Migrations run once per file; the HNSW indexes follow elizadb:vector.operators on every
    # run (built or dropped concurrently: the memories table keeps taking writes). Each step
    # says what it did. Not a transaction: CREATE/DROP INDEX CONCURRENTLY cannot run in one.
    if [[ -f "$ETC/job/vector_indexes.sql" ]]; then
      log "vector indexes"
      as_postgres env PGPASSFILE="$PGPASSFILE" psql -X -q -v ON_ERROR_STOP=1 \
        -f "$ETC/job/vector_indexes.sql"
    fi
    log "done"
    ;;

  patroni)
    # patroni.yml (rendered by infra/render/patroni.py) holds passwords: it arrives under
    # secrets/ and is copied to $PRIVATE/patroni.yml, mode 0600. Patroni runs initdb, clones,
    # rewinds and starts PostgreSQL itself, as the postgres user.
    install_private_files
    # On several hosts the backup agent backs up through this node's pgBackRest server
    # (pgbackrest.conf configures one there), for as long as the container runs.
    if grep -q '^tls-server-address=' /etc/pgbackrest/pgbackrest.conf; then
      elizadb-backup serve &
    fi
    wait_for_leader_if_builtin_standby
    # A restore (elizadb restore) left the node's restored data beside its empty data
    # directory: Patroni bootstraps the cluster from it. Should that bootstrap fail, Patroni
    # removes what it was given and would initialise a new, empty cluster on the next start.
    if [[ -d "$(dirname "$PGDATA")/restored" ]]; then
      elizadb-patroni-restore "$PRIVATE/patroni.yml" "$(dirname "$PGDATA")/restored"
    elif [[ -f "$(dirname "$PGDATA")/restore-pending" && ! -f "$PGDATA/PG_VERSION" ]]; then
      log "a restore is pending but its restored data is gone (Patroni's bootstrap from it" \
        "failed, see the log above): refusing to initialise a new, empty cluster;" \
        "run elizadb restore again"
      exit 1
    fi
    log "starting Patroni"
    HOME=/var/lib/postgresql exec setpriv --reuid=postgres --regid=postgres --init-groups \
      patroni "$PRIVATE/patroni.yml"
    ;;

  etcd)
    # etcd.yml (infra/render/etcd.py) names the key at its private path; only etcd reads it.
    install -d -o etcd -g etcd -m 0700 /var/lib/etcd-private
    install -o etcd -g etcd -m 0600 "$ETC/tls/server.key" /var/lib/etcd-private/server.key
    chmod go-rwx "$ETC/tls/server.key"
    # The member's volume is mounted at /var/lib/etcd; a fresh one belongs to root.
    install -d -o etcd -g etcd -m 0700 /var/lib/etcd /var/lib/etcd/data
    log "starting etcd"
    exec setpriv --reuid=etcd --regid=etcd --init-groups etcd --config-file "$ETC/etcd.yml"
    ;;

  router)
    # haproxy.cfg (infra/render/router.py) holds no secret; HAProxy needs no privilege for its
    # ports (all above 1024), so it runs as its own user from the start.
    log "starting HAProxy"
    exec setpriv --reuid=haproxy --regid=haproxy --init-groups haproxy -W -db -f "$ETC/haproxy.cfg"
    ;;

  backup)
    # The backup agent (image/backup.sh): stanza, schedule, retention.
    install_private_files
    exec elizadb-backup "${@:2}"
    ;;

  *)
    echo "elizadb-entrypoint: unknown mode '$MODE' (use primary, replica, pgbouncer, job, backup, patroni or etcd)" >&2
    exit 2
    ;;
esac
