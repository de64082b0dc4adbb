"""A changed elizadb:postgres.parameters on a deployed Patroni stack (three nodes, synchronous
mode) rolls instead of replacing the nodes: the config job (infra/patroni_roll.py) puts the
values into Patroni's dynamic configuration and restarts only what needs it.

What is proven, on one stack, in order:
* a new cluster gets the declared values, its leader restarted in place (first timeline);
* a reloadable parameter is reloaded: no node restarts, no container but the job is replaced;
* a parameter that needs a restart restarts the replicas first, one at a time, then switches
  over to the synchronous standby and the old leader follows as a replica: every node restarted
  once, the old leader last, while a writer through the pooler loses no acknowledged row;
* a value a node cannot start with stops the roll at the first replica: `up` fails saying so,
  the previous values are put back, that replica comes back on them, no other node restarts;
* a change that replaces the nodes' containers (resources.memory) replaces them one at a time:
  the replicas, then a switchover, then the old leader, while the pooled writer loses nothing;
* `elizadb restore --in-place` to a point in time goes through Patroni's bootstrap: the rows
  committed before the target are there and none after, on a new timeline, the whole cluster
  streaming and the stack's parameters back in its dynamic configuration;
* a restore into a new stack reaches the point either way: into the builtin engine, then moved
  to Patroni by `up`, or into a stack declared with Patroni, whose cluster Patroni bootstraps
  from the restore;
* a restore Patroni cannot bootstrap from (archived WAL missing) fails, and the node refuses to
  let Patroni initialise a new, empty cluster in its place (last: it leaves no cluster).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from elizadb import engine
from elizadb.errors import DeployError
from elizadb.local import patroni
from elizadb.ops import restore_into, restore_patroni
from elizadb.ops.backup import check_archiving, take_backup
from elizadb.ops.restore import RecoveryTarget
from infra.components.backup import agent_name
from infra.render.patroni import DATA_DIR
from infra.topology import topology
from tests.integration.ha_probe import (
    Writer,
    setup_probe_table,
    stored,
    two_batches_around_a_point,
    wait_for,
)
from tests.integration.stacks import DeployedStack, deployed_stack, progress, stack_settings
from verify.suite import load_outputs, run_checks

# Once in CI for time: the roll is Patroni's REST API and PostgreSQL, whatever the engine.
pytestmark = [pytest.mark.integration, pytest.mark.once]

STACK = "itroll"
PORT = 52500
COPY, COPY_PORT = "itrollcp", 52600  # a stack restored from this one
BASE = {"shared_buffers": "64MB"}
VALUES: dict[str, Any] = {"ha": {"engine": "patroni"}, "replication": {"synchronous": True}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(
        tmp_path_factory.mktemp("roll"), STACK, PORT, postgres={"parameters": BASE}, **VALUES
    ) as handle:
        _wait_whole(handle)
        yield handle


def _settings(parameters: dict[str, str]) -> Any:
    return stack_settings(STACK, PORT, postgres={"parameters": parameters}, **VALUES)


def _members(stack: DeployedStack) -> list[patroni.Member]:
    try:
        return patroni.members(stack.client, topology(stack.settings))
    except DeployError:  # patronictl slower than its bound on a loaded machine: ask again
        return []


def _wait_whole(stack: DeployedStack) -> None:
    wait_for(
        "one leader, a synchronous standby and a replica, all streaming",
        lambda: (
            sorted((m.role, m.state) for m in _members(stack))
            == [("Leader", "running"), ("Replica", "streaming"), ("Sync Standby", "streaming")]
        ),
        timeout_s=120,
        explain=lambda: str(_members(stack)),
    )


def _leader(stack: DeployedStack) -> str:
    return next(m.name for m in _members(stack) if m.leads)


def _ask(stack: DeployedStack, node: str, query: str) -> str:
    result = engine.exec_in(
        stack.client, node, ["psql", "-XAtq", "-h", "/run/postgresql", "-c", query], user="postgres"
    )
    assert result.ok, result.stderr
    return result.stdout.strip()


def _on_every_node(stack: DeployedStack, query: str) -> dict[str, str]:
    return {n.name: _ask(stack, n.name, query) for n in topology(stack.settings).nodes}


def _started(stack: DeployedStack) -> dict[str, str]:
    """When each node's PostgreSQL last started: a restart changes it, a reload does not."""
    return _on_every_node(stack, "SELECT pg_postmaster_start_time()")


def _nothing_lost(stack: DeployedStack, writer: Writer, up_at: float, what: str) -> None:
    """Every acknowledged row is stored; the longest wait for an acknowledgement is reported."""
    lost = set(writer.acks) - stored(stack.connections["owner"])
    assert not lost, sorted(lost)[:20]
    times = sorted(writer.acked_at.values())
    gap, at = max((b - a, a) for a, b in itertools.pairwise(times))
    progress(
        f"{what}: {len(writer.acks)} writes acknowledged, longest gap {gap:.2f} s from "
        f"{at - up_at:.1f} s after `up` began"
    )


def _config_job(stack: DeployedStack) -> str:
    return topology(stack.settings).config_job_name


def test_a_new_cluster_runs_the_declared_values_on_its_first_timeline(
    stack: DeployedStack,
) -> None:
    assert set(_on_every_node(stack, "SHOW shared_buffers").values()) == {"64MB"}
    assert set(_on_every_node(stack, "SHOW hnsw.max_scan_tuples").values()) == {"5000"}
    # Restarted in place, not switched over: still the first timeline on every member.
    assert {m.timeline for m in _members(stack)} == {1}
    results = run_checks(load_outputs(stack.outputs))
    failed = [f"{r.id}: {r.reason}" for r in results if r.status not in ("pass", "warn")]
    assert not failed, failed


def test_a_reloadable_parameter_is_reloaded_without_a_restart(stack: DeployedStack) -> None:
    before, leader = _started(stack), _leader(stack)
    report = stack.up(_settings({**BASE, "work_mem": "6MB"}))
    assert report.replaced == [_config_job(stack)]
    assert set(_on_every_node(stack, "SHOW work_mem").values()) == {"6MB"}
    assert _started(stack) == before
    assert _leader(stack) == leader


def test_a_restart_rolls_replicas_first_then_switches_over_and_loses_no_write(
    stack: DeployedStack,
) -> None:
    _wait_whole(stack)
    before, old_leader = _started(stack), _leader(stack)
    setup_probe_table(stack.connections["owner"])
    with Writer(stack.connections["agentPooler"]) as writer:
        wait_for("first write", lambda: bool(writer.acks))
        up_at = time.time()
        report = stack.up(_settings({**BASE, "shared_buffers": "96MB", "work_mem": "6MB"}))
        wait_for("a write after the roll", lambda: len(writer.acks) > 0, timeout_s=30)
    assert report.replaced == [_config_job(stack)]
    after = _started(stack)
    assert set(_on_every_node(stack, "SHOW shared_buffers").values()) == {"96MB"}
    assert all(after[n] != before[n] for n in before), (before, after)
    topo = topology(stack.settings)
    old_node = patroni.node_of(topo, old_leader).name
    # The old leader went last: its restart was the demotion after the switchover (to the
    # synchronous standby of that moment, the one node sure to hold every commit).
    assert after[old_node] == max(after.values()), after
    assert _leader(stack) != old_leader
    _nothing_lost(stack, writer, up_at, "roll")
    _wait_whole(stack)


def test_a_value_a_node_cannot_start_with_stops_the_roll_at_the_first_replica(
    stack: DeployedStack,
) -> None:
    _wait_whole(stack)
    good = {**BASE, "shared_buffers": "96MB", "work_mem": "6MB"}
    before, leader = _started(stack), _leader(stack)
    with pytest.raises(DeployError) as failed:
        stack.up(_settings({**good, "shared_preload_libraries": "elizadb_no_such_library"}))
    message = str(failed.value)
    assert "did not start with the new parameters" in message, message
    assert "no other node was touched" in message
    assert "previous parameters are back" in message
    _wait_whole(stack)
    after = _started(stack)
    restarted = [n for n in before if after[n] != before[n]]
    assert len(restarted) == 1, (before, after)
    topo = topology(stack.settings)
    assert restarted[0] != patroni.node_of(topo, leader).name
    assert _leader(stack) == leader
    assert set(_on_every_node(stack, "SHOW shared_preload_libraries").values()) == {""}
    # Deployed with the good values again: the job finds them in place and does nothing.
    report = stack.up(_settings(good))
    assert report.replaced == [_config_job(stack)]
    assert _started(stack) == after


def test_a_new_memory_limit_replaces_the_nodes_one_at_a_time_the_leader_last(
    stack: DeployedStack,
) -> None:
    good = {**BASE, "shared_buffers": "96MB", "work_mem": "6MB"}
    stack.up(_settings(good))  # as the tests before left it (this one may run alone)
    _wait_whole(stack)
    topo = topology(stack.settings)
    old_leader = patroni.node_of(topo, _leader(stack)).name
    setup_probe_table(stack.connections["owner"])
    with Writer(stack.connections["agentPooler"]) as writer:
        wait_for("first write", lambda: bool(writer.acks))
        up_at = time.time()
        report = stack.up(
            stack_settings(
                STACK, PORT, postgres={"parameters": good}, resources={"memory": "1536m"}, **VALUES
            )
        )
        up_s = time.time() - up_at
        acked = len(writer.acks)
        wait_for("a write after the roll", lambda: len(writer.acks) > acked, timeout_s=30)
    nodes = [n.name for n in topo.nodes]
    assert set(nodes) <= set(report.replaced), report
    created = {n: stack.client.containers.get(n).attrs["Created"] for n in nodes}
    # Replaced one at a time, the old leader last, after the leadership had left it.
    assert max(created, key=created.__getitem__) == old_leader, created
    assert patroni.node_of(topo, _leader(stack)).name != old_leader
    limits = {stack.client.containers.get(n).attrs["HostConfig"]["Memory"] for n in nodes}
    assert limits == {1536 * 1024 * 1024}
    _nothing_lost(stack, writer, up_at, f"node roll (`up` took {up_s:.1f} s)")
    _wait_whole(stack)


def test_a_restore_in_place_goes_through_patronis_bootstrap_to_the_point_in_time(
    stack: DeployedStack,
) -> None:
    _wait_whole(stack)
    owner = stack.connections["owner"]
    setup_probe_table(owner)
    take_backup(stack.client, stack.settings, "full")
    point = two_batches_around_a_point(owner)
    timelines = {m.timeline for m in _members(stack)}
    parameters = _on_every_node(stack, "SHOW shared_buffers")
    report = restore_patroni.restore_in_place(
        stack.settings, RecoveryTarget(point), progress, stack.state_dir
    )
    _wait_whole(stack)
    assert stored(owner) == set(range(1, 51))
    after = {m.timeline for m in _members(stack)}
    assert len(after) == 1 and after.pop() > max(t or 0 for t in timelines), (timelines, after)
    assert _on_every_node(stack, "SHOW shared_buffers") == parameters
    assert report.new_backup, "a full backup of the new timeline"
    results = run_checks(load_outputs(stack.outputs))
    failed = [f"{r.id}: {r.reason}" for r in results if r.status not in ("pass", "warn")]
    assert not failed, failed
    progress(
        "patroni restore in place: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
    )


def test_a_restore_into_a_new_stack_reaches_the_point_and_moves_on_to_patroni(
    stack: DeployedStack, tmp_path: Path
) -> None:
    """From the Patroni stack's repository into a new stack of the builtin engine, then moved to
    Patroni by `up`: the first batch there, none of the second, at every step."""
    _wait_whole(stack)
    owner = stack.connections["owner"]
    setup_probe_table(owner)
    take_backup(stack.client, stack.settings, "full")
    point = two_batches_around_a_point(owner)
    copy = DeployedStack(stack_settings(COPY, COPY_PORT, replicas=1), {}, stack.client, tmp_path)
    copy.down(delete_volumes=True)  # a leftover of a killed run
    try:
        report = restore_into.restore_into_stack(
            stack.settings, copy.settings, RecoveryTarget(point), progress, tmp_path
        )
        copy.up()  # no changes: reads the new stack's outputs
        assert stored(copy.connections["owner"]) == set(range(1, 51))
        assert report.new_backup, "a full backup of the new stack's timeline"
        # The backup came from Patroni: what Patroni wrote into the data directory is gone from
        # both nodes, or the standby would not wait for the restored primary to lead and could
        # take the leadership from it.
        nodes = topology(copy.settings).nodes
        for node in nodes:
            code, _ = copy.client.containers.get(node.name).exec_run(
                ["test", "-e", f"{DATA_DIR}/postgresql.base.conf"]
            )
            assert code == 1, f"{node.name} keeps Patroni's postgresql.base.conf"
        copy.up(stack_settings(COPY, COPY_PORT, replicas=1, **VALUES))
        assert patroni.leader(copy.client, topology(copy.settings)) is not None
        assert stored(copy.connections["owner"]) == set(range(1, 51))
        # The source goes on unharmed.
        assert stored(owner) == set(range(1, 101))
        progress(
            "restore of a Patroni stack into a new stack: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
        )
    finally:
        copy.down(delete_volumes=True)


def test_a_restore_into_a_new_patroni_stack_bootstraps_its_cluster_at_the_point(
    stack: DeployedStack, tmp_path: Path
) -> None:
    """From the Patroni stack's repository into a new stack declared with Patroni (two nodes,
    synchronous): Patroni bootstraps the new cluster from the restore, on a new timeline, the
    other node clones it, and the stack's own passwords let its roles in: the first batch is
    there and none of the second, the verify suite passes, and the source goes on unharmed."""
    _wait_whole(stack)
    owner = stack.connections["owner"]
    setup_probe_table(owner)
    take_backup(stack.client, stack.settings, "full")
    point = two_batches_around_a_point(owner)
    source_timeline = max(m.timeline or 0 for m in _members(stack))
    settings = stack_settings(COPY, COPY_PORT, replicas=1, **VALUES)
    copy = DeployedStack(settings, {}, stack.client, tmp_path)
    copy.down(delete_volumes=True)  # a leftover of a killed run
    try:
        report = restore_into.restore_into_stack(
            stack.settings, settings, RecoveryTarget(point), progress, tmp_path
        )
        copy.up()  # no changes: reads the new stack's outputs
        members = patroni.members(copy.client, topology(settings))
        assert sorted((m.role, m.state) for m in members) == [
            ("Leader", "running"),
            ("Sync Standby", "streaming"),
        ], members
        assert min(m.timeline or 0 for m in members) > source_timeline, members
        assert stored(copy.connections["owner"]) == set(range(1, 51))
        assert stored(copy.connections["agentPooler"]) == set(range(1, 51))
        assert report.new_backup, "a full backup of the new stack's timeline"
        results = run_checks(load_outputs(copy.outputs))
        failed = [f"{r.id}: {r.reason}" for r in results if r.status not in ("pass", "warn")]
        assert not failed, failed
        assert stored(owner) == set(range(1, 101))
        progress(
            "restore of a Patroni stack into a new Patroni stack: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
        )
    finally:
        copy.down(delete_volumes=True)


def test_a_restore_patroni_cannot_bootstrap_from_fails_and_no_empty_cluster_takes_its_place(
    stack: DeployedStack,
) -> None:
    """WAL the target needs is taken out of the repository, so recovery ends before the target:
    Patroni's bootstrap fails and removes the restored data. The restore fails, naming the
    node's log, and the node refuses to start Patroni on an empty data directory rather than let
    it initialise a new cluster that would look like a successful restore."""
    _wait_whole(stack)
    owner = stack.connections["owner"]
    setup_probe_table(owner)
    full, _ = take_backup(stack.client, stack.settings, "full")
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("INSERT INTO ha_probe SELECT generate_series(1, 50)")
        time.sleep(1.0)
        point = dt.datetime.now(dt.UTC)
    check_archiving(stack.client, stack.settings)
    topo = topology(stack.settings)
    agent = agent_name(topo)
    # Every archived segment after the backup's last one (the archive's folders, not its info).
    script = (
        "for f in /var/lib/pgbackrest/archive/elizadb/*/*/*; do "
        f'[[ "$(basename "$f" | cut -c1-24)" > "{full.wal_stop}" ]] && rm -v "$f"; '
        "done; true"
    )
    removed = engine.exec_in(stack.client, agent, ["bash", "-c", script])
    assert removed.ok and "removed" in removed.stdout, removed.tail()
    with pytest.raises(DeployError) as failed:
        restore_patroni.restore_in_place(
            stack.settings,
            RecoveryTarget(point),
            progress,
            stack.state_dir,
            recovery_timeout_s=180,
        )
    node = str(failed.value).split(" ", 1)[0]
    logs = stack.client.api.logs(node).decode(errors="replace")
    assert "recovery ended before configured recovery target was reached" in logs
    assert "refusing to initialise a new, empty cluster" in logs
    assert "initdb" not in logs.split("Running custom bootstrap script", 1)[1]
