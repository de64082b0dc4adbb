"""Replacing the nodes of a running Patroni cluster one at a time.

A change to a node's container (its memory, the image, a reissued certificate) replaces the
container. Replaced all at once, as the dependency levels of the apply would, the cluster would
have no leader until they are back. So `elizadb up` first replaces the changed nodes the way a
rolling update does (CloudNativePG's is the model): each replica, the synchronous standby last,
waiting until it streams again; then a switchover to the synchronous standby; then the old
leader. The apply that follows finds them as declared.

Only a whole cluster is rolled: with a node down or not streaming there is no safe order, and the
apply replaces the nodes as before (the progress says so).
"""

from __future__ import annotations

import time

from elizadb import engine
from elizadb.errors import DeployError, UsageError
from elizadb.local import patroni
from elizadb.local.apply import CONTAINER, Applier, ApplyReport, Progress
from elizadb.local.capture import Declaration, Declared
from infra.components.ha import member_name
from infra.settings import StackSettings
from infra.topology import Node, Topology, topology

# How long a replaced node may take to stream from the leader again, and Patroni to accept the
# switchover to the heir.
STREAMING_TIMEOUT_S = 300
SWITCHOVER_TIMEOUT_S = 60


def roll_nodes(
    applier: Applier,
    settings: StackSettings,
    declaration: Declaration,
    report: ApplyReport,
    progress: Progress,
) -> None:
    """Replace the changed nodes of a whole running cluster one at a time, the leader last."""
    if not settings.patroni:
        return
    topo = topology(settings)
    declared = {c.inputs["name"]: c for c in declaration.of_type(CONTAINER)}
    changed = [n for n in topo.nodes if n.name in declared and applier.replaces(declared[n.name])]
    if not changed:
        return
    try:
        found = patroni.members(applier.target, topo)
    except DeployError:
        found = []
    if not _whole(found, topo):
        why = (
            f"the cluster is not whole ({', '.join(f'{m.name} {m.role} {m.state}' for m in found)})"
            if found
            else "no Patroni member answers (a stack moving to Patroni, or one that is down)"
        )
        progress(
            f"not rolling the {len(changed)} changed node(s): {why}; they are replaced together"
        )
        return
    leader = next(m.name for m in found if m.leads)
    roles = {m.name: m.role for m in found}
    replicas = [n for n in changed if member_name(n) != leader]
    # The synchronous standby last of the replicas: it is the one that takes over.
    replicas.sort(key=lambda n: roles[member_name(n)] == "Sync Standby")
    progress(f"rolling {len(changed)} node(s): {', '.join(n.name for n in changed)}")
    started = time.monotonic()
    report.built_image |= applier.prepare(declaration)
    for node in replicas:
        _replace(applier, declared[node.name], topo, node, report, progress)
    old = patroni.node_of(topo, leader)
    if old in changed:
        _switch_over(applier, topo, leader, progress)
        _replace(applier, declared[old.name], topo, old, report, progress)
    progress(f"rolled {len(changed)} node(s) in {time.monotonic() - started:.1f}s")


def _whole(found: list[patroni.Member], topo: Topology) -> bool:
    """One running leader and every other node streaming."""
    return (
        sorted(m.name for m in found) == sorted(member_name(n) for n in topo.nodes)
        and sum(m.leads and m.state == "running" for m in found) == 1
        and all(m.leads or m.state == "streaming" for m in found)
    )


def _replace(
    applier: Applier,
    decl: Declared,
    topo: Topology,
    node: Node,
    report: ApplyReport,
    progress: Progress,
) -> None:
    applier.start([decl], report)
    started = time.monotonic()

    def streams() -> bool:
        try:
            found = patroni.members(applier.target, topo)
        except DeployError:
            return False
        if not _whole(found, topo):
            return False
        # A member's key can outlive its container for a moment; the leader's walsender cannot:
        # the old one ended with the old container, so a streaming one is the new node's.
        leader = patroni.node_of(topo, next(m.name for m in found if m.leads))
        rows = engine.query_rows(
            applier.target,
            leader.name,
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
        )
        return node == leader or (rows is not None and member_name(node) in rows)

    engine.wait_until(
        f"{node.name} streaming again, the cluster whole",
        streams,
        STREAMING_TIMEOUT_S,
        interval_s=1,
        on_timeout=lambda: engine.logs(applier.target, node.name, 20),
    )
    progress(f"{node.name} streams again ({time.monotonic() - started:.1f}s after it started)")


def _switch_over(applier: Applier, topo: Topology, leader: str, progress: Progress) -> None:
    """Hand the leadership to the heir, asking again while Patroni declines: a standby that
    has just come back is named synchronous, and so a candidate, a loop or two later."""
    deadline = time.monotonic() + SWITCHOVER_TIMEOUT_S
    while True:
        try:
            now = patroni.leader(applier.target, topo)
            if now is not None and now.name != leader:
                return  # a request that patronictl reported as failed was carried out after all
            patroni.switchover(applier.target, topo, _heir(applier, topo, leader), progress)
            return
        except (DeployError, UsageError) as err:
            if time.monotonic() > deadline:
                raise
            progress(f"the switchover was declined ({str(err).splitlines()[-1]}); asking again")
            time.sleep(2)


def _heir(applier: Applier, topo: Topology, leader: str) -> Node:
    """The node to hand the leadership to: the synchronous standby (in synchronous mode the only
    one Patroni accepts), else a streaming replica."""
    found = patroni.members(applier.target, topo)
    for role in ("Sync Standby", "Replica"):
        for m in found:
            if m.role == role and m.state == "streaming" and m.name != leader:
                return patroni.node_of(topo, m.name)
    raise DeployError(f"no streaming standby to hand the leadership of {leader} to: {found}")
