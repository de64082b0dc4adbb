"""Failover and switchover drills against a locally deployed stack.

A writer commits timeline-tagged rows through the pooler and records every acknowledged commit.
The primary is killed (SIGKILL, not a clean stop); a watcher notices it, the most advanced
standby is promoted, the pooler is repointed, the writer carries on; the old primary rejoins as a
standby. Then the rows are counted: every acknowledged row must be on the new primary.

  RTO  the gap in acknowledged writes: first ack after the kill minus last ack before it.
  RPO  acknowledged rows missing after promotion (0 is required with synchronous replication).

Whether the most advanced standby was promoted is judged from the standbys' replayed positions
as the drill itself reads them, over its own connections, once the primary is down and before
the failover starts: the election's own positions are recorded beside them but never used to
judge it, so a wrong election cannot grade itself right.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
import psycopg
from psycopg import sql

from elizadb import engine
from elizadb.ops import failover as ops
from infra.topology import Node
from verify.ca_file import with_root_cert

Progress = Callable[[str], None]

SCHEMA = "elizadb_drill"
SETUP = [
    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)),
    sql.SQL(
        "CREATE TABLE IF NOT EXISTS {}.writes ("
        " run text NOT NULL, seq integer NOT NULL, node text NOT NULL, timeline text NOT NULL,"
        " at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (run, seq))"
    ).format(sql.Identifier(SCHEMA)),
    sql.SQL("GRANT USAGE ON SCHEMA {} TO eliza_agent").format(sql.Identifier(SCHEMA)),
    sql.SQL("GRANT SELECT, INSERT ON {}.writes TO eliza_agent").format(sql.Identifier(SCHEMA)),
]
INSERT = sql.SQL(
    "INSERT INTO {}.writes (run, seq, node, timeline) VALUES (%s, %s,"
    " current_setting('cluster_name'), substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))"
    " RETURNING node, timeline"
).format(sql.Identifier(SCHEMA))


@dataclass(frozen=True)
class Ack:
    seq: int
    at: float  # monotonic seconds
    node: str
    timeline: str


@dataclass
class Writer:
    """Commits one row at a time through `uri` until stopped; reconnects on any error."""

    uri: str
    run: str
    # The INSERT of one row: (run, seq) in, (node, timeline) out.
    statement: sql.Composed = field(default_factory=lambda: INSERT)
    acks: list[Ack] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="drill-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        seq = 0
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.uri, autocommit=True, connect_timeout=2)
                seq += 1
                row = conn.execute(self.statement, (self.run, seq)).fetchone()
                assert row is not None
                self.acks.append(Ack(seq, time.monotonic(), row[0], row[1]))
                time.sleep(0.01)
            except psycopg.Error as exc:
                # The outcome of that commit is unknown; only acknowledged rows are counted.
                self.errors += 1
                self.last_error = str(exc).strip()
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()


class PositionReader:
    """Each standby's replayed LSN as the standby reports it, read over a connection of the
    drill's own (to its published port, opened before the fault so that reading costs one
    round trip), not through the failover code's engine exec."""

    def __init__(self, outputs: dict[str, Any], root_cert: str, names: list[str]) -> None:
        endpoints = {e["name"]: e for e in (outputs["primary"], *outputs["replicas"])}
        uri = _superuser(outputs, root_cert)
        self.conns: dict[str, psycopg.Connection[Any]] = {}
        for name in names:
            endpoint = endpoints[name]
            self.conns[name] = psycopg.connect(
                uri,
                host=endpoint["host"],
                port=endpoint["port"],
                target_session_attrs="any",
                autocommit=True,
                connect_timeout=5,
            )

    def read(self) -> dict[str, tuple[int, int]]:
        """(replayed, received) of each standby that answers."""
        found: dict[str, tuple[int, int]] = {}
        for name, conn in self.conns.items():
            try:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
                    " coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text"
                ).fetchone()
            except psycopg.Error:
                continue  # a node that cannot answer cannot be promoted either
            if row and row[0] and row[1]:
                found[name] = (ops.lsn_int(row[1]), ops.lsn_int(row[2]))
        return found

    def settled(self, timeout_s: float = 10.0) -> dict[str, int]:
        """Replayed positions once they have settled (`ops.settled`), read every 50 ms."""
        return ops.wait_settled(self.read, timeout_s, interval_s=0.05)

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def most_advanced(positions: dict[str, int]) -> list[str]:
    """Every standby at the highest position: on a tie, each of them is a right choice."""
    if not positions:
        return []
    top = max(positions.values())
    return sorted(name for name, lsn in positions.items() if lsn == top)


@dataclass
class DrillResult:
    kind: str  # "failover" | "switchover"
    run: str
    synchronous: bool
    old_primary: str
    new_primary: str
    most_advanced: list[str]  # standbys at the highest observed position (ties: all of them)
    positions: dict[str, int]  # replayed LSN of each standby as the drill read it itself
    election_positions: dict[str, int]  # what the election read (for the record only)
    acked: int
    missing: int  # RPO: acknowledged rows not on the new primary
    rto_s: float
    events: dict[str, float]  # seconds relative to the kill (or the switchover's start)
    acks: list[tuple[float, str, str, int]]  # (seconds relative to the kill, node, timeline, seq)
    primaries_after: int
    rejoin_s: float
    errors: int

    @property
    def promoted_most_advanced(self) -> bool:
        return self.new_primary in self.most_advanced

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["promoted_most_advanced"] = self.promoted_most_advanced
        timelines: dict[str, int] = {}
        for _, _, timeline, _ in self.acks:
            timelines[timeline] = timelines.get(timeline, 0) + 1
        data["ack_count_by_timeline"] = timelines
        return data


def _superuser(outputs: dict[str, Any], root_cert: str) -> str:
    return with_root_cert(
        outputs["connections"]["superuser"], root_cert, dbname=outputs["database"]
    )


def prepare(outputs: dict[str, Any], root_cert: str) -> None:
    with psycopg.connect(_superuser(outputs, root_cert), autocommit=True) as conn:
        for statement in SETUP:
            conn.execute(statement)


def _set_conninfo(cluster: ops.Cluster, node: Node, value: str | None) -> None:
    """Override (or, with None, restore) a standby's primary_conninfo; a reload applies it."""
    statement = (
        "ALTER SYSTEM RESET primary_conninfo"
        if value is None
        else f"ALTER SYSTEM SET primary_conninfo = {value}"
    )
    if (
        cluster.psql(node, statement) is None
        or cluster.psql(node, "SELECT pg_reload_conf()") != "t"
    ):
        raise RuntimeError(f"could not change primary_conninfo on {node.name}")


def _wait_down(cluster: ops.Cluster, node: Node, interval_s: float = 0.2) -> None:
    """The watcher: the primary is down when its container stops or stops answering."""
    while True:
        state = cluster.state(node)
        if not state.running or state.in_recovery is None:
            return
        time.sleep(interval_s)


def run_drill(
    client: docker.DockerClient,
    settings: Any,
    outputs: dict[str, Any],
    root_cert: str,
    progress: Progress,
    *,
    kind: str = "failover",
    write_before_s: float = 2.0,
    write_after_s: float = 2.0,
    lagging: str | None = None,
) -> DrillResult:
    """One drill. `outputs` are the stack outputs with secrets; `root_cert` the CA file path.

    `lagging` names a standby that is cut off from the primary for the second half of the writes
    before the fault (its WAL receiver stopped), so that it is really behind: the election must
    pass it over."""
    prepare(outputs, root_cert)
    cluster = ops.Cluster(client, settings)
    old = cluster.topo.current_primary
    run = uuid.uuid4().hex[:12]
    pooler_uri = with_root_cert(outputs["connections"]["agentPooler"], root_cert)
    writer = Writer(pooler_uri, run)
    writer.start()
    behind = cluster.node(lagging) if lagging else None
    if behind is not None:
        time.sleep(write_before_s / 2)
        progress(f"cutting {behind.name} off its primary so that it falls behind")
        _set_conninfo(cluster, behind, "''")
        time.sleep(write_before_s / 2)
    else:
        time.sleep(write_before_s)
    events: dict[str, float] = {}
    standbys = [n for n in cluster.topo.nodes if n != old]
    reader = PositionReader(outputs, root_cert, [n.name for n in standbys])
    try:
        if kind == "failover":
            progress(f"killing {old.name} (SIGKILL)")
            t0 = time.monotonic()
            engine.kill(client, old.name)
            if behind is not None:
                _set_conninfo(cluster, behind, None)
            _wait_down(cluster, old)
            events["detected"] = time.monotonic() - t0
            # Read before the failover starts: once a standby is promoted the others follow it
            # onto a new timeline and their positions no longer describe the fault.
            observed = reader.settled()
            events["observed"] = time.monotonic() - t0
            result = ops.failover(cluster, progress, failed=old)
            new, elected_from = result.new, result.positions
            for step, at in result.steps.items():
                events[step] = events["observed"] + at
        else:
            # A switchover has no election: the drill picks the target itself (the furthest
            # along, then the lowest index) and the switchover waits until it has all the WAL.
            observed = reader.settled()
            elected_from = cluster.standby_positions(old)
            new = max(standbys, key=lambda n: (observed.get(n.name, -1), -n.index))
            t0 = time.monotonic()
            steps = ops.switchover(cluster, new, progress)
            events.update(steps)
    finally:
        reader.close()
    first_after = _wait_for_ack_from(writer, cluster, new, t0, timeout_s=30)
    events["first_write_after"] = first_after - t0
    time.sleep(write_after_s)
    writer.stop()
    rejoin_s = 0.0
    if kind == "failover":
        rejoin_s = ops.rejoin(cluster, old, new, progress)
        events["rejoined"] = time.monotonic() - t0
    # The gap the transition caused: last write the old primary acknowledged to the first the
    # new one did (a kill takes a few milliseconds to land, so t0 alone would not split them).
    before = [a for a in writer.acks if a.node == old.short and a.at < t0 + 5]
    after = [a for a in writer.acks if a.node == new.short and a.at >= t0]
    rto = (after[0].at - before[-1].at) if before and after else float("nan")
    present = present_seqs(outputs, root_cert, run)
    missing = len({a.seq for a in writer.acks} - present)
    short = {n.name: n.short for n in cluster.topo.nodes}
    positions = {short[name]: lsn for name, lsn in observed.items()}
    return DrillResult(
        kind=kind,
        run=run,
        synchronous=settings.synchronous,
        old_primary=old.short,
        new_primary=new.short,
        most_advanced=most_advanced(positions),
        positions=positions,
        election_positions={n.short: lsn for n, lsn in elected_from.items()},
        acked=len(writer.acks),
        missing=missing,
        rto_s=round(rto, 3),
        events={k: round(v, 3) for k, v in events.items()},
        acks=[(round(a.at - t0, 4), a.node, a.timeline, a.seq) for a in writer.acks],
        primaries_after=len(cluster.primaries()),
        rejoin_s=round(rejoin_s, 3),
        errors=writer.errors,
    )


def _wait_for_ack_from(
    writer: Writer, cluster: ops.Cluster, node: Node, t0: float, timeout_s: float
) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        after = [a.at for a in writer.acks[-50:] if a.at >= t0 and a.node == node.short]
        if after:
            return after[0]
        time.sleep(0.02)
    # What the writer last saw and whom the new primary waits for: a write that hangs (rather
    # than fails) is a synchronous commit no standby acknowledges.
    standbys = cluster.psql(
        node,
        "SELECT string_agg(application_name || ' ' || state || ' ' || coalesce(sync_state, ''),"
        " '; ') FROM pg_stat_replication",
    )
    # The writer goes through the pooler: when it is refused, whether the pooler still runs.
    raise TimeoutError(
        f"{node.short} acknowledged no write within {timeout_s:.0f}s of the fault;"
        f" the writer had {writer.errors} error(s), the last: {writer.last_error or '-'};"
        f" {node.short} streams to: {standbys or 'no standby'};"
        f" the pooler {engine.explain(cluster.client, cluster.topo.pooler_name, 15)}"
    )


def present_seqs(outputs: dict[str, Any], root_cert: str, run: str) -> set[int]:
    with psycopg.connect(_superuser(outputs, root_cert), autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("SELECT seq FROM {}.writes WHERE run = %s").format(sql.Identifier(SCHEMA)),
            (run,),
        ).fetchall()
    return {r[0] for r in rows}
