#!/usr/bin/env bash
# elizadb-backup COMMAND — the backup agent, and the helper of restore jobs. The entrypoint's
# `backup` mode execs it as root; pgBackRest and psql run as the postgres OS user.
#
# In the backup agent (infra/components/backup.py: every node's data and socket volumes mounted
# under /var/lib/elizadb/nodes/<node>/{data,run}, the repository at /var/lib/pgbackrest):
#   schedule        main loop: stanza, archive check, then full and incremental backups when due
#                   (ELIZADB_FULL_EVERY / ELIZADB_INCR_EVERY seconds since the newest backup)
#   run TYPE        one backup now (full, diff or incr); waits for a running one to finish
#   check           `pgbackrest check` against the current primary: WAL archiving works
#   info            `pgbackrest info --output=json`
#   status          the schedule's last attempt, as key=value lines
#   health          exits 0 once the agent is ready (stanza created, archiving checked)
#   serve           pgBackRest's TLS server, restarted when it stops (a stack on several hosts:
#                   the agent serves the repository, each node its data; pgbackrest.conf says so)
# On several hosts the agent is pgBackRest's repository host: its file names every node's
# server (pg1-host..), pgBackRest finds the primary among them, and no volume of a node is here.
# In a restore job (one node's data volume at /var/lib/postgresql/data; no server running on it):
#   restore ARGS    `pgbackrest restore ARGS` into the data directory
#   clear-data      remove the data directory, so that the node's entrypoint clones it afresh
#   restore-aside ARGS  `pgbackrest restore ARGS` into $RESTORED, beside the data directory (a
#                   Patroni node: its data stays until Patroni bootstraps from the restore)
# Run by Patroni, as postgres, in a Patroni node's container:
#   adopt-restored  move $RESTORED into place as the data directory (a custom bootstrap method,
#                   written into patroni.yml by elizadb-patroni-restore)
#   copy-repo DIR   copy the repository mounted at DIR into this job's (empty) backup volume
set -euo pipefail

STANZA=elizadb
NODES_DIR=/var/lib/elizadb/nodes
# pgBackRest's pg1-path is $DATA_LINK/pg17, the servers' data_directory; in the agent this path
# is a symbolic link to the current primary's data volume.
DATA_LINK=/var/lib/postgresql/data
PGDATA=${PGDATA:-$DATA_LINK/pg17}
RESTORED=$DATA_LINK/restored
REPO=/var/lib/pgbackrest
CONF=/etc/pgbackrest/pgbackrest.conf
STATE=/run/elizadb-backup
LOCK=$STATE/lock
TICK=${ELIZADB_BACKUP_TICK:-5}
RETRY_AFTER=${ELIZADB_BACKUP_RETRY_AFTER:-30}
# Until the stanza exists: the deploy waits for it (on several hosts, while the cluster forms).
SETUP_RETRY_AFTER=5
export PGCONNECT_TIMEOUT=3

log() { printf '%s elizadb-backup: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }
die() { log "$*"; exit 1; }
as_postgres() { HOME=/var/lib/postgresql setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
pgbackrest_() { as_postgres pgbackrest --stanza="$STANZA" "$@"; }

# The node whose server accepts writes now (its folder name under NODES_DIR). Fails when none
# or more than one does: a backup of the wrong server, or of one of two primaries, is worse than
# none.
current_primary() {
  local dir node found=()
  for dir in "$NODES_DIR"/*/; do
    dir=${dir%/}
    node=$(basename "$dir")
    [[ -S "$dir/run/.s.PGSQL.5432" ]] || continue
    if [[ "$(as_postgres psql -X -q -At -h "$dir/run" -U postgres -d postgres \
          -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" == f ]]; then
      found+=("$node")
    fi
  done
  case ${#found[@]} in
    1) echo "${found[0]}" ;;
    0) log "no node accepts writes: nothing to back up from"; return 1 ;;
    *) log "more than one node accepts writes (${found[*]}): refusing to back up"; return 1 ;;
  esac
}

# pgBackRest requires pg1-path to equal the server's data_directory, the same path on every
# node; so that path is made a link to the current primary's data volume (replaced atomically).
point_at() {
  local node=$1
  if [[ -d "$DATA_LINK" && ! -L "$DATA_LINK" ]]; then rmdir "$DATA_LINK"; fi
  ln -sfn "$NODES_DIR/$node/data" "$DATA_LINK.next"
  mv -Tf "$DATA_LINK.next" "$DATA_LINK"
}

# Whether this agent is a repository host (a stack on several hosts).
remote_nodes() { grep -q '^pg1-host=' "$CONF"; }

# pgbackrest ARGS against the current primary: its data through the link, its socket directly;
# on several hosts pgBackRest asks every node's server itself.
on_primary() {
  local node
  if remote_nodes; then
    pgbackrest_ "$@"
    return
  fi
  node=$(current_primary) || return 1
  point_at "$node"
  log "current primary: $node"
  pgbackrest_ --pg1-socket-path="$NODES_DIR/$node/run" "$@"
}

# "$@" while holding the agent's lock: the schedule and `run` never move the link under each
# other's feet (pgBackRest would refuse a second backup anyway).
locked() {
  install -d -m 0755 "$STATE"
  (
    flock -w "${ELIZADB_LOCK_WAIT:-7200}" 9 || die "another backup is still running"
    "$@"
  ) 9>"$LOCK"
}

# "<newest full's stop> <newest backup's stop>" in epoch seconds (0 when there is none).
newest_backups() {
  pgbackrest_ info --output=json | perl -MJSON::PP -e '
    my $info = decode_json(do { local $/; <STDIN> });
    my ($full, $any) = (0, 0);
    for my $stanza (@$info) {
      for my $b (@{ $stanza->{backup} || [] }) {
        my $t = $b->{timestamp}{stop};
        $any = $t if $t > $any;
        $full = $t if $b->{type} eq "full" && $t > $full;
      }
    }
    print "$full $any\n";'
}

record() {
  local result=$1 kind=$2
  printf 'last_attempt=%s\nlast_type=%s\nlast_result=%s\n' "$(date +%s)" "$kind" "$result" \
    > "$STATE/status.next"
  mv -f "$STATE/status.next" "$STATE/status"
}

# pgBackRest's TLS server, in the foreground, restarted whenever it stops.
serve() {
  grep -q '^tls-server-address=' "$CONF" || die "$CONF configures no TLS server"
  log "pgBackRest's TLS server on port $(sed -n 's/^tls-server-port=//p' "$CONF")"
  while :; do
    as_postgres pgbackrest server || log "pgBackRest's server stopped (exit $?); restarting it"
    sleep 1
  done
}

schedule() {
  : "${ELIZADB_FULL_EVERY:?}" "${ELIZADB_INCR_EVERY:?}"
  install -d -m 0755 "$STATE"
  rm -f "$STATE/ready"
  # PID 1: forward a stop to pgBackRest (it ends a backup cleanly) and leave.
  trap 'log "stopping"; trap - TERM INT; kill -TERM 0 2>/dev/null || true; wait || true; exit 0' TERM INT
  # The repository host of a stack on several hosts: the nodes push WAL to its server.
  if grep -q '^tls-server-address=' "$CONF"; then serve & fi
  log "schedule: full every ${ELIZADB_FULL_EVERY}s, incremental every ${ELIZADB_INCR_EVERY}s"
  # On several hosts a node's server may not answer yet. pgBackRest retries each connection for
  # io-timeout (60 s by default), and stanza-create holds the stanza's archive lock meanwhile,
  # which fails every node's archive-push (minutes, with three nodes). The setup gives up after
  # the nodes' own 5 s and tries again; backups keep the default.
  local setup=()
  if remote_nodes; then setup=(--io-timeout=5); fi
  until locked on_primary --log-level-console=info "${setup[@]}" stanza-create \
      && locked on_primary --log-level-console=info "${setup[@]}" check; do
    log "stanza or WAL archiving not ready yet; retrying in ${SETUP_RETRY_AFTER}s"
    sleep "$SETUP_RETRY_AFTER" & wait $!
  done
  touch "$STATE/ready"
  local retry_at=0 now full any kind
  while :; do
    now=$(date +%s)
    kind=
    if ((now >= retry_at)) && read -r full any < <(newest_backups); then
      if ((full == 0 || now - full >= ELIZADB_FULL_EVERY)); then
        kind=full
      elif ((now - any >= ELIZADB_INCR_EVERY)); then
        kind=incr
      fi
    fi
    if [[ -n $kind ]]; then
      log "scheduled $kind backup"
      locked on_primary --log-level-console=info backup --type="$kind" &
      if wait $!; then
        record ok "$kind"
        retry_at=0
      else
        log "scheduled $kind backup failed; next attempt in ${RETRY_AFTER}s"
        record failed "$kind"
        retry_at=$((now + RETRY_AFTER))
      fi
    fi
    sleep "$TICK" & wait $!
  done
}

restore() {
  [[ -d "$DATA_LINK" && ! -L "$DATA_LINK" ]] || die "no data volume mounted at $DATA_LINK"
  install -d -o postgres -g postgres -m 0700 "$PGDATA"
  # The orchestrator (elizadb/ops/restore.py) removed every container of the stack first, so a
  # postmaster.pid left here is stale (a server that was killed), and pgBackRest would refuse it.
  if [[ -f "$PGDATA/postmaster.pid" ]]; then
    log "removing a stale postmaster.pid (no server runs on this volume)"
    rm -f "$PGDATA/postmaster.pid"
  fi
  pgbackrest_ --log-level-console=info restore "$@"
  forget_patroni
}

# A backup of a Patroni stack holds what Patroni wrote into the data directory. Restored for the
# builtin engine (a restore into a new stack), it would tell a later move to Patroni that Patroni
# had run this node already, and every standby cloned from it: they would not wait for the old
# primary to lead (image/entrypoint.sh) and could win the leadership themselves. So the data
# directory is put back as initdb left it: Patroni's rename of postgresql.conf undone, its
# cached dynamic configuration and its copies of the configuration files removed.
forget_patroni() {
  [[ -f "$PGDATA/postgresql.base.conf" ]] || return 0
  log "the backup was taken under Patroni: removing Patroni's files from the data directory"
  mv -f "$PGDATA/postgresql.base.conf" "$PGDATA/postgresql.conf"
  rm -f "$PGDATA/patroni.dynamic.json" "$PGDATA"/*.backup
}

restore_aside() {
  [[ -d "$DATA_LINK" && ! -L "$DATA_LINK" ]] || die "no data volume mounted at $DATA_LINK"
  rm -rf "$RESTORED"
  install -d -o postgres -g postgres -m 0700 "$RESTORED"
  pgbackrest_ --log-level-console=info --pg1-path="$RESTORED" restore "$@"
  # Until the orchestrator has seen the restored cluster lead, the node's entrypoint refuses to
  # let Patroni initialise a new, empty one in its place (image/entrypoint.sh).
  touch "$DATA_LINK/restore-pending"
  log "restored system identifier: $(pg_controldata "$RESTORED" | sed -n 's/^Database system identifier: *//p')"
}

adopt_restored() {
  [[ -f "$RESTORED/PG_VERSION" ]] || die "no restored data directory at $RESTORED"
  # Patroni bootstraps an empty data directory; one it made empty is removed first.
  if [[ -d "$PGDATA" ]]; then
    rmdir "$PGDATA" || die "$PGDATA is not empty: refusing to put the restore over it"
  fi
  mv "$RESTORED" "$PGDATA"
  log "the restored data directory is now $PGDATA"
}

clear_data() {
  [[ -d "$DATA_LINK" && ! -L "$DATA_LINK" ]] || die "no data volume mounted at $DATA_LINK"
  rm -rf "${PGDATA:?}"
  log "removed $PGDATA: the node clones its primary when it starts"
}

copy_repo() {
  local source=${1:?usage: elizadb-backup copy-repo DIR}
  [[ -f "$source/backup/$STANZA/backup.info" ]] \
    || die "$source holds no pgBackRest repository with stanza $STANZA"
  if [[ -n "$(ls -A "$REPO")" ]]; then
    die "$REPO is not empty: refusing to mix two repositories"
  fi
  cp -a "$source/." "$REPO/"
  # A repository carried from another host arrives owned by root (Podman's archives say so).
  chown -R postgres:postgres "$REPO"
  log "copied the repository ($(du -sh "$REPO" | cut -f1))"
}

COMMAND=${1:-}
shift || true
case "$COMMAND" in
  schedule) schedule ;;
  run)
    case "${1:-}" in full | diff | incr) ;; *) die "usage: elizadb-backup run full|diff|incr" ;; esac
    locked on_primary --log-level-console=info backup --type="$1"
    ;;
  check) locked on_primary --log-level-console=info check ;;
  info) pgbackrest_ info --output=json ;;
  status) cat "$STATE/status" 2>/dev/null || true ;;
  health) [[ -f "$STATE/ready" ]] ;;
  serve) serve ;;
  restore) restore "$@" ;;
  clear-data) clear_data ;;
  restore-aside) restore_aside "$@" ;;
  adopt-restored) adopt_restored ;;
  copy-repo) copy_repo "$@" ;;
  *)
    echo "usage: elizadb-backup schedule|run TYPE|check|info|status|health|serve|restore ARGS|clear-data|restore-aside ARGS|adopt-restored|copy-repo DIR" >&2
    exit 2
    ;;
esac
