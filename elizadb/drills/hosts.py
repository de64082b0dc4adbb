"""Host-loss, partition and switchover drills for a Patroni stack.

The fault is applied to every part of the stack on one host, through that host's engine:

  host-loss  every container of the stack there gets SIGKILL at once (a crashed or powered-off
             machine, as far as the stack can tell); "restored" starts them again, as a boot
             would.
  partition  every container of the stack there is disconnected from the stack network, which
             is also what the host's published ports forward to: peers cannot reach those parts
             and they reach no peer, while the drill still drives them through the engine;
             "restored" connects them again at their own addresses.

A writer commits tagged rows through the pooler (which must run on another host) and records
every acknowledged commit with the address of the server that acknowledged it. In a partition
drill of the leader's host a second writer runs inside the old leader's container, over its
socket: a client on the isolated side. Patroni, not eliza-db, decides the failover; the drill
only watches.

  RTO  the gap in acknowledged pooled writes: the old leader's last before the fault to the
       first by another node after it.
  RPO  acknowledged rows (of both writers) missing once the cluster is whole again.
  overlapping acknowledgements  isolated-side acknowledgements at or after the other side's
       first: two nodes accepting writes at once. Must be 0.

The switchover drill (any Patroni stack, on one host or several) faults nothing: it asks Patroni
for a planned switchover to the synchronous standby (in synchronous mode the only node Patroni
hands the leadership to; otherwise the replica least behind) while the same pooled writer runs,
and measures the same RTO and RPO: what a planned change of leader costs the pooler's clients.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
from psycopg import sql

from elizadb import engine
from elizadb.drills.failover import SCHEMA, Writer, prepare, present_seqs
from elizadb.errors import DeployError, UsageError
from elizadb.local import patroni
from infra.components.ha import member_name
from infra.topology import Node, Topology, topology
from verify.ca_file import with_root_cert

Progress = Callable[[str], None]
KINDS = ("host-loss", "partition")
SWITCHOVER = "switchover"

# The server that acknowledged a row: each node has its own address on its host's stack network.
INSERT_BY_ADDRESS = sql.SQL(
    "INSERT INTO {}.writes (run, seq, node, timeline) VALUES (%s, %s,"
    " host(inet_server_addr()), substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))"
    " RETURNING node, timeline"
).format(sql.Identifier(SCHEMA))

# The isolated side's writer, inside a node's container: each acknowledged row is logged with
# the machine's clock when psql returned (containers share the machine's clock).
NODE_WRITER = """
seq=$1
while [ ! -e /tmp/elizadb-drill.stop ]; do
  if psql -X -q -At -h /run/postgresql -d "$2" -v ON_ERROR_STOP=1 \\
      -c "INSERT INTO $3.writes (run, seq, node, timeline) VALUES ('$4', $seq, 'isolated', '')" \\
      >/dev/null 2>&1; then
    echo "$seq $(date +%s.%N)" >> /tmp/elizadb-drill.acks
  fi
  seq=$((seq + 1))
  sleep 0.02
done
"""
ISOLATED_FIRST_SEQ = 1_000_000


@dataclass
class HostDrillResult:
    kind: str
    run: str
    host: str
    old_leader: str  # node short names
    new_leader: str
    acked: int  # pooled writes
    isolated_acked: int  # the isolated side's writes (partition of the leader's host)
    missing: int  # RPO: acknowledged rows of either writer not in the cluster at the end
    overlapping: int  # isolated acknowledgements at or after the other side's first
    rto_s: float
    events: dict[str, float]  # seconds relative to the fault
    acks: list[tuple[float, str, str, int]]  # (seconds from the fault, node, timeline, seq)
    isolated_acks: list[float]  # seconds from the fault
    errors: int
    # The host of the etcd member that led etcd when the drill began ("" if none said): a new
    # etcd leader renews every lease, Patroni's leader key included, at its full TTL.
    etcd_leader_host: str

    # The timeline picture's names (report.render_svg).
    @property
    def old_primary(self) -> str:
        return self.old_leader

    @property
    def new_primary(self) -> str:
        return self.new_leader

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def start_node_writer(
    client: engine.Target, container: str, database: str, run: str, first: int
) -> None:
    """Start NODE_WRITER in `container`, its rows numbered from `first`."""
    engine.exec_in(
        client, container, ["rm", "-f", "/tmp/elizadb-drill.stop", "/tmp/elizadb-drill.acks"]
    )
    api = engine.on(client, container).api
    try:
        exec_id = api.exec_create(
            container,
            ["bash", "-c", NODE_WRITER, "node-writer", str(first), database, SCHEMA, run],
            user="postgres",
        )["Id"]
        api.exec_start(exec_id, detach=True)
    except docker.errors.APIError as exc:
        raise DeployError(f"cannot start a writer in {container}: {exc}") from None


def stop_node_writer(client: engine.Target, container: str) -> dict[int, float]:
    """Stop the writer; its acknowledged rows with their wall-clock times."""
    engine.exec_in(client, container, ["touch", "/tmp/elizadb-drill.stop"])
    time.sleep(0.5)
    text = engine.exec_in(client, container, ["cat", "/tmp/elizadb-drill.acks"]).stdout
    return {int(seq): float(at) for seq, at in (line.split() for line in text.splitlines())}


@dataclass(frozen=True)
class _Attachment:
    container: str
    address: str
    aliases: tuple[str, ...]


class _Fault:
    """The fault on every container of the stack on one host, and its undoing."""

    def __init__(self, engines: engine.Engines, topo: Topology, host: str, kind: str) -> None:
        self.client = engines.host(host)
        self.kind = kind
        self.network = topo.network_name
        names = [n.name for n in topo.nodes if topo.node_host(n) == host]
        names += [m.name for m in topo.etcd if topo.etcd_host(m) == host]
        self.containers = sorted(names)
        self.attachments: list[_Attachment] = []

    def apply(self) -> None:
        if self.kind == "partition":
            for name in self.containers:
                attrs = self.client.api.inspect_container(name)
                endpoint = attrs["NetworkSettings"]["Networks"][self.network]
                # The engine adds the short container id itself on every connect.
                aliases = tuple(a for a in endpoint.get("Aliases") or [] if a != attrs["Id"][:12])
                self.attachments.append(_Attachment(name, endpoint["IPAddress"], aliases))
        with ThreadPoolExecutor(max_workers=max(len(self.containers), 1)) as pool:
            list(pool.map(self._cut, self.containers))

    def _cut(self, name: str) -> None:
        if self.kind == "host-loss":
            engine.kill(self.client, name)
        else:
            self.client.api.disconnect_container_from_network(name, self.network, force=True)

    def undo(self) -> None:
        if self.kind == "host-loss":
            for name in self.containers:
                engine.start(self.client, name)
            return
        for a in self.attachments:
            self.client.api.connect_container_to_network(
                a.container, self.network, aliases=list(a.aliases), ipv4_address=a.address
            )


def run_host_drill(
    engines: engine.Engines,
    settings: Any,
    outputs: dict[str, Any],
    root_cert: str,
    progress: Progress,
    *,
    kind: str,
    host: str | None = None,
    write_before_s: float = 2.0,
    hold_s: float = 30.0,
    write_after_s: float = 2.0,
    timeout_s: float = 120.0,
) -> HostDrillResult:
    """One drill on `host` (default: the leader's). `hold_s`: how long the fault lasts at least
    (a partition must outlast Patroni's lease for its isolated side to be tested)."""
    topo = topology(settings)
    if kind not in KINDS:
        raise UsageError(f"drill {kind}: one of {', '.join(KINDS)}")
    if not topo.multi_host:
        raise UsageError(
            f"stack {settings.stack} runs on one host; host-loss and partition drills need a "
            "stack on several hosts (elizadb:hosts)"
        )
    leader = patroni.leader(engines, topo)
    if leader is None:
        raise DeployError("the cluster has no running leader; `elizadb status` shows why")
    old = patroni.node_of(topo, leader.name)
    target = host or topo.node_host(old)
    if target not in topo.hosts_used:
        raise UsageError(f"--host {target}: not a host of the stack ({', '.join(topo.hosts_used)})")
    if target == topo.pooler_host:
        raise UsageError(
            f"--host {target} runs the pooler, through which the drill writes; drill another host "
            "or place the pooler elsewhere (elizadb:placement.pooler)"
        )
    _wait_whole(engines, topo, settings.synchronous, timeout_s)
    writer = _pooled_writer(outputs, root_cert)
    run = writer.run
    isolated_writer = kind == "partition" and topo.node_host(old) == target
    etcd_leader_host = etcd_leader_host_of(engines, topo)
    if isolated_writer:
        start_node_writer(engines, old.name, settings.database, run, ISOLATED_FIRST_SEQ)
    writer.start()
    time.sleep(write_before_s)
    fault = _Fault(engines, topo, target, kind)
    progress(f"{kind} of host {target}: {', '.join(fault.containers)}")
    t0, wall0 = time.monotonic(), time.time()
    events: dict[str, float] = {}
    isolated: dict[int, float] = {}
    try:
        fault.apply()
        events["fault"] = time.monotonic() - t0
        new = _wait_new_leader(engines, topo, old, timeout_s)
        events["new_leader"] = time.monotonic() - t0
        progress(f"Patroni elected {new.short} {events['new_leader']:.1f} s after the fault")
        old_address = topo.address(old)
        first = _wait_ack(writer, lambda a: a != old_address, t0, timeout_s)
        events["first_write_after"] = first - t0
        time.sleep(max(0.0, t0 + hold_s - time.monotonic()))
    finally:
        if isolated_writer:
            isolated = stop_node_writer(engines, old.name)
        fault.undo()
        events["restored"] = time.monotonic() - t0
        progress(f"host {target} restored {events['restored']:.1f} s after the fault")
    _wait_streaming(engines, topo, old, timeout_s)
    events["rejoined"] = time.monotonic() - t0
    time.sleep(write_after_s)
    writer.stop()
    # The isolated writer logs the machine's wall clock (it runs in a container).
    isolated_at = {seq: at - wall0 for seq, at in isolated.items()}
    return _result(
        kind,
        run,
        target,
        (old, new),
        topo,
        writer,
        t0,
        events,
        (outputs, root_cert),
        isolated_at,
        etcd_leader_host,
    )


def run_switchover_drill(
    client: engine.Target,
    settings: Any,
    outputs: dict[str, Any],
    root_cert: str,
    progress: Progress,
    *,
    write_before_s: float = 2.0,
    write_after_s: float = 2.0,
    timeout_s: float = 120.0,
) -> HostDrillResult:
    """A planned switchover under the pooled writer: Patroni hands the leadership to the
    synchronous standby (or, with no synchronous replication, the streaming replica least
    behind). t = 0 is the request; the old leader must rejoin as a streaming replica."""
    topo = topology(settings)
    if not settings.patroni:
        raise UsageError(
            f"stack {settings.stack} does not run Patroni; its switchover drill is "
            "`elizadb drill switchover` without Patroni (the kit's own switchover)"
        )
    _wait_whole(client, topo, settings.synchronous, timeout_s)
    found = patroni.members(client, topo)
    leader = next(m for m in found if m.leads)
    old = patroni.node_of(topo, leader.name)
    new = patroni.node_of(topo, switchover_candidate(found).name)
    etcd_leader_host = etcd_leader_host_of(client, topo)
    writer = _pooled_writer(outputs, root_cert)
    writer.start()
    time.sleep(write_before_s)
    t0 = time.monotonic()
    events: dict[str, float] = {}
    try:
        steps = patroni.switchover(client, topo, new, progress)
        events["new_leader"] = steps["leader"]
        first = _wait_ack(writer, lambda a: a == topo.address(new), t0, timeout_s)
        events["first_write_after"] = first - t0
        _wait_streaming(client, topo, old, timeout_s)
        events["rejoined"] = time.monotonic() - t0
        time.sleep(write_after_s)
    finally:
        writer.stop()
    return _result(
        SWITCHOVER,
        writer.run,
        topo.node_host(old),
        (old, new),
        topo,
        writer,
        t0,
        events,
        (outputs, root_cert),
        {},
        etcd_leader_host,
    )


def etcd_leader_host_of(client: engine.Target, topo: Topology) -> str:
    """The host of the etcd member that leads etcd ("" when none says it does)."""
    leader = patroni.etcd_leader(client, topo)
    return next((topo.etcd_host(m) for m in topo.etcd if m.name == leader), "")


def _pooled_writer(outputs: dict[str, Any], root_cert: str) -> Writer:
    """A writer through the pooler for a new run, its table ready; each row records the
    address of the server that acknowledged it."""
    prepare(outputs, root_cert)
    return Writer(
        with_root_cert(outputs["connections"]["agentPooler"], root_cert),
        uuid.uuid4().hex[:12],
        statement=INSERT_BY_ADDRESS,
    )


def switchover_candidate(found: list[patroni.Member]) -> patroni.Member:
    """The synchronous standby, the one node Patroni accepts in synchronous mode (and the one
    that holds every acknowledged commit); without one, the streaming replica least behind."""
    sync = [m for m in found if m.role == "Sync Standby" and m.state == "streaming"]
    if sync:
        return sync[0]
    replicas = [m for m in found if not m.leads and m.state == "streaming"]
    if not replicas:
        raise DeployError("no streaming replica to switch over to; `elizadb status` shows why")
    return min(replicas, key=lambda m: (m.lag_mb or 0.0, m.name))


def _result(
    kind: str,
    run: str,
    host: str,
    leaders: tuple[Node, Node],
    topo: Topology,
    writer: Writer,
    t0: float,
    events: dict[str, float],
    stack: tuple[dict[str, Any], str],
    isolated: dict[int, float],
    etcd_leader_host: str,
) -> HostDrillResult:
    """The measures of a drill from its pooled writer's acknowledgements (t0: the fault or the
    request) and the isolated writer's (`isolated`: seq to seconds from t0); `leaders` the old
    and the new, `stack` the outputs and the CA file to count the rows with."""
    old, new = leaders
    outputs, root_cert = stack
    old_address = topo.address(old)
    isolated_at = sorted(round(t, 4) for t in isolated.values())
    acks = [(round(a.at - t0, 4), a.node, a.timeline, a.seq) for a in writer.acks]
    after = [t for t, node, _, _ in acks if node != old_address and t >= 0]
    first_other = after[0] if after else float("inf")
    # The write unavailability: the old leader's last acknowledgement before another node's
    # first (in a switchover the old leader still acknowledges after the request, until it
    # demotes itself).
    before = [t for t, node, _, _ in acks if node == old_address and t < first_other]
    rto = (after[0] - before[-1]) if before and after else float("nan")
    present = present_seqs(outputs, root_cert, run)
    missing = len(({a.seq for a in writer.acks} | set(isolated)) - present)
    short = {topo.address(n): n.short for n in topo.nodes}
    return HostDrillResult(
        kind=kind,
        run=run,
        host=host,
        old_leader=old.short,
        new_leader=new.short,
        acked=len(writer.acks),
        isolated_acked=len(isolated_at),
        missing=missing,
        overlapping=sum(1 for t in isolated_at if t >= first_other),
        rto_s=round(rto, 3),
        events={k: round(v, 3) for k, v in events.items()},
        acks=[(t, short.get(node, node), tl, seq) for t, node, tl, seq in acks],
        isolated_acks=isolated_at,
        errors=writer.errors,
        etcd_leader_host=etcd_leader_host,
    )


def _wait_whole(
    engines: engine.Target, topo: Topology, synchronous: bool, timeout_s: float
) -> None:
    """Before the fault: every member streaming on the leader's timeline, a synchronous standby
    where the stack asks for one, and every etcd member healthy. Right after a switchover the
    old leader still catches up, and in synchronous mode Patroni then may promote no other
    node; right after a partition heals, the etcd leader's stream to the member that was cut
    off can stay silent for a while (measured: 25 s), and a fault elsewhere in that moment
    leaves etcd without a quorum. A fault in such a moment tests that moment, not the loss of
    a host."""

    def whole() -> bool:
        try:
            found = patroni.members(engines, topo)
        except DeployError:
            return False
        return members_whole(found, synchronous) and all(
            e.healthy for e in patroni.etcd_health(engines, topo)
        )

    engine.wait_until(
        "every member streaming and every etcd member healthy before the fault",
        whole,
        timeout_s,
        1.0,
    )


def members_whole(found: list[patroni.Member], synchronous: bool) -> bool:
    """One running leader, every other member streaming on its timeline, and a synchronous
    standby where the stack asks for one."""
    leaders = [m for m in found if m.leads and m.state == "running"]
    others = [m for m in found if not m.leads]
    return (
        len(leaders) == 1
        and all(m.state == "streaming" for m in others)
        and len({m.timeline for m in found}) == 1
        and (not synchronous or any(m.role == "Sync Standby" for m in others))
    )


def _wait_new_leader(engines: engine.Engines, topo: Topology, old: Node, timeout_s: float) -> Node:
    found: list[Node] = []

    def elected() -> bool:
        try:
            now = patroni.leader(engines, topo, avoid=old.name)
        except DeployError:
            return False  # no node answers patronictl for a moment
        if now is not None and now.name != member_name(old):
            found.append(patroni.node_of(topo, now.name))
            return True
        return False

    engine.wait_until("a new leader", elected, timeout_s, interval_s=0.2)
    return found[-1]


def _wait_ack(writer: Writer, by: Callable[[str], bool], t0: float, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        after = [a.at for a in writer.acks[-50:] if a.at >= t0 and by(a.node)]
        if after:
            return after[0]
        time.sleep(0.02)
    raise DeployError(f"no write was acknowledged by another node within {timeout_s:.0f}s")


def _wait_streaming(engines: engine.Target, topo: Topology, node: Node, timeout_s: float) -> None:
    name = member_name(node)

    def streaming() -> bool:
        try:
            return any(
                m.name == name and m.state == "streaming"
                for m in patroni.members(engines, topo, avoid=node.name)
            )
        except DeployError:
            return False

    engine.wait_until(f"{node.name} streaming again", streaming, timeout_s * 1.5, interval_s=0.5)
