"""A change of `elizadb:ha.engine` under `elizadb up`, judged before anything is touched.

builtin → patroni moves the running stack in place. The applier replaces each node's container
by a Patroni node on the same data volume; what keeps it safe is in the image and the job:
the node that is read-write now starts Patroni at once and becomes the leader with its data,
while each standby waits for that leader before its Patroni starts
(image/entrypoint.sh, wait_for_leader_if_builtin_standby), and the bootstrap job makes the
rewind role Patroni did not make (infra/render/bootstrap.py). The move starts only from a
stack whose nodes all run with exactly one of them read-write: any other state would leave
Patroni to choose whose data survives.

patroni → builtin is refused: the builtin engine would have to take over data directories
Patroni configured and a cluster whose leader it did not choose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from elizadb.engine import Engines, in_recovery
from elizadb.errors import ElizaDbError
from infra.components.common import LABEL_NODE, LABEL_ROLE, stack_filter
from infra.settings import StackSettings
from infra.topology import topology

Progress = Callable[[str], None]
KEY = "elizadb:ha.engine"
# The role label (infra/components/common.py labels) of the node containers of each engine.
BUILTIN_NODE_ROLES = frozenset({"primary", "replica"})
PATRONI_NODE_ROLE = "patroni"


class EngineChangeError(ElizaDbError):
    """The configured HA engine cannot take over the stack as it runs: nothing was changed."""

    exit_code = 2


@dataclass(frozen=True)
class FoundNode:
    """A node container of the stack on one engine, as the engine and the server report it."""

    host: str  # infra/placement.py's name for it ("local" for a stack that declares none)
    name: str
    role: str  # its role label: primary or replica (builtin), patroni
    status: str  # the engine's: running, exited, ...
    # Asked of the server only when the engine changes: None when not asked, not running, or
    # when its server does not answer.
    in_recovery: bool | None = None


def found_nodes(engines: Engines, stack: str) -> list[FoundNode]:
    """Every node container of the stack on the stack's engines, in name order."""
    found: list[FoundNode] = []
    label = stack_filter(stack)
    for host, client in engines.all():
        for container in client.containers.list(all=True, filters=label):
            role = container.labels.get(LABEL_ROLE, "")
            if role in BUILTIN_NODE_ROLES | {PATRONI_NODE_ROLE}:
                name = str(container.labels.get(LABEL_NODE) or container.name)
                found.append(FoundNode(host, name, role, str(container.status)))
    return sorted(found, key=lambda n: (n.name, n.host))


def running_engine(nodes: list[FoundNode]) -> str | None:
    """The engine the stack's node containers were made for (None: no node container)."""
    roles = {n.role for n in nodes}
    if not roles:
        return None
    return "patroni" if PATRONI_NODE_ROLE in roles else "builtin"


def check_engine_change(settings: StackSettings, engines: Engines, progress: Progress) -> None:
    """Refuse (exit 2, nothing touched) an engine change that cannot be made safely; say what
    `up` is about to do when the stack moves from the builtin engine to Patroni."""
    nodes = found_nodes(engines, settings.stack)
    running = running_engine(nodes)
    declared = settings.ha.engine
    if running is None or running == declared:
        return
    if running == "patroni":
        raise EngineChangeError(
            f"{KEY} = {declared!r}: the stack runs under Patroni "
            f"({', '.join(n.name for n in nodes)}), and moving it back to the builtin engine is "
            f"not supported (only builtin -> patroni is): set {KEY} back to 'patroni'. Nothing "
            "was changed."
        )
    nodes = [
        replace(n, in_recovery=in_recovery(engines.host(n.host), n.name))
        if n.status == "running"
        else n
        for n in nodes
    ]
    _check_movable(settings, nodes)
    leader = next(n for n in nodes if n.in_recovery is False)
    standbys = ", ".join(n.name for n in nodes if n is not leader) or "none"
    progress(
        f"moving the stack from the builtin engine to Patroni: {leader.name} (read-write now) "
        f"becomes the leader with its data and the standbys ({standbys}) follow it once it "
        "leads; data volumes and passwords are kept"
    )


def _check_movable(settings: StackSettings, nodes: list[FoundNode]) -> None:
    """A builtin stack moves only from a state where Patroni has one choice of leader: every
    node runs, exactly one is read-write, and each node's data stays on its host."""
    topo = topology(settings)
    problems: list[str] = []
    stopped = [f"{n.name} is {n.status}" for n in nodes if n.status != "running"]
    silent = [
        f"{n.name} does not answer"
        for n in nodes
        if n.status == "running" and n.in_recovery is None
    ]
    problems += stopped + silent
    writable = [n.name for n in nodes if n.in_recovery is False]
    if not stopped and not silent and len(writable) != 1:
        problems.append(
            f"{len(writable)} nodes accept writes ({', '.join(writable) or 'none'}), not one"
        )
    declared_host = {n.name: topo.node_host(n) for n in topo.nodes}
    for n in nodes:
        if n.name in declared_host and declared_host[n.name] != n.host:
            problems.append(
                f"{n.name} runs on host {n.host} but would be placed on "
                f"{declared_host[n.name]}; its data volume stays where it is"
            )
    if problems:
        raise EngineChangeError(
            f"{KEY} = 'patroni': the stack runs the builtin engine and moves to Patroni only "
            f"when every node runs, exactly one accepts writes and no node changes host; now "
            f"{'; '.join(problems)}. Bring the stack back to health with the builtin engine "
            f"first (set {KEY} to 'builtin' and run `elizadb up`, or `elizadb failover`), keep "
            "each node on its host (elizadb:placement), then move. Nothing was changed."
        )
