"""Operations on a stack whose failover Patroni decides (elizadb:ha.engine patroni).

eliza-db decides nothing here: it asks Patroni (patronictl, run inside a node as the postgres
OS user, with the node's own patroni.yml: TLS to etcd and to the members' REST APIs) and waits
for Patroni to report the result. Failure detection and promotion are Patroni's alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from elizadb import engine
from elizadb.errors import DeployError, UsageError
from infra.components.ha import member_name
from infra.render.etcd import CLIENT_PORT
from infra.render.paths import CA_CERT, SERVER_CERT
from infra.render.patroni import PATRONI_YML, PatroniCluster
from infra.topology import Node, Topology

Progress = Callable[[str], None]
ETCD_KEY = "/var/lib/etcd-private/server.key"
# Where Patroni keeps its clusters in etcd (every stack renders the default).
NAMESPACE = PatroniCluster.namespace


@dataclass(frozen=True)
class Member:
    """One node as Patroni reports it."""

    name: str  # the Patroni member name (infra/components/ha.py member_name)
    role: str  # Leader, Sync Standby, Replica, Standby Leader
    state: str  # running, streaming, starting, stopped, ...
    timeline: int | None
    lag_mb: float | None  # None for the leader (or when unknown)

    @property
    def leads(self) -> bool:
        return self.role == "Leader"


# Seconds a patronictl call may take before the next node is asked (a switchover waits for the
# new leader itself, below).
PATRONICTL_TIMEOUT_S = 10


def _patronictl(
    client: engine.Target, topo: Topology, *args: str, avoid: str = ""
) -> engine.ExecResult:
    """patronictl in the first running node (`avoid`, a node known to be cut off or unfit to
    ask, last): any member that reaches etcd can speak for the cluster."""
    said = ""
    for node in sorted(topo.nodes, key=lambda n: n.name == avoid):
        if not engine.is_running(client, node.name):
            continue
        # Bounded: on a node cut off from etcd, patronictl retries the store for ever.
        result = engine.exec_in(
            client,
            node.name,
            ["timeout", str(PATRONICTL_TIMEOUT_S), "patronictl", "-c", PATRONI_YML, *args],
            user="postgres",
        )
        if result.ok:
            return result
        said = result.tail()
    raise DeployError(
        f"no node of {topo.prefix} answers patronictl {args[0]}; is the stack up? "
        "(`elizadb status`)" + (f"\nthe last answer:\n{said}" if said else "")
    )


def members(client: engine.Target, topo: Topology, avoid: str = "") -> list[Member]:
    rows = json.loads(_patronictl(client, topo, "list", "--format", "json", avoid=avoid).stdout)
    found = []
    for row in rows:
        lag = row.get("Lag in MB")
        found.append(
            Member(
                name=str(row["Member"]),
                role=str(row["Role"]),
                state=str(row["State"]),
                timeline=int(row["TL"]) if row.get("TL") not in (None, "") else None,
                lag_mb=float(lag) if isinstance(lag, int | float) else None,
            )
        )
    return found


def leader(client: engine.Target, topo: Topology, avoid: str = "") -> Member | None:
    leaders = [m for m in members(client, topo, avoid) if m.leads and m.state == "running"]
    return leaders[0] if len(leaders) == 1 else None


def node_of(topo: Topology, member: str) -> Node:
    return next(n for n in topo.nodes if member_name(n) == member)


def switchover(
    client: engine.Target, topo: Topology, target: Node, progress: Progress
) -> dict[str, float]:
    """Ask Patroni to hand the leadership to `target`, and wait until it leads."""
    current = leader(client, topo)
    if current is None:
        raise DeployError("the cluster has no running leader to switch over from")
    wanted = member_name(target)
    if current.name == wanted:
        raise UsageError(f"{target.name} already leads; choose another node")
    sync = [m.name for m in members(client, topo) if m.role == "Sync Standby"]
    if sync and wanted not in sync:
        # Patroni refuses it (412): in synchronous mode only a synchronous standby is sure to
        # hold every acknowledged commit.
        raise UsageError(
            f"{target.name} is not a synchronous standby, and in synchronous mode Patroni hands "
            f"the leadership only to one ({', '.join(sync)}); switch over to it"
        )
    started = time.monotonic()
    progress(f"asking Patroni to switch over from {current.name} to {wanted}")
    # Asked in another node first: patronictl posts the request to the leader's REST API at its
    # published address, which from inside the leader's own container is its own host's, and an
    # engine need not hairpin that back (Podman's netavark in the test hosts does not: the
    # request never arrived and patronictl ran into its timeout, 10 s lost per switchover).
    result = _patronictl(
        client,
        topo,
        "switchover",
        "--leader",
        current.name,
        "--candidate",
        wanted,
        "--force",
        avoid=node_of(topo, current.name).name,
    )
    # patronictl prints the topology before and after its verdict ("Successfully switched over
    # to ...", "Switchover failed, details: ..."): the last line is a table's border.
    verdicts = [line.strip() for line in result.stdout.splitlines() if "switch" in line.lower()]
    said = verdicts[-1] if verdicts else "requested"
    if "failed" in said.lower():
        raise DeployError(f"Patroni refused the switchover to {wanted}: {said}")
    progress(said)
    asked = time.monotonic() - started

    def leads() -> bool:
        now = leader(client, topo)
        return now is not None and now.name == wanted

    engine.wait_until(
        f"{wanted} leading",
        leads,
        120,
        on_timeout=lambda: _patronictl(client, topo, "list").stdout,
    )
    return {"requested": asked, "leader": time.monotonic() - started}


@dataclass(frozen=True)
class EtcdHealth:
    name: str
    healthy: bool
    detail: str


def etcdctl(client: engine.Target, member: str, *args: str) -> engine.ExecResult:
    """etcdctl in an etcd member's container, over its own client URL with its certificate."""
    return engine.exec_in(
        client,
        member,
        [
            "etcdctl",
            f"--endpoints=https://localhost:{CLIENT_PORT}",
            f"--cacert={CA_CERT}",
            f"--cert={SERVER_CERT}",
            f"--key={ETCD_KEY}",
            *args,
        ],
    )


def forget_cluster(client: engine.Target, topo: Topology) -> None:
    """Delete the cluster's keys from etcd (what `patronictl remove` does), so that the next
    Patroni node to start bootstraps it anew. Every node must be stopped first: a running one
    would write its keys back."""
    prefix = f"{NAMESPACE}/{topo.prefix}/"
    said = ""
    for member in topo.etcd:
        if not engine.is_running(client, member.name):
            continue
        result = etcdctl(client, member.name, "del", "--prefix", prefix)
        if result.ok:
            return
        said = result.tail()
    raise DeployError(
        f"no etcd member of {topo.prefix} deleted the cluster's keys ({prefix})"
        + (f"; the last answer:\n{said}" if said else "; none is running")
    )


def etcd_status(client: engine.Target, member: str) -> tuple[int, int] | None:
    """(the member's own ID, the ID of the member it follows) as the etcd member `member`
    reports them; None when it does not answer."""
    result = etcdctl(client, member, "endpoint", "status", "-w", "json")
    if not result.ok:
        return None
    try:
        status = json.loads(result.stdout)[0]["Status"]
        return int(status["header"]["member_id"]), int(status["leader"])
    except (ValueError, LookupError, TypeError):
        return None


def etcd_leader(client: engine.Target, topo: Topology) -> str | None:
    """The etcd member that leads the etcd cluster (None: none of them says it does). Each
    member is asked about itself."""
    for member in topo.etcd:
        if not engine.is_running(client, member.name):
            continue
        ids = etcd_status(client, member.name)
        if ids is not None and ids[0] == ids[1]:
            return member.name
    return None


def etcd_health(client: engine.Target, topo: Topology) -> list[EtcdHealth]:
    """Each etcd member asked over its own client URL, with the member's certificate."""
    found = []
    for member in topo.etcd:
        if not engine.is_running(client, member.name):
            found.append(EtcdHealth(member.name, False, "not running"))
            continue
        result = etcdctl(client, member.name, "endpoint", "health")
        text = (result.stdout + result.stderr).strip().splitlines()
        found.append(EtcdHealth(member.name, result.ok, text[-1] if text else ""))
    return found
