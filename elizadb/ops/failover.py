"""Failover, switchover and rejoin on a locally deployed stack.

What a node is (primary or standby) lives in its data directory, and every node's configuration
already names every peer (infra/render/postgres.py), so these operations only:
  - fence the failed or demoted primary (stopped through the engine, so that its restart policy
    cannot bring it back as a second primary),
  - promote the most advanced standby (highest replayed LSN, once each has replayed what it
    received),
  - make sure the new primary holds a replication slot for every other node,
  - repoint PgBouncer (the one component that names the primary) and record the new primary in
    the local state, so that the next `elizadb up` declares the same,
  - start the old primary again: its entrypoint finds the new primary, rewinds (pg_rewind) and
    rejoins as a standby — never as a second primary.
Node queries run inside the containers as the postgres OS user (peer authentication), so no
password is needed here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import docker
import docker.errors
import psycopg

from elizadb import engine
from elizadb.errors import DeployError, EngineError, UsageError
from elizadb.local import deploy
from elizadb.local.apply import CONTAINER, spec_digest
from elizadb.local.state import StateFile
from infra.render import paths
from infra.render.pgbouncer import session_pool_name
from infra.settings import StackSettings
from infra.topology import Node, Topology, topology
from verify.ca_file import private_ca_file, with_root_cert

Progress = Callable[[str], None]
K = TypeVar("K")


@dataclass(frozen=True)
class NodeState:
    node: Node
    running: bool
    in_recovery: bool | None
    receive_lsn: int | None  # standbys: last WAL received; primary: current insert LSN
    timeline: int | None
    replay_lsn: int | None = None  # standbys: last WAL replayed


# How long standbys' positions must agree before a standby that has not replayed all it received
# is taken at its replayed position.
SETTLE_PATIENCE_S = 1.0


def settled(
    previous: Mapping[Any, tuple[int, int]],
    current: Mapping[Any, tuple[int, int]],
    agreed_for_s: float,
) -> bool:
    """Whether standbys' (replayed, received) positions may be compared to elect one: two reads
    agree and each standby has replayed all it received, or they have agreed for
    SETTLE_PATIENCE_S. A standby replays within milliseconds on an idle machine, not on a busy
    one: compared too early, a standby that received more but replayed less loses the election,
    and then cannot follow the winner (it holds WAL the new timeline does not). Patience covers a
    standby that will never replay all it received (an incomplete last record)."""
    if not current or current != previous:
        return False
    caught_up = all(replay >= received for replay, received in current.values())
    return caught_up or agreed_for_s >= SETTLE_PATIENCE_S


def wait_settled(
    read: Callable[[], Mapping[K, tuple[int, int]]], timeout_s: float, interval_s: float
) -> dict[K, int]:
    """The replayed positions `read` reports, read every `interval_s` until they have settled
    (`settled`), or at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = read()
    agreed_at = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(interval_s)
        now = read()
        if now != last:
            agreed_at = time.monotonic()
        done = settled(last, now, time.monotonic() - agreed_at)
        last = now
        if done:
            break
    return {key: replay for key, (replay, _) in last.items()}


def lsn_int(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


class Cluster:
    """The nodes of one stack, reached through the container engine."""

    def __init__(self, client: docker.DockerClient, settings: StackSettings) -> None:
        self.client = client
        self.settings = deploy.effective_settings(settings, StateFile(settings.stack))
        self.topo: Topology = topology(self.settings)

    # -- queries -----------------------------------------------------------------------------
    def psql(self, node: Node, sql: str, timeout_s: float = 10) -> str | None:
        """The last output line of one statement on `node`; None when it cannot answer."""
        lines = engine.query_rows(self.client, node.name, sql, timeout_s)
        if lines is None:
            return None
        return lines[-1] if lines else ""

    def state(self, node: Node) -> NodeState:
        running = engine.is_running(self.client, node.name)
        if not running:
            return NodeState(node, False, None, None, None)
        row = self.psql(
            node,
            "SELECT pg_is_in_recovery(),"
            " CASE WHEN pg_is_in_recovery()"
            "   THEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())"
            "   ELSE pg_current_wal_lsn() END,"
            " (SELECT timeline_id FROM pg_control_checkpoint()),"
            " pg_last_wal_replay_lsn()",
        )
        if not row:
            return NodeState(node, True, None, None, None)
        recovery, lsn, timeline, replay = row.split("|")
        return NodeState(
            node,
            True,
            recovery == "t",
            lsn_int(lsn) if lsn else None,
            int(timeline),
            lsn_int(replay) if replay else None,
        )

    def states(self) -> list[NodeState]:
        return [self.state(n) for n in self.topo.nodes]

    def primaries(self) -> list[Node]:
        return [s.node for s in self.states() if s.running and s.in_recovery is False]

    def node(self, short_or_name: str) -> Node:
        for n in self.topo.nodes:
            if short_or_name in (n.short, n.name):
                return n
        known = ", ".join(n.short for n in self.topo.nodes)
        raise UsageError(
            f"no node {short_or_name!r} in stack {self.settings.stack}; nodes: {known}"
        )

    # -- actions -----------------------------------------------------------------------------
    def fence(self, node: Node) -> None:
        """Stopped through the engine, a container is not restarted by its restart policy."""
        engine.stop(self.client, node.name, timeout_s=10)

    def standby_positions(self, exclude: Node, settle_s: float = 10.0) -> dict[Node, int]:
        """Replayed LSN of every running standby, once the positions have settled (see
        `settled`; at most `settle_s`). The replayed position is data that is really there: the
        received one is reset to a segment start whenever the WAL receiver restarts, which it
        does as soon as its primary is gone."""
        nodes = [n for n in self.topo.nodes if n != exclude]

        def read() -> dict[Node, tuple[int, int]]:
            # All nodes at once: every query is an exec round trip through the engine.
            with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
                states = list(pool.map(self.state, nodes))
            return {
                s.node: (s.replay_lsn, s.receive_lsn or s.replay_lsn)
                for s in states
                if s.running and s.in_recovery and s.replay_lsn is not None
            }

        return wait_settled(read, settle_s, interval_s=0.1)

    def elect(self, exclude: Node) -> tuple[Node, dict[Node, int]]:
        """The most advanced running standby (highest replayed LSN, then lowest index), and the
        positions it was chosen from."""
        positions = self.standby_positions(exclude)
        if not positions:
            raise DeployError("no running standby can be promoted")
        best = max(positions, key=lambda n: (positions[n], -n.index))
        return best, positions

    def promote(self, node: Node) -> None:
        # A restartpoint in progress (spread over checkpoint_completion_target) holds up the end
        # of recovery for seconds; an immediate one first finishes it at full speed.
        self.psql(node, "CHECKPOINT", timeout_s=30)
        if self.psql(node, "SELECT pg_promote(true, 30)", timeout_s=40) != "t":
            raise DeployError(f"{node.name} did not finish promotion within 30 s")

    def ensure_slots(self, primary: Node) -> None:
        """Slots for every other node, reserving WAL from now, so that they can follow."""
        slots = ",".join(f"'{n.slot}'" for n in self.topo.nodes if n != primary)
        if not slots:
            return
        self.psql(
            primary,
            f"SELECT count(pg_create_physical_replication_slot(s, true)) FROM unnest(ARRAY[{slots}]) s"
            " WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = s)",
        )

    def nudge_standbys(self, primary: Node) -> None:
        """Restart the WAL receiver of every other standby, so that it looks for the new primary
        now rather than after its current attempt gives up."""
        others = [n for n in self.topo.nodes if n != primary]
        with ThreadPoolExecutor(max_workers=max(1, len(others))) as pool:
            list(
                pool.map(
                    lambda node: self.psql(
                        node,
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE backend_type = 'walreceiver'",
                    ),
                    others,
                )
            )

    def repoint_pooler(self, primary: Node) -> None:
        """Rewrite pgbouncer.ini as the declaration for the new primary has it, reload, and
        record both the new primary and that the running pooler now matches that declaration."""
        state = StateFile(self.settings.stack)
        state.set_runtime(replace(state.runtime, primary_node=primary.short))
        state.save()
        self.settings = self.settings.model_copy(update={"primary_node": primary.short})
        self.topo = topology(self.settings)
        declaration = deploy.declare_stack(self.settings)
        pooler = next(
            c for c in declaration.of_type(CONTAINER) if c.inputs["name"] == self.topo.pooler_name
        )
        ini = next(
            u["content"] for u in pooler.inputs["uploads"] if u["file"] == paths.PGBOUNCER_INI
        )
        engine.put_files(
            self.client, self.topo.pooler_name, [engine.File(paths.PGBOUNCER_INI, ini)]
        )
        # PgBouncer reloads its configuration on SIGHUP. Sent from inside the container: a
        # signal through the engine's kill API makes Docker Engine (20.10) drop the container's
        # restart policy for its next exit, so a pooler that later died would stay down.
        # Server connections to a killed primary get no reset (its network namespace is gone)
        # and would hang in TCP: KILL drops them and their clients at once (clients reconnect),
        # RESUME lets new ones in.
        reload = engine.exec_in(self.client, self.topo.pooler_name, ["sh", "-c", "kill -HUP 1"])
        if not reload.ok:
            raise DeployError(f"cannot reload {self.topo.pooler_name}: {reload.tail()}")
        self._pooler_admin(declaration.outputs, ["KILL", "RESUME"])
        # The declaration above may have saved new state: read it again before changing it.
        state = StateFile(self.settings.stack)
        runtime = state.runtime
        conforming = {**runtime.conforming, self.topo.pooler_name: spec_digest(pooler)}
        state.set_runtime(replace(runtime, conforming=conforming))
        state.save()

    def wait_received_all(self, node: Node, timeout_s: float = 30) -> None:
        started, last, stable = time.monotonic(), None, 0
        while time.monotonic() - started < timeout_s:
            lsn = self.state(node).receive_lsn
            stable = stable + 1 if lsn is not None and lsn == last else 0
            if stable >= 3:
                return
            last = lsn
            time.sleep(0.1)
        raise DeployError(
            f"{node.name} kept receiving WAL for {timeout_s:.0f}s after the primary stopped"
        )

    def _pooler_admin(self, outputs: dict[str, Any], commands: list[str]) -> None:
        # The admin console speaks only the simple query protocol.
        with (
            private_ca_file(outputs["caCert"]) as ca,
            psycopg.connect(
                with_root_cert(outputs["connections"]["poolerAdmin"], ca),
                autocommit=True,
                cursor_factory=psycopg.ClientCursor,
                connect_timeout=5,
            ) as conn,
        ):
            # The transaction-mode pool and the session-mode one beside it.
            databases = (self.settings.database, session_pool_name(self.settings.database))
            for command in commands:
                for database in databases:
                    try:
                        conn.execute(f"{command} {database}")
                    except psycopg.Error as exc:
                        # RESUME of a database that is not paused or killed is refused: harmless.
                        if command != "RESUME":
                            raise DeployError(f"PgBouncer refused {command}: {exc}") from None

    def start(self, node: Node) -> None:
        engine.start(self.client, node.name)

    def wait_streaming(self, node: Node, primary: Node, timeout_s: float = 120) -> float:
        """Seconds until `node` streams from `primary` (it may first rewind)."""
        query = (
            "SELECT state FROM pg_stat_replication "
            f"WHERE application_name = '{node.application_name}'"
        )
        return engine.wait_until(
            f"{node.name} streaming from {primary.name}",
            lambda: self.psql(primary, query) == "streaming",
            timeout_s,
            interval_s=0.25,
            on_timeout=lambda: engine.explain(self.client, node.name),
        )


@dataclass(frozen=True)
class FailoverResult:
    old: Node
    new: Node
    positions: dict[Node, int]  # replayed LSN of each standby at election
    steps: dict[str, float]  # seconds since the start, at the end of each step


def failover(cluster: Cluster, progress: Progress, failed: Node | None = None) -> FailoverResult:
    """Promote the most advanced standby in place of a failed primary."""
    steps: dict[str, float] = {}
    t0 = time.monotonic()
    old = failed or cluster.topo.current_primary
    progress(f"fencing {old.name}")
    cluster.fence(old)
    steps["fence"] = time.monotonic() - t0
    new, positions = cluster.elect(exclude=old)
    steps["elect"] = time.monotonic() - t0
    progress(f"promoting {new.name} (most advanced standby)")
    cluster.promote(new)
    steps["promote"] = time.monotonic() - t0
    cluster.ensure_slots(new)
    steps["slots"] = time.monotonic() - t0
    cluster.nudge_standbys(new)
    steps["standbys_nudged"] = time.monotonic() - t0
    progress(f"repointing the pooler to {new.name}")
    cluster.repoint_pooler(new)
    steps["repoint_pooler"] = time.monotonic() - t0
    return FailoverResult(old, new, positions, steps)


def rejoin(cluster: Cluster, old: Node, new: Node, progress: Progress) -> float:
    progress(f"starting {old.name}: it rewinds onto {new.name} and rejoins as a standby")
    cluster.start(old)
    seconds = cluster.wait_streaming(old, new)
    progress(f"{old.name} streams from {new.name} ({seconds:.1f}s)")
    return seconds


def switchover(cluster: Cluster, target: Node, progress: Progress) -> dict[str, float]:
    """Planned: the primary shuts down cleanly (its last WAL reaches the standbys), the target is
    promoted, the old primary rejoins as its standby. No committed row is lost."""
    old = cluster.topo.current_primary
    if target == old:
        raise UsageError(f"{target.name} is already the primary")
    target_state = cluster.state(target)
    if not (target_state.running and target_state.in_recovery):
        raise UsageError(f"{target.name} is not a running standby; it cannot take over")
    steps: dict[str, float] = {}
    t0 = time.monotonic()
    progress(f"stopping {old.name} cleanly (fast shutdown sends its remaining WAL)")
    cluster.fence(old)
    steps["stop_old"] = time.monotonic() - t0
    # The shutdown checkpoint is the old primary's last WAL: promote only once the target has
    # stopped receiving, i.e. holds all of it.
    cluster.wait_received_all(target)
    steps["caught_up"] = time.monotonic() - t0
    progress(f"promoting {target.name}")
    cluster.promote(target)
    steps["promote"] = time.monotonic() - t0
    cluster.ensure_slots(target)
    cluster.nudge_standbys(target)
    cluster.repoint_pooler(target)
    steps["repoint_pooler"] = time.monotonic() - t0
    steps["rejoin"] = rejoin(cluster, old, target, progress)
    return steps


def watch(
    cluster: Cluster,
    progress: Progress,
    stop: threading.Event,
    interval_s: float = 0.5,
    misses_to_act: int = 3,
) -> list[FailoverResult]:
    """Fail over by itself: when the primary misses `misses_to_act` checks in a row (container
    gone, or not answering as a primary), promote the most advanced standby, then start the old
    primary again so that it rejoins as a standby. Runs until `stop` is set."""
    done: list[FailoverResult] = []
    misses = 0
    while not stop.is_set():
        primary = cluster.topo.current_primary
        state = cluster.state(primary)
        misses = 0 if state.running and state.in_recovery is False else misses + 1
        if misses >= misses_to_act:
            progress(f"{primary.name} missed {misses} checks: failing over")
            try:
                result = failover(cluster, progress, failed=primary)
            except DeployError as err:
                progress(f"failover failed, retrying: {err}")
                stop.wait(interval_s)
                continue
            done.append(result)
            misses = 0
            try:
                rejoin(cluster, result.old, result.new, progress)
            except (DeployError, EngineError) as err:
                progress(f"{result.old.name} did not rejoin (start it to retry): {err}")
        stop.wait(interval_s)
    return done
