"""A running builtin stack moves to Patroni in place (issue 11, item 8): deployed as production
(two replicas, synchronous replication) by the builtin engine, failed over once by it (so that
the node read-write at the move is not the one named primary, as after any rehearsal), it gets
`elizadb:ha.engine: patroni` and `elizadb up`, while a writer keeps committing tagged rows
through the pooler.

What is proven on that one stack: every acknowledged row is there afterwards; the node that was
read-write took over its own data (the standbys, the rewound old primary among them, waited for
its leader lock; same system
identifier, same volumes) and every member streams from the leader (after the declared
parameters rolled, a synchronous standby); the verify suite passes from the new outputs; the pooler writes through the
router; the backup repository carries on (an incremental backup on top of the builtin engine's
full one, on the new timeline); a second `up` changes nothing; and `up` back to the builtin
engine is refused with exit 2 before anything is touched. The write outage the move caused is
measured and printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from elizadb import engine
from elizadb.local import patroni
from elizadb.local.engine_change import EngineChangeError
from elizadb.local.providers import RANDOM_PASSWORD as PASSWORD
from elizadb.local.state import StateFile
from elizadb.ops.backup import Backup, read_catalog, take_backup
from elizadb.ops.failover import Cluster, failover, rejoin
from infra.components.ha import member_name
from infra.render import paths
from infra.render.patroni import REWIND_USER
from infra.settings import StackSettings
from infra.topology import topology
from tests.integration.ha_probe import Writer, setup_probe_table, stored, wait_for
from tests.integration.stacks import DeployedStack, deployed_stack, stack_settings
from tests.integration.test_backup import write_stack_file
from verify.suite import load_outputs, run_checks

# Once in CI: the move is Patroni's and the image's behaviour, not the engine's.
pytestmark = [pytest.mark.integration, pytest.mark.once]

STACK, PORT = "itmove", 52400
VALUES: dict[str, object] = {"environment": "production"}
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Move:
    stack: DeployedStack
    builtin: StackSettings
    writer: Writer
    sysid: str  # the cluster's database system identifier
    writable: str  # the node read-write at the move: the builtin failover's choice
    volumes: dict[str, str]  # each node's data volume: its creation time before the move
    full: Backup  # taken by the builtin engine before the move
    up_started: float  # time.time() around `up`
    up_ended: float
    # `up` to Patroni while a standby was stopped: refused, and the containers as they were
    # before and after the attempt.
    refused: EngineChangeError
    untouched: tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]]


def _sysid(stack: DeployedStack, node: str) -> str:
    rows = engine.query_rows(
        stack.client, node, "SELECT system_identifier FROM pg_control_system()"
    )
    assert rows, f"{node} did not answer"
    return rows[-1]


def _volumes(stack: DeployedStack) -> dict[str, str]:
    topo = topology(stack.settings)
    return {
        topo.volume_name(n): stack.client.volumes.get(topo.volume_name(n)).attrs["CreatedAt"]
        for n in topo.nodes
    }


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Move]:
    with deployed_stack(tmp_path_factory.mktemp("move"), STACK, PORT, **VALUES) as stack:
        builtin = stack.settings
        assert not builtin.patroni and builtin.synchronous and builtin.replicas == 2
        primary = topology(builtin).primary.name
        setup_probe_table(stack.connections["owner"])
        full, _ = take_backup(stack.client, builtin, "full")
        sysid, volumes = _sysid(stack, primary), _volumes(stack)
        patroni_settings = stack_settings(STACK, PORT, ha={"engine": "patroni"}, **VALUES)
        refused, untouched = _refused_with_a_standby_stopped(stack, patroni_settings)
        with Writer(stack.connections["agentPooler"]) as writer:
            wait_for("rows written by the builtin engine", lambda: len(writer.acks) >= 50)
            writable = _fail_over(stack)
            wait_for(
                "pooled writes after the builtin failover",
                lambda: len(writer.acks) >= 100,
                explain=lambda: engine.explain(stack.client, f"elizadb-{STACK}-pgbouncer"),
            )
            started = time.time()
            stack.up(patroni_settings)
            ended = time.time()
            last = max(writer.acks)
            wait_for(
                "pooled writes after the move",
                lambda: max(writer.acks) > last + 50,
                explain=lambda: engine.explain(stack.client, f"elizadb-{STACK}-pgbouncer"),
            )
        yield Move(
            stack,
            builtin,
            writer,
            sysid,
            writable,
            volumes,
            full,
            started,
            ended,
            refused,
            untouched,
        )


def _fail_over(stack: DeployedStack) -> str:
    """The builtin engine's failover: the primary fenced, a standby promoted, then the old
    primary rewound and streaming from it. The name of the new primary."""
    cluster = Cluster(stack.client, stack.settings)
    result = failover(cluster, progress=lambda _: None)
    rejoin(cluster, result.old, result.new, progress=lambda _: None)
    assert result.new.name != topology(stack.settings).primary.name
    return result.new.name


def _refused_with_a_standby_stopped(
    stack: DeployedStack, patroni_settings: StackSettings
) -> tuple[EngineChangeError, tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]]]:
    """`up` to Patroni with a standby down, then the standby started again and streaming."""
    builtin = stack.settings
    topo = topology(builtin)
    standby = topo.replicas[-1]
    engine.stop(stack.client, standby.name, timeout_s=60)
    before = stack.container_identities()
    with pytest.raises(EngineChangeError) as caught:
        stack.up(patroni_settings)
    after = stack.container_identities()
    stack.settings = builtin  # the handle took the refused settings
    engine.start(stack.client, standby.name)
    wait_for(
        f"{standby.name} streaming again",
        lambda: any(
            row.startswith(f"{standby.application_name}|streaming")
            for row in engine.query_rows(
                stack.client,
                topo.primary.name,
                "SELECT application_name, state FROM pg_stat_replication",
            )
            or []
        ),
        explain=lambda: engine.explain(stack.client, standby.name),
    )
    return caught.value, (before, after)


def test_every_acknowledged_row_survives_the_move(moved: Move) -> None:
    acks, at = moved.writer.acks, moved.writer.acked_at
    lost = set(acks) - stored(moved.stack.connections["owner"])
    assert not lost, sorted(lost)[:20]
    during = [t for t in at.values() if moved.up_started <= t <= moved.up_ended]
    # The longest wait for an acknowledgement from the start of `up` until the first write
    # after it: the outage the move caused.
    times = sorted(at.values())
    first_after = next(t for t in times if t > moved.up_ended)
    outage, began = max(
        (b - a, a - moved.up_started)
        for a, b in pairwise(times)
        if b >= moved.up_started and a < first_after
    )
    sys.stderr.write(
        f"\n  [move] up took {moved.up_ended - moved.up_started:.1f}s; {len(acks)} rows "
        f"acknowledged ({len(during)} during up), none lost; longest write outage "
        f"{outage:.1f}s, from {began:.1f}s into up\n"
    )


def test_the_move_is_refused_before_anything_is_touched_while_a_node_is_down(
    moved: Move,
) -> None:
    refused = moved.refused
    assert refused.exit_code == 2
    message = str(refused)
    assert message.startswith("elizadb:ha.engine = 'patroni': the stack runs the builtin engine")
    assert f"elizadb-{STACK}-replica-2 is exited" in message
    assert "Nothing was changed" in message
    before, after = moved.untouched
    assert after == before
    assert not any("etcd" in name or "router" in name for name in after)


def test_the_read_write_node_took_over_its_data_and_every_member_streams(moved: Move) -> None:
    stack = moved.stack
    topo = topology(stack.settings)
    members = patroni.members(stack.client, topo)
    by_name = {m.name: m for m in members}
    assert sorted(by_name) == sorted(member_name(n) for n in topo.nodes), members
    leaders = [m for m in members if m.leads and m.state == "running"]
    assert len(leaders) == 1, members
    leader = leaders[0]
    others = [m for m in members if m is not leader]
    assert all(m.state == "streaming" and m.timeline == leader.timeline for m in others), members
    assert {m.role for m in others} >= {"Sync Standby"}, members
    # The same cluster on the same volumes: the one the builtin engine made. (The declared
    # parameters then rolled, and the leadership went to a synchronous standby with the
    # switchover that roll needs: see test_patroni_roll.)
    assert {_sysid(stack, n.name) for n in topo.nodes} == {moved.sysid}
    assert _volumes(stack) == moved.volumes
    # Patroni's slots are the builtin engine's (the same names), each in use by its member.
    lead_node = patroni.node_of(topo, leader.name)
    slots = engine.query_rows(
        stack.client,
        lead_node.name,
        "SELECT slot_name, active FROM pg_replication_slots ORDER BY slot_name",
    )
    assert slots == sorted(f"{n.slot}|t" for n in topo.nodes if n != lead_node), slots
    # The standbys did not run for the first leader lock: each waited for the read-write
    # node's, which did not wait.
    for node in topo.nodes:
        log = stack.client.containers.get(node.name).logs().decode(errors="replace")
        start = log.index("elizadb-entrypoint[patroni]: starting Patroni")
        if node.name == moved.writable:
            assert "waiting until the cluster has a leader" not in log, log
            continue
        waited = log.index("waiting until the cluster has a leader")
        led = log.index("the cluster has a leader after")
        assert waited < led < start, log


def test_the_rewind_role_reads_what_pg_rewind_reads_on_the_leader(moved: Move) -> None:
    """Patroni rewinds a returning old leader through this role, which the job made (Patroni
    did not: it adopted the cluster). Its password, TLS, pg_hba and grants, on the leader."""
    stack = moved.stack
    state = StateFile(STACK, stack.state_dir / "state")
    key = f"{PASSWORD}::secrets-{REWIND_USER}"
    password = state.data["resources"][key]["outputs"]["result"]
    # Where the superuser's URI goes (every node, the read-write one taken), as the rewind role.
    where = conninfo_to_dict(stack.connections["superuser"])
    uri = make_conninfo(**{**where, "user": REWIND_USER, "password": password})
    with psycopg.connect(uri, connect_timeout=10) as conn:
        assert conn.execute("SELECT NOT pg_is_in_recovery()").fetchone() == (True,)
        for sql in (
            "SELECT count(*) FROM pg_ls_dir('global', true, false)",
            "SELECT size FROM pg_stat_file('global/pg_control', true)",
            "SELECT length(pg_read_binary_file('global/pg_control'))",
            "SELECT length(pg_read_binary_file('PG_VERSION', 0, 2, true))",
        ):
            row = conn.execute(sql).fetchone()
            assert row is not None and row[0], sql


def test_the_verify_suite_passes_from_the_new_outputs(moved: Move) -> None:
    assert moved.stack.outputs["haEngine"] == "patroni"
    results = run_checks(load_outputs(moved.stack.outputs))
    failed = [f"{r.id}: {r.reason}" for r in results if r.status != "pass"]
    assert not failed, failed
    assert any(r.id.startswith("ha.") for r in results)


def test_the_pooler_writes_through_the_router(moved: Move) -> None:
    stack = moved.stack
    topo = topology(stack.settings)
    ini = engine.exec_in(stack.client, topo.pooler_name, ["cat", paths.PGBOUNCER_INI]).stdout
    assert f"host={topo.router_name} " in ini
    leader = patroni.leader(stack.client, topo)
    assert leader is not None
    leader_address = topo.address(patroni.node_of(topo, leader.name))
    assert moved.writer.acked_by(leader_address), "no pooled write acknowledged by the leader"
    after = [s for s, t in moved.writer.acked_at.items() if t > moved.up_ended]
    assert after and all(moved.writer.acks[s] == leader_address for s in after)


def test_the_backup_repository_carries_on(moved: Move) -> None:
    stack = moved.stack
    incr, _ = take_backup(stack.client, stack.settings, "incr")
    assert incr.prior is not None
    labels = [b.label for b in read_catalog(stack.client, stack.settings).backups]
    assert moved.full.label in labels
    # On top of the backup the builtin engine took, on the timeline Patroni's leader started.
    assert labels.index(incr.prior) >= labels.index(moved.full.label)
    assert incr.timeline > moved.full.timeline


def test_a_second_up_changes_nothing(moved: Move) -> None:
    report = moved.stack.up()
    assert not report.changed, report


def test_moving_back_to_builtin_is_refused_before_anything_is_touched(
    moved: Move, tmp_path: Path
) -> None:
    stack = moved.stack
    before = stack.container_identities()
    write_stack_file(tmp_path, moved.builtin)
    refused = subprocess.run(
        [sys.executable, "-m", "elizadb", "-C", str(tmp_path), "up", "--stack", STACK],
        cwd=REPO,
        env={**os.environ, "ELIZADB_STATE_DIR": str(stack.state_dir / "state")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "elizadb:ha.engine = 'builtin': the stack runs under Patroni" in refused.stderr
    assert "Nothing was changed" in refused.stderr
    assert stack.container_identities() == before
    assert patroni.leader(stack.client, topology(stack.settings)) is not None
