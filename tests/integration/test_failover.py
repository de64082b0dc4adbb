"""Failover, switchover and rejoin drills against real containers (issue 5): with synchronous
replication no acknowledged write is lost and the most advanced standby is promoted, every time;
without it the drill reports what it measured; there is never a second primary, and the verify
suite passes after every drill."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from elizadb.drills import report
from elizadb.drills.failover import SCHEMA
from elizadb.local import deploy
from infra.topology import topology
from tests.integration.ha_probe import wait_for
from tests.integration.stacks import DeployedStack, deployed_stack, drill, progress
from verify.suite import load_outputs, run_checks

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sync_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(
        tmp_path_factory.mktemp("fo"), "itfo", 46500, replication={"synchronous": True}
    ) as handle:
        yield handle


def _verify_after(stack: DeployedStack) -> None:
    stack.up()  # no change expected; refreshes outputs with the current primary
    results = run_checks(load_outputs(stack.outputs), only=["health", "replication", "pooler"])
    failed = [f"{r.id}: {r.reason}" for r in results if r.status == "fail"]
    assert not failed, failed


def test_three_failovers_lose_no_acknowledged_write_and_promote_the_most_advanced(
    sync_stack: DeployedStack, tmp_path: Path
) -> None:
    results = []
    for _ in range(3):
        r = drill(sync_stack)
        results.append(r)
        assert r.synchronous
        assert r.acked > 50, r.as_dict()
        assert r.missing == 0, f"acknowledged rows lost: {r.missing}"
        assert r.promoted_most_advanced, (r.new_primary, r.positions)
        assert r.primaries_after == 1
        assert r.new_primary != r.old_primary
        # acknowledged writes carry the timeline they were written on: the old one, then the
        # promoted node's new one
        assert len(r.as_dict()["ack_count_by_timeline"]) == 2, r.as_dict()["ack_count_by_timeline"]
        _verify_after(sync_stack)
    # the primary moved each time and writes carried on after every fault
    assert [r.new_primary for r in results] == ["replica-1", "primary", "replica-1"]
    (tmp_path / "drill.svg").write_text(report.render_svg(results))
    assert report.summary(results)["rpo_zero_every_time"] is True


def test_after_a_failover_a_pooler_that_exits_is_started_again_by_its_restart_policy(
    sync_stack: DeployedStack,
) -> None:
    """The failover reloads the pooler with a SIGHUP sent from inside its container: sent through
    the engine's kill API, Docker Engine drops the container's restart policy for its next exit,
    and a pooler that then died would stay down."""
    r = drill(sync_stack)
    assert r.missing == 0
    name = topology(sync_stack.settings).pooler_name
    pooler = sync_stack.client.containers.get(name)
    restarts = pooler.attrs["RestartCount"]
    # SIGINT: PgBouncer's safe shutdown, it exits once no transaction runs.
    assert pooler.exec_run(["sh", "-c", "kill -INT 1"]).exit_code == 0

    def serves_again() -> bool:
        pooler.reload()
        if pooler.status != "running" or pooler.attrs["RestartCount"] <= restarts:
            return False
        try:
            with psycopg.connect(sync_stack.connections["agentPooler"], connect_timeout=3) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError:
            return False

    wait_for(
        f"{name} started again and serving",
        serves_again,
        timeout_s=60,
        explain=lambda: (
            f"{pooler.status}, {pooler.attrs['RestartCount']} restart(s), {pooler.attrs['State']}"
        ),
    )


def test_a_lagging_standby_is_passed_over(sync_stack: DeployedStack) -> None:
    """replica-1 is frozen while writes go on, so only replica-2 holds the last acknowledged
    commits: promoting replica-1 (the lower index) would lose them."""
    current = deploy.effective_settings(
        sync_stack.settings, deploy.StateFile(sync_stack.settings.stack)
    ).primary_node
    standbys = [n for n in ("primary", "replica-1", "replica-2") if n != current]
    lagging, ahead = standbys[0], standbys[1]
    r = drill(sync_stack, lagging=lagging)
    assert r.positions[ahead] > r.positions[lagging], r.positions
    assert r.new_primary == ahead
    assert r.missing == 0
    assert r.primaries_after == 1
    _verify_after(sync_stack)


def test_switchover_loses_no_row_and_the_old_primary_streams_from_the_new(
    sync_stack: DeployedStack,
) -> None:
    r = drill(sync_stack, kind="switchover")
    assert r.missing == 0
    assert r.primaries_after == 1
    # the old primary was demoted and streams from the new one
    with psycopg.connect(
        sync_stack.connections["superuser"].replace("/postgres?", "/eliza?"), autocommit=True
    ) as conn:
        standbys = {
            row[0]: row[1]
            for row in conn.execute("SELECT application_name, state FROM pg_stat_replication")
        }
        node = conn.execute("SELECT current_setting('cluster_name')").fetchone()
    assert node == (r.new_primary,)
    assert standbys[f"elizadb_{r.old_primary.replace('-', '_')}"] == "streaming", standbys
    _verify_after(sync_stack)


def test_verify_reports_synchronous_replication_that_cannot_be_satisfied(
    sync_stack: DeployedStack,
) -> None:
    """Both standbys cut off from the primary: every commit would hang. Verify says so (and only
    the replication checks it should), then passes again once they are back."""
    from elizadb.drills.failover import _set_conninfo
    from elizadb.ops.failover import Cluster

    sync_stack.up()
    cluster = Cluster(sync_stack.client, sync_stack.settings)
    standbys = [n for n in cluster.topo.nodes if n != cluster.topo.current_primary]
    for node in standbys:
        _set_conninfo(cluster, node, "''")
    try:
        results = {
            r.id: r for r in run_checks(load_outputs(sync_stack.outputs), only=["replication"])
        }
        statuses = {check: r.status for check, r in results.items()}
        # Exactly these: no standby streams, so commits cannot be confirmed and the slots are
        # idle; lag cannot be measured without a stream; the standbys still refuse writes.
        assert statuses == {
            "replication.streaming": "fail",
            "replication.slots": "fail",
            "replication.lag": "skip",
            "replication.converging": "pass",  # no streaming slot to follow
            "replication.read_only": "pass",
            "replication.synchronous": "fail",
        }, statuses
        assert (
            "needs 1 standby(s) to confirm each commit" in results["replication.synchronous"].reason
        )
    finally:
        for node in standbys:
            _set_conninfo(cluster, node, None)
    for node in standbys:
        cluster.wait_streaming(node, cluster.topo.current_primary, timeout_s=30)
    results = run_checks(load_outputs(sync_stack.outputs), only=["replication"])
    assert all(r.status == "pass" for r in results), [(r.id, r.reason) for r in results]


def test_asynchronous_failover_reports_the_loss_it_measured(tmp_path: Path) -> None:
    with deployed_stack(tmp_path, "itfoa", 46600, replicas=1) as stack:
        r = drill(stack)
        assert not r.synchronous
        acked = {seq for *_, seq in r.acks}
        with psycopg.connect(
            stack.connections["superuser"].replace("/postgres?", "/eliza?"), autocommit=True
        ) as conn:
            present = {
                row[0]
                for row in conn.execute(f"SELECT seq FROM {SCHEMA}.writes WHERE run = %s", (r.run,))
            }
        # the report is the recount, not a claim
        assert r.missing == len(acked - present), (sorted(acked - present)[:20], r.as_dict())
        assert "| off |" in report.render_table([r])
        assert r.primaries_after == 1, r.as_dict()


def test_watch_fails_over_by_itself_and_the_old_primary_rejoins(sync_stack: DeployedStack) -> None:
    import threading

    from elizadb.ops.failover import Cluster, watch

    cluster = Cluster(sync_stack.client, sync_stack.settings)
    old = cluster.topo.current_primary
    stop = threading.Event()
    results: list = []
    watcher = threading.Thread(
        target=lambda: results.extend(watch(cluster, progress, stop, interval_s=0.3)), daemon=True
    )
    watcher.start()
    try:
        sync_stack.client.containers.get(old.name).kill()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            primaries = Cluster(sync_stack.client, sync_stack.settings).primaries()
            rejoined = Cluster(sync_stack.client, sync_stack.settings).state(old)
            if len(primaries) == 1 and primaries[0] != old and rejoined.in_recovery:
                break
            time.sleep(0.5)
    finally:
        stop.set()
        watcher.join(timeout=60)
    assert len(results) == 1 and results[0].old == old
    assert Cluster(sync_stack.client, sync_stack.settings).primaries() == [results[0].new]
    assert Cluster(sync_stack.client, sync_stack.settings).state(old).in_recovery is True
    _verify_after(sync_stack)


def test_status_after_a_failover_shows_the_role_each_node_plays_and_where_the_pooler_routes(
    sync_stack: DeployedStack,
) -> None:
    """`elizadb status` asks every server its role and the pooler its route: after a failover
    the old primary is a standby streaming from the new one, and the pooler names the new one."""
    r = drill(sync_stack)
    sync_stack.up()
    prefix = f"elizadb-{sync_stack.settings.stack}"
    new, old = f"{prefix}-{r.new_primary}", f"{prefix}-{r.old_primary}"
    rows = {row.name: row for row in deploy.status(sync_stack.settings)}
    writers = [name for name, row in rows.items() if row.in_recovery is False]
    assert writers == [new], rows
    assert rows[new].replication == "2 standby(s), 2 streaming", rows[new]
    assert rows[old].in_recovery is True
    assert rows[old].replication.startswith(f"streaming from {new} "), rows[old]
    assert rows[f"{prefix}-pgbouncer"].replication == f"-> {new}", rows[f"{prefix}-pgbouncer"]
