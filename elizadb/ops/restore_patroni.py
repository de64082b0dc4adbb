"""Restore a Patroni stack in place: Patroni, not eliza-db, brings the restored node up.

Patroni owns recovery (it strips recovery targets from postgresql.auto.conf) and keeps the
cluster's identity in etcd, so the steps of elizadb/ops/restore.py become:
  1. archive the current WAL segment, then stop every node and, on one host, the backup agent
     (etcd, the pooler and the data volumes stay; on several hosts the agent is the repository
     host the restore job reads through, on the node's host, with the node's certificate);
  2. `pgbackrest restore` into a folder beside the data directory of the node that led (the
     current data is still there if this fails, and the nodes are started again);
  3. delete the cluster's keys from etcd and empty every node's data directory;
  4. start that node: its entrypoint finds the restored folder and has Patroni bootstrap the
     cluster from it (image/patroni-restore.py), replaying archived WAL to the target and
     promoting, before it takes the leader key; the leader's system identifier must be the
     restored one, and only then is the guard lifted that keeps the node from letting Patroni
     initialise a new, empty cluster if that bootstrap fails;
  5. start the other nodes, which clone the new leader; remove the config job, so that `elizadb
     up` puts the stack's parameters into the new cluster's dynamic configuration again;
  6. `elizadb up`, then a full backup, the first of the new timeline.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from pathlib import Path

from elizadb import engine
from elizadb.engine import connect, explain, in_recovery, is_running
from elizadb.errors import DeployError, EngineError
from elizadb.local import deploy, patroni
from elizadb.local.apply import CONTAINER, Applier, ApplyReport
from elizadb.local.capture import Declaration
from elizadb.local.hosts import stack_engines
from elizadb.ops.backup import check_archiving, image_ref, read_catalog
from elizadb.ops.restore import (
    Progress,
    RecoveryTarget,
    RestoreReport,
    backup_set_of,
    check_target,
    finish,
    restore_job,
    restored_bytes,
)
from infra.components.backup import agent_name
from infra.components.ha import member_name
from infra.render import paths
from infra.settings import StackSettings
from infra.topology import DATA_MOUNT, Node, Topology, topology


def restore_in_place(
    settings: StackSettings,
    target: RecoveryTarget,
    progress: Progress,
    project_dir: Path,
    *,
    backup_after: bool = True,
    recovery_timeout_s: float = 3600,
) -> RestoreReport:
    """Replace the Patroni stack's data with its state at `target`. Destroys what was written
    after."""
    total = time.monotonic()
    client: engine.Target = stack_engines(settings) if settings.multi_host else connect()
    topo = topology(settings)
    declaration = deploy.declare_stack(settings)
    image = image_ref(declaration)
    tls = _tls_files(declaration, topo.nodes[0]) if topo.multi_host else None
    catalog = read_catalog(client, settings, image)
    check_target(target, catalog, dt.datetime.now(dt.UTC))
    lead = _leader(client, topo)
    # The node that led keeps leading; with no leader, the first node.
    node = patroni.node_of(topo, lead.name) if lead else topo.nodes[0]
    report = RestoreReport(settings.stack, node.name, target.describe())
    agent = agent_name(topo)
    if lead is not None and is_running(client, agent):
        progress("archiving the current WAL segment (pgbackrest check)")
        check_archiving(client, settings)
    stopped = [n.name for n in topo.nodes if is_running(client, n.name)]
    # On several hosts the agent is the repository host the restore reads through.
    if is_running(client, agent) and not topo.multi_host:
        stopped.append(agent)
    progress("stopping every node" + ("" if topo.multi_host else " and the backup agent"))
    for name in stopped:
        engine.stop(client, name, timeout_s=30)
    progress(f"restoring {node.name} to {target.describe()}, beside its current data")
    try:
        restored_id = _restore_aside(client, settings, image, node, target, tls, report)
    except Exception:
        progress("the restore failed: starting the stopped containers again, data untouched")
        for name in stopped:
            engine.start(client, name)
        raise
    report.restored_bytes = restored_bytes(catalog, report.backup_set)

    progress("removing the cluster from etcd and emptying every node's data directory")
    patroni.forget_cluster(client, topo)
    for each in topo.nodes:
        restore_job(client, settings, topo, image, each, ["clear-data"])
    _bootstrap(
        client,
        topo,
        node,
        restored_id,
        report,
        lambda: engine.start(client, node.name),
        progress,
        recovery_timeout_s,
    )
    progress("starting the other nodes: they clone the restored leader")
    for other in topo.nodes:
        if other != node:
            engine.start(client, other.name)
    # A new cluster's dynamic configuration holds none of the stack's parameters until the
    # config job runs again.
    engine.remove(client, topo.config_job_name)
    finish(client, settings, node, report, progress, project_dir, backup_after)
    report.seconds["total"] = time.monotonic() - total
    return report


def bootstrap_new_stack(
    applier: Applier,
    settings: StackSettings,
    declaration: Declaration,
    image: str,
    target: RecoveryTarget,
    report: RestoreReport,
    progress: Progress,
    recovery_timeout_s: float,
) -> None:
    """Steps 2 to 4 above for a new stack whose repository is in place (elizadb/ops/
    restore_into.py), through the `applier` that prepared its hosts: its etcd members first (on
    several hosts also the backup agent, the repository host the restore job reads through),
    then the restore beside the first node's empty data directory, then that node, from which
    Patroni bootstraps the new cluster. Patroni gives its superuser and replication roles this
    stack's passwords when the bootstrap ends; the other roles get theirs from the bootstrap job
    of `elizadb up`."""
    client = applier.target
    topo = topology(settings)
    node = topo.nodes[0]
    containers = {c.inputs["name"]: c for c in declaration.of_type(CONTAINER)}
    made = ApplyReport()
    applier.start([containers[m.name] for m in topo.etcd], made)
    tls = None
    if topo.multi_host:
        # Ready only once a primary archives, which comes later: started, not waited for.
        applier.start([containers[agent_name(topo)]], made, wait=False)
        tls = _tls_files(declaration, node)
    progress(f"restoring {node.name} to {target.describe()}")
    restored_id = _restore_aside(client, settings, image, node, target, tls, report)
    _bootstrap(
        client,
        topo,
        node,
        restored_id,
        report,
        lambda: applier.start([containers[node.name]], made, wait=False),
        progress,
        recovery_timeout_s,
    )
    if topo.multi_host:
        # Its schedule began by checking the stanza on every node, before any ran, and
        # pgBackRest waits minutes for nodes that do not answer. Its part is done: killed (a
        # stop would wait out its grace) and started again by `up`, after the nodes.
        engine.kill(client, agent_name(topo))
        engine.remove(client, agent_name(topo))


def _restore_aside(
    client: engine.Target,
    settings: StackSettings,
    image: str,
    node: Node,
    target: RecoveryTarget,
    tls: dict[str, str] | None,
    report: RestoreReport,
) -> str:
    """pgBackRest's restore into the folder beside `node`'s data directory: the restored
    system identifier."""
    started = time.monotonic()
    log = restore_job(
        client,
        settings,
        topology(settings),
        image,
        node,
        ["restore-aside", *target.pgbackrest_args()],
        tls,
    )
    report.seconds["restore"] = time.monotonic() - started
    report.backup_set = backup_set_of(log)
    restored_id = re.search(r"restored system identifier: (\d+)", log)
    if restored_id is None:
        raise DeployError(f"the restore job did not report the restored system identifier:\n{log}")
    return restored_id.group(1)


def _bootstrap(
    client: engine.Target,
    topo: Topology,
    node: Node,
    system_id: str,
    report: RestoreReport,
    start: Callable[[], None],
    progress: Progress,
    timeout_s: float,
) -> None:
    """Start `node` (`start`) and wait until it leads the cluster Patroni bootstraps from the
    restore beside its data directory."""
    started = time.monotonic()
    progress(f"starting {node.name}: Patroni replays archived WAL to the target and promotes")
    start()
    _wait_leading(client, topo, node, timeout_s)
    _check_restored(client, node, system_id)
    report.seconds["recovery"] = time.monotonic() - started


def _tls_files(declaration: Declaration, node: Node) -> dict[str, str]:
    """The node's CA, certificate and key as its container receives them: a restore job on its
    host reaches the repository host with them."""
    container = next(r for r in declaration.of_type(CONTAINER) if r.inputs.get("name") == node.name)
    return {
        u["file"]: u["content"]
        for u in container.inputs["uploads"]
        if u["file"] in (paths.CA_CERT, paths.SERVER_CERT, paths.SERVER_KEY_UPLOAD)
    }


def _check_restored(client: engine.Target, node: Node, system_id: str) -> None:
    """The leader runs the restored cluster, not a new one: then the entrypoint's guard against
    a new, empty cluster is lifted (image/entrypoint.sh)."""
    found = engine.query_rows(
        client, node.name, "SELECT system_identifier FROM pg_control_system()"
    )
    if not found or found[-1] != system_id:
        raise DeployError(
            f"{node.name} leads a cluster with system identifier {found[-1] if found else '?'}, "
            f"not the restored {system_id}: Patroni did not bootstrap from the restore; its "
            f"log:\n{explain(client, node.name)}"
        )
    engine.exec_in(client, node.name, ["rm", "-f", f"{DATA_MOUNT}/restore-pending"])


def _leader(client: engine.Target, topo: Topology) -> patroni.Member | None:
    """The running leader, None when there is none or no node can say."""
    try:
        return patroni.leader(client, topo)
    except (DeployError, EngineError):  # a node that stops as it is asked
        return None


def _wait_leading(client: engine.Target, topo: Topology, node: Node, timeout_s: float) -> None:
    wanted = member_name(node)

    def leads() -> bool:
        if not is_running(client, node.name):
            raise DeployError(
                f"{node.name} stopped during recovery: Patroni could not bootstrap from the "
                "restore. Every node's data directory is empty and the repository untouched: "
                "run `elizadb restore` again, to a target the archive reaches (`elizadb "
                f"backups`). Its log:\n{explain(client, node.name)}"
            )
        current = _leader(client, topo)
        return (
            current is not None
            and current.name == wanted
            and in_recovery(client, node.name) is False
        )

    engine.wait_until(
        f"{node.name} leading the restored cluster",
        leads,
        timeout_s,
        on_timeout=lambda: explain(client, node.name),
    )
