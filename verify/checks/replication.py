"""replication: every replica streams from its own active slot, close behind, and refuses writes.

Which slot belongs to which replica is read from the replica itself (primary_slot_name), not from
a naming convention, so the checks hold for any deployment whose outputs list the replicas.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from verify.context import Context, primary_session, row, scalar
from verify.model import Check, Findings, Outcome, Unreachable
from verify.thresholds import Thresholds


@dataclass(frozen=True)
class Sender:
    """A WAL sender on the primary (pg_stat_replication joined to its slot)."""

    application_name: str
    state: str
    slot: str | None
    lag_bytes: int | None
    lag_seconds: float | None


@dataclass(frozen=True)
class Slot:
    name: str
    active: bool
    wal_status: str | None
    retained_bytes: int | None


@dataclass(frozen=True)
class ReplicaView:
    """What a replica says about itself: the slot it asks for, its WAL receiver, and whether
    its WAL replay is paused (pg_get_wal_replay_pause_state: 'pause requested' or 'paused')."""

    slot: str
    receiver_status: str | None
    replay_pause: str = "not paused"


@dataclass(frozen=True)
class State:
    senders: list[Sender]
    slots: list[Slot]
    replicas: dict[str, ReplicaView | Unreachable]  # by replica label


def _read_state(ctx: Context) -> State:
    primary = ctx.node(ctx.outputs.primary)
    senders = [
        Sender(*row)
        for row in primary.execute(
            "SELECT r.application_name, r.state, s.slot_name,"
            "       pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint,"
            "       extract(epoch FROM r.replay_lag)::float8"
            "  FROM pg_stat_replication r"
            "  LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid"
        ).fetchall()
    ]
    slots = [
        Slot(*row)
        for row in primary.execute(
            "SELECT slot_name, active, wal_status,"
            "       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
            "  FROM pg_replication_slots ORDER BY slot_name"
        ).fetchall()
    ]
    replicas: dict[str, ReplicaView | Unreachable] = {}
    for replica in ctx.outputs.replicas:
        try:
            conn = ctx.node(replica)
        except Unreachable as err:
            replicas[replica.label] = err
            continue
        slot, status, pause = row(
            conn,
            "SELECT current_setting('primary_slot_name'), (SELECT status FROM pg_stat_wal_receiver),"
            # A promoted replica has no replay to pause (and the function errors outside
            # recovery); health.role reports it.
            " CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state()"
            "      ELSE 'not paused' END",
        )
        replicas[replica.label] = ReplicaView(slot, status, pause)
    return State(senders, slots, replicas)


def _state(ctx: Context) -> State:
    return ctx.memo("replication.state", lambda: _read_state(ctx))


def _sender_for(state: State, slot: str) -> Sender | None:
    return next((s for s in state.senders if slot and s.slot == slot), None)


def check_streaming(ctx: Context) -> Outcome:
    """Every replica's WAL receiver is streaming, and the primary has a streaming sender on the
    replica's slot."""
    seen = Findings()
    try:
        state = _state(ctx)
    except Unreachable as primary_down:
        seen.unreachable(primary_down)
        return seen.outcome("", "")
    attributed: set[str] = set()
    unreachable = []
    for replica in ctx.outputs.replicas:
        view = state.replicas[replica.label]
        if isinstance(view, Unreachable):
            unreachable.append((replica, view))
            continue
        sender = _sender_for(state, view.slot)
        if sender:
            attributed.add(sender.slot or "")
        if sender is None or sender.state != "streaming" or view.receiver_status != "streaming":
            seen.problem(
                f"{replica} is not streaming: its WAL receiver is "
                f"{view.receiver_status or 'not running'}, the primary's sender on slot "
                f"{view.slot or '(none)'} is {sender.state if sender else 'absent'}"
            )
    # A replica that cannot be asked is not streaming if the primary has no unexplained sender.
    spare = [
        s for s in state.senders if s.state == "streaming" and (s.slot or "") not in attributed
    ]
    for replica, down in unreachable:
        if spare:
            spare.pop()
            seen.unreachable(down)
        else:
            seen.problem(
                f"{replica} is not streaming: it is unreachable ({down.message}) and the primary "
                f"streams to {len(attributed)} of {len(ctx.outputs.replicas)} replicas"
            )
    return seen.outcome(
        f"{len(ctx.outputs.replicas)} replica(s) streaming",
        "start the replica; if it still does not stream, its log says why (slot missing, WAL "
        "removed: rebuild it from the primary by removing its data volume and `elizadb up`)",
    )


def slot_problems(slots: list[Slot], wanted: dict[str, str]) -> list[str]:
    """Problems with the primary's slots. `wanted` maps each reachable replica's slot name to
    its label: those must exist and be active; no slot may be inactive while holding WAL."""
    problems = []
    by_name = {s.name: s for s in slots}
    for slot_name, label in wanted.items():
        if not slot_name:
            problems.append(f"{label} streams without a replication slot (primary_slot_name empty)")
        elif slot_name not in by_name:
            problems.append(f"{label}'s slot {slot_name} does not exist on the primary")
        elif not by_name[slot_name].active:
            problems.append(f"{label}'s slot {slot_name} is not active")
    for slot in slots:
        if slot.wal_status == "lost":
            problems.append(f"slot {slot.name} has lost WAL its replica needs (wal_status lost)")
        elif not slot.active and slot.retained_bytes is not None and slot.name not in wanted:
            problems.append(
                f"inactive slot {slot.name} holds {slot.retained_bytes / 2**20:.1f} MiB of WAL "
                f"(wal_status {slot.wal_status})"
            )
    return problems


def check_slots(ctx: Context) -> Outcome:
    """Every replica's slot exists and is active; no other slot is inactive while holding WAL."""
    seen = Findings()
    try:
        state = _state(ctx)
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    wanted = {
        view.slot: replica.label
        for replica in ctx.outputs.replicas
        if isinstance(view := state.replicas[replica.label], ReplicaView)
    }
    for problem in slot_problems(state.slots, wanted):
        seen.problem(problem)
    return seen.outcome(
        f"{len(state.slots)} slot(s), all active",
        "an inactive slot keeps WAL until the disk fills: start its replica, or drop the slot "
        "with SELECT pg_drop_replication_slot('<name>') if the replica is gone for good; a "
        "missing slot is recreated by `elizadb up` (bootstrap)",
    )


def lag_problem(label: str, sender: Sender, t: Thresholds) -> str | None:
    """None when the replica's replay lag is within both thresholds.

    replay_lag is NULL once a replica has caught up and nothing new is written; with no bytes
    behind that is no lag at all.
    """
    lag_bytes = sender.lag_bytes or 0
    seconds = sender.lag_seconds or 0.0
    if lag_bytes > t.lag_max_bytes or seconds > t.lag_max_seconds:
        return (
            f"{label} replays {lag_bytes / 2**20:.1f} MiB / {seconds:.1f} s behind the primary "
            f"(thresholds {t.lag_max_bytes / 2**20:.0f} MiB, {t.lag_max_seconds:g} s)"
        )
    return None


def check_lag(ctx: Context) -> Outcome:
    """Every streaming replica replays within lag_max_bytes and lag_max_seconds of the primary,
    and none has its replay paused: a paused replica still receives WAL and looks close behind
    until enough is written, but stops converging at once."""
    seen = Findings()
    try:
        state = _state(ctx)
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    shown = []
    for replica in ctx.outputs.replicas:
        view = state.replicas[replica.label]
        if isinstance(view, Unreachable):
            seen.unreachable(view)
            continue
        sender = _sender_for(state, view.slot)
        if view.replay_pause != "not paused":
            seen.problem(
                f"{replica}'s WAL replay is {view.replay_pause}: it receives WAL but applies "
                "none of it"
            )
        if sender is None or sender.state != "streaming":
            seen.not_checked(str(replica), "replication.streaming", "not streaming")
            continue
        shown.append(
            f"{replica.label} {(sender.lag_bytes or 0) / 1024:.0f} KiB/"
            f"{sender.lag_seconds or 0:.2f} s"
        )
        problem = lag_problem(str(replica), sender, ctx.thresholds)
        if problem:
            seen.problem(problem)
    return seen.outcome(
        "lag " + (", ".join(shown) or "n/a (no replicas)"),
        "resume a paused replica (SELECT pg_wal_replay_resume() on it); otherwise look for "
        "long queries conflicting with recovery, or an I/O-starved host",
    )


# How long a streaming replica's slot may take to confirm a fresh WAL record: the primary's WAL
# writer flushes within wal_writer_delay (200 ms) and a standby confirms what it flushes at once.
CONVERGE_TIMEOUT_S = 5.0


def check_converging(ctx: Context) -> Outcome:
    """Every streaming replica's slot follows new WAL: the suite writes one WAL record (a
    logical message, no rows) on the primary and each active slot's restart LSN must reach it
    within CONVERGE_TIMEOUT_S. A replica whose WAL receiver hangs still shows as streaming, and
    its lag stays small while little is written; its slot stops advancing at once."""
    seen = Findings()
    primary = primary_session(ctx, seen)
    if primary is None:
        return seen.outcome("", "")
    # Flushed at once (PostgreSQL 17's fourth argument): a record that is not part of a
    # commit would otherwise wait in the WAL buffers, unsent, until a page fills. The function
    # returns the LSN at the end of the record: a slot has followed once it reaches that.
    marker = scalar(
        primary,
        "SELECT pg_logical_emit_message(false, 'elizadb-verify', 'converging', true)::text",
    )
    # Only slots with a streaming sender: a replica that is not streaming at all is reported by
    # replication.streaming and replication.slots.
    query = (
        "SELECT s.slot_name, s.restart_lsn::text, s.restart_lsn >= %s::pg_lsn"
        "  FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid"
        " WHERE r.state = 'streaming' ORDER BY 1"
    )
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while True:
        rows = primary.execute(query, (marker,)).fetchall()
        behind = [(name, lsn) for name, lsn, passed in rows if not passed]
        if not behind or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    for name, lsn in behind:
        seen.problem(
            f"slot {name}'s restart LSN stays at {lsn}: its replica has not confirmed WAL written "
            f"up to {marker} within {CONVERGE_TIMEOUT_S:g} s (a hung WAL receiver, or a replica "
            "that cannot flush)"
        )
    return seen.outcome(
        f"{len(rows)} streaming slot(s) confirmed new WAL",
        "look at the replica's WAL receiver (pg_stat_wal_receiver, its log) and its disk; "
        "restarting the replica restarts its receiver",
    )


def check_read_only(ctx: Context) -> Outcome:
    """Every replica refuses writes: a read-write transaction is refused on it.

    The probe is `BEGIN READ WRITE`, which a standby refuses before anything runs; nothing is
    executed inside it either way. In read-only mode no transaction other than READ ONLY is
    started, and the check reads pg_is_in_recovery() instead.
    """
    seen = Findings()
    for index, replica in enumerate(ctx.outputs.replicas):
        try:
            conn = ctx.readonly(index)
        except Unreachable as err:
            seen.unreachable(err)
            continue
        if ctx.read_only:
            if not scalar(conn, "SELECT pg_is_in_recovery()"):
                seen.problem(f"{replica} is not in recovery: it would accept writes")
            continue
        refused = _refuses_read_write(conn)
        if refused is not True:
            seen.problem(f"{replica} accepted a read-write transaction ({refused})")
    return seen.outcome(
        f"{len(ctx.outputs.replicas)} replica(s) refuse writes"
        + (
            " (read-only mode: recovery state checked, no transaction probed)"
            if ctx.read_only
            else ""
        ),
        "a replica that accepts writes has been promoted: rebuild it from the primary, or "
        "redeploy if the failover was deliberate",
    )


def _refuses_read_write(conn: psycopg.Connection[Any]) -> bool | str:
    try:
        conn.execute("BEGIN READ WRITE")
    except (psycopg.errors.FeatureNotSupported, psycopg.errors.ReadOnlySqlTransaction):
        return True
    except psycopg.Error as err:
        return f"unexpected error {err.sqlstate}: {err}"
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
    return "BEGIN READ WRITE succeeded"


def required_sync_standbys(names: str) -> int:
    """How many standbys must confirm a commit under `synchronous_standby_names`: 0 when empty;
    N for `ANY N (...)`, `FIRST N (...)` or `N (...)`; 1 for a plain list."""
    text = names.strip()
    if not text:
        return 0
    match = re.match(r"^(?:(?:ANY|FIRST)\s+)?(\d+)\s*\(", text, re.IGNORECASE)
    return int(match.group(1)) if match else 1


def check_synchronous(ctx: Context) -> Outcome:
    """With synchronous replication on, enough standbys are connected as synchronous candidates
    to confirm a commit; otherwise every commit hangs until one returns."""
    seen = Findings()
    primary = primary_session(ctx, seen)
    if primary is None:
        return seen.outcome("", "")
    names = scalar(primary, "SELECT current_setting('synchronous_standby_names')")
    needed = required_sync_standbys(names)
    if needed == 0:
        return seen.outcome("asynchronous replication (synchronous_standby_names is empty)", "")
    candidates = scalar(
        primary,
        "SELECT count(*) FROM pg_stat_replication"
        " WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum')",
    )
    if candidates < needed:
        seen.problem(
            f"synchronous replication needs {needed} standby(s) to confirm each commit "
            f"({names}) but {candidates} is/are streaming as synchronous candidates: commits "
            "on the primary wait until one returns"
        )
    return seen.outcome(
        f"synchronous replication satisfied: {candidates} candidate(s) for {needed} required",
        "bring a standby back (elizadb status shows which is down), or lower "
        "elizadb:replication.synchronousCount / turn elizadb:replication.synchronous off and "
        "`elizadb up`",
    )


CHECKS = (
    Check("replication.streaming", check_streaming),
    Check("replication.slots", check_slots),
    Check("replication.lag", check_lag),
    Check(
        "replication.converging",
        check_converging,
        writes="one WAL record (a logical message, no rows) on the primary",
    ),
    Check("replication.read_only", check_read_only),
    Check("replication.synchronous", check_synchronous),
)
