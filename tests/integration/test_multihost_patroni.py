"""A Patroni stack placed on three Docker hosts (tests/integration/hosts.py), deployed by the
local deploy through each host's own engine: one node and one etcd member per host, the pooler
and the router on the third. Peers meet at the hosts' addresses and published ports only.

What is proven: the deploy puts every part on its host and the cluster forms (one leader, one
synchronous standby, one replica, three healthy etcd members); the verify suite passes from the
stack's outputs; when the leader's host dies (every process on it killed, its etcd member
included), a node on another host takes over and the writes through the pooler follow, with no
acknowledged row lost; when the host boots again its node rejoins as a streaming replica; the
partition drill (`elizadb drill partition`) on the leader's host sees the isolated side stop
taking writes before the other side starts, loses nothing, and the old leader rejoins; when a
replica's host dies with its etcd member the leader keeps its lease and its timeline and the
pooled writes go on (etcd: 2 of 3 healthy), and the node and member come back with the host;
and when every host is killed and started again the cluster comes back by itself, whole, with
every acknowledged row, passing the verify suite and taking pooled writes.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from elizadb import engine
from elizadb.drills import report
from elizadb.drills.hosts import etcd_leader_host_of, run_host_drill, run_switchover_drill
from elizadb.errors import DeployError, EngineError
from elizadb.local import deploy, patroni
from elizadb.local.apply import REMOTE_IMAGE, Applier
from elizadb.local.capture import declare
from elizadb.local.hosts import stack_engines
from elizadb.local.placement_change import PlacementChangeError
from elizadb.local.state import StateFile
from elizadb.ops import restore_into, restore_patroni
from elizadb.ops.backup import check_archiving, dump, read_catalog, take_backup
from elizadb.ops.restore import RecoveryTarget
from infra.components.ha import member_name
from infra.render.patroni import Timings
from infra.topology import topology
from tests.integration.ha_probe import (
    Writer,
    setup_probe_table,
    stored,
    two_batches_around_a_point,
    wait_for,
)
from tests.integration.hosts import HostCluster
from tests.integration.needs import require_engine
from tests.integration.stacks import DeployedStack, deployed_stack, progress, stack_settings
from verify.ca_file import private_ca_file
from verify.suite import load_outputs, run_checks

pytestmark = [pytest.mark.integration, pytest.mark.multihost]

STACK = "itmh"
PORT = 52100
COPY, COPY_PORT = "itmhcp", 52700  # a stack restored from this one
HOSTS = ("a", "b", "c")


def _values(cluster: HostCluster) -> dict[str, object]:
    return {
        "environment": "production",  # three etcd members, synchronous replication
        "ha": {"engine": "patroni"},
        "hosts": {h: {"url": cluster[h].docker_host, "address": cluster[h].address} for h in HOSTS},
        "placement": {"pooler": "c"},
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[HostCluster]:
    with HostCluster("mhpat", list(HOSTS), share_images=True) as hosts:
        yield hosts


@pytest.fixture(scope="module")
def stack(
    cluster: HostCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DeployedStack]:
    # The hosts see the machine's images (share_images): build the stack image there once.
    settings = stack_settings(STACK, PORT, **_values(cluster))
    folder = tmp_path_factory.mktemp("mh")
    images = declare(settings, StateFile(STACK, folder / "image-state")).of_type(REMOTE_IMAGE)
    assert len({i.inputs["name"] for i in images}) == 1  # one tag, declared on every host
    Applier(require_engine(), STACK, progress).ensure_image(images[0])
    with deployed_stack(folder, STACK, PORT, **_values(cluster)) as handle:
        yield handle


def _members(stack: DeployedStack) -> list[patroni.Member]:
    return patroni.members(stack.client, topology(stack.settings))


def _leader(stack: DeployedStack) -> patroni.Member:
    leaders = [m for m in _members(stack) if m.leads and m.state == "running"]
    assert len(leaders) == 1, _members(stack)
    return leaders[0]


def _lead_away_from_the_pooler(stack: DeployedStack) -> patroni.Member:
    """The leader, moved off the pooler's host when it is there (the pooler's host must live
    for the pooled writer to go on): to the synchronous standby, the one node Patroni hands
    the leadership to in synchronous mode."""
    topo = topology(stack.settings)
    now = _leader(stack)
    if topo.node_host(patroni.node_of(topo, now.name)) == topo.pooler_host:
        sync = next(m for m in _members(stack) if m.role == "Sync Standby")
        patroni.switchover(stack.client, topo, patroni.node_of(topo, sync.name), progress)
        now = _leader(stack)
    _wait_whole(stack)
    return now


def _wait_whole(stack: DeployedStack, timeout_s: float = 90) -> float:
    """One leader, a synchronous standby and a replica, all streaming on one timeline: before a
    fault, as after a switchover the old leader needs a moment to follow (until then the only
    node Patroni may promote in synchronous mode is the one just promoted). The seconds it took."""

    def whole() -> bool:
        try:
            found = _members(stack)
        except (DeployError, EngineError):  # no node answers patronictl yet (hosts booting)
            return False
        return (
            sorted((m.role, m.state) for m in found)
            == [("Leader", "running"), ("Replica", "streaming"), ("Sync Standby", "streaming")]
            and len({m.timeline for m in found}) == 1
        )

    return wait_for(
        "one leader, one synchronous standby and one replica, all running or streaming",
        whole,
        timeout_s=timeout_s,
        explain=lambda: str(_members(stack)),
    )


def _longest_gap(acked_at: dict[int, float], since: float) -> float:
    """The longest time between consecutive acknowledgements from `since` (wall clock) on,
    counting from `since` itself."""
    times = sorted(t for t in list(acked_at.values()) if t >= since)
    return max((b - a for a, b in zip([since, *times], times, strict=False)), default=0.0)


def _move_etcd_leader(stack: DeployedStack, host: str) -> None:
    """Hand etcd's leadership to the member on `host` (asked of the current etcd leader)."""
    topo = topology(stack.settings)
    target = next(m.name for m in topo.etcd if topo.etcd_host(m) == host)
    leader = patroni.etcd_leader(stack.client, topo)
    assert leader is not None, "no etcd member leads"
    if leader != target:
        ids = patroni.etcd_status(stack.client, target)
        assert ids is not None, f"{target} does not answer"
        moved = patroni.etcdctl(stack.client, leader, "move-leader", format(ids[0], "x"))
        assert moved.ok, moved.tail()
    assert patroni.etcd_leader(stack.client, topo) == target


def _node_address(stack: DeployedStack, member: str) -> str:
    """The node's address on its host's stack network: what inet_server_addr() reports."""
    topo = topology(stack.settings)
    return topo.address(patroni.node_of(topo, member))


def test_every_part_runs_on_its_host_and_the_cluster_forms(
    cluster: HostCluster, stack: DeployedStack
) -> None:
    expected = {
        "a": {"primary", "etcd-1"},
        "b": {"replica-1", "etcd-2"},
        "c": {
            *("replica-2", "etcd-3", "router", "pgbouncer", "ready", "bootstrap", "config"),
            "backup-agent",
        },
    }
    for host, parts in expected.items():
        with closing(cluster[host].client()) as client:
            names = {
                c.name.removeprefix(f"elizadb-{STACK}-")
                for c in client.containers.list(all=True, filters={"label": "elizadb.stack"})
            }
        assert names == parts, (host, names)
    # Patroni names its synchronous standby within a few loops of the cluster's start.
    _wait_whole(stack)
    health = patroni.etcd_health(stack.client, topology(stack.settings))
    assert [h.healthy for h in health] == [True, True, True], health


def test_up_refuses_a_placement_that_moves_parts_away_from_their_data(
    cluster: HostCluster, stack: DeployedStack
) -> None:
    """Two replicas and two etcd members swap hosts in the config: each would start empty on
    its new host beside the running one of the same name. Refused before anything is touched."""
    placed = stack.settings
    swapped = {"pooler": "c", "replica-1": "c", "replica-2": "b", "etcd-2": "c", "etcd-3": "b"}
    before = stack.container_identities()
    with pytest.raises(PlacementChangeError) as caught:
        stack.up(stack_settings(STACK, PORT, **{**_values(cluster), "placement": swapped}))
    stack.settings = placed  # the handle took the refused settings
    message = str(caught.value)
    assert caught.value.exit_code == 2
    for part, old, new in [("replica-1", "b", "c"), ("etcd-3", "c", "b")]:
        assert f"{part}'s data (elizadb-{STACK}-{part}-data) is on host {old}" in message
        assert f"elizadb:placement.{part} now says {new}" in message
    assert "primary" not in message and message.endswith("Nothing was changed.")
    assert stack.container_identities() == before


def test_the_verify_suite_passes_from_the_outputs(stack: DeployedStack) -> None:
    results = run_checks(load_outputs(stack.outputs))
    failed = [f"{r.id}: {r.reason}" for r in results if r.status not in ("pass", "warn")]
    assert not failed, failed


def test_backups_are_taken_across_hosts_and_follow_the_leader(
    stack: DeployedStack, tmp_path: Path
) -> None:
    """The backup agent on the pooler's host is pgBackRest's repository host: the leader on
    another host archives its WAL there, a full backup is taken of it through its pgBackRest
    server; after a switchover to a node on a third host an incremental backup builds on that
    full one, from the new leader (its timeline), and the archive goes on. A pg_dump is taken
    from the new leader through its host's engine and holds the rows written through the
    pooler."""
    _wait_whole(stack)
    topo = topology(stack.settings)
    host_of = {m.name: topo.node_host(patroni.node_of(topo, m.name)) for m in _members(stack)}
    first = _lead_away_from_the_pooler(stack)
    check_archiving(stack.client, stack.settings)
    started = time.monotonic()
    full, _ = take_backup(stack.client, stack.settings, "full")
    full_s = time.monotonic() - started
    sync = next(m for m in _members(stack) if m.role == "Sync Standby")
    patroni.switchover(stack.client, topo, patroni.node_of(topo, sync.name), progress)
    _wait_whole(stack)
    second = _leader(stack)
    assert host_of[second.name] != host_of[first.name]
    setup_probe_table(stack.connections["owner"])
    with Writer(stack.connections["agentPooler"]) as writer:
        wait_for("a few pooled writes", lambda: len(writer.acks) >= 20)
    started = time.monotonic()
    incr, _ = take_backup(stack.client, stack.settings, "incr")
    incr_s = time.monotonic() - started
    assert (incr.type, incr.prior) == ("incr", full.label)
    assert incr.timeline == second.timeline > full.timeline == first.timeline
    check_archiving(stack.client, stack.settings)
    catalog = read_catalog(stack.client, stack.settings)
    assert [b.label for b in catalog.backups][-2:] == [full.label, incr.label]
    assert catalog.archive_max is not None and catalog.archive_max >= incr.wal_stop
    exported = dump(stack.client, stack.settings, tmp_path / "eliza.dump")
    assert exported.node == patroni.node_of(topo, second.name).name
    # Read back by the stack's own pg_restore (the machine's may be older than the dump).
    leader = engine.on(stack.client, exported.node).containers.get(exported.node)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(exported.path, arcname="eliza.dump")
    leader.put_archive("/tmp", archive.getvalue())
    listed = engine.exec_in(
        stack.client,
        exported.node,
        ["pg_restore", "--data-only", "--table=ha_probe", "--file=-", "/tmp/eliza.dump"],
    )
    assert listed.ok, listed.tail()
    data = listed.stdout
    rows = data.split("COPY public.ha_probe (seq) FROM stdin;\n", 1)[1].split("\\.\n", 1)[0]
    assert {int(seq) for seq in rows.split()} >= set(writer.acks)
    progress(
        f"backups across hosts: full of {first.name} on {host_of[first.name]} in {full_s:.1f} s, "
        f"incremental of {second.name} on {host_of[second.name]} in {incr_s:.1f} s; pg_dump "
        f"of {exported.node} {exported.bytes} bytes in {exported.seconds:.1f} s"
    )


def test_a_restore_in_place_across_hosts_reaches_the_point_in_time(stack: DeployedStack) -> None:
    """The restore job runs on the leader's host and reads the repository through the agent's
    server on the pooler's host; Patroni bootstraps the cluster from it there, and the nodes on
    the other hosts clone the new leader."""
    _wait_whole(stack)
    owner = stack.connections["owner"]
    setup_probe_table(owner)
    take_backup(stack.client, stack.settings, "incr")
    point = two_batches_around_a_point(owner)
    report = restore_patroni.restore_in_place(
        stack.settings, RecoveryTarget(point), progress, stack.state_dir
    )
    _wait_whole(stack)
    assert stored(owner) == set(range(1, 51))
    assert report.new_backup, "a full backup of the new timeline"
    progress(
        f"restore across hosts of {report.node}: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
    )


def test_a_restore_into_a_new_stack_on_the_hosts_carries_the_repository_across_engines(
    cluster: HostCluster, stack: DeployedStack, tmp_path: Path
) -> None:
    """Into a new Patroni stack on the same three hosts whose pooler, and so its repository, is
    on another host than this stack's: the repository is carried from one host's engine to the
    other's, Patroni bootstraps the new cluster from the restore job on its first node's host
    (reading through the new agent's server), and the nodes on the other hosts clone it. The
    first batch is there and none of the second, the verify suite passes from its outputs."""
    _wait_whole(stack)
    owner = stack.connections["owner"]
    setup_probe_table(owner)
    take_backup(stack.client, stack.settings, "incr")
    point = two_batches_around_a_point(owner)
    network = {
        "etcdClientPortBase": COPY_PORT + 30,
        "etcdPeerPortBase": COPY_PORT + 40,
        "backupPortBase": COPY_PORT + 50,
    }
    settings = stack_settings(
        COPY, COPY_PORT, **{**_values(cluster), "placement": {"pooler": "b"}, "network": network}
    )
    topo, source_topo = topology(settings), topology(stack.settings)
    assert topo.pooler_host != source_topo.pooler_host
    copy = DeployedStack(settings, {}, stack_engines(settings), tmp_path)
    copy.down(delete_volumes=True)  # a leftover of a killed run
    try:
        try:
            report = restore_into.restore_into_stack(
                stack.settings, settings, RecoveryTarget(point), progress, tmp_path
            )
        except DeployError as e:  # what the new stack's nodes said, before they are removed
            e.add_note(f"the new stack's containers:\n{copy.log_tails(40)}")
            raise
        copy.up()  # no changes: reads the new stack's outputs
        _wait_whole(copy)
        assert stored(copy.connections["owner"]) == set(range(1, 51))
        assert report.new_backup, "a full backup of the new stack's timeline"
        results = run_checks(load_outputs(copy.outputs))
        failed = [f"{r.id}: {r.reason}" for r in results if r.status not in ("pass", "warn")]
        assert not failed, failed
        assert stored(owner) == set(range(1, 101))
        progress(
            f"restore into a new stack across hosts ({source_topo.pooler_host} to "
            f"{topo.pooler_host}): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
        )
    finally:
        copy.down(delete_volumes=True)


def test_writes_follow_the_loss_of_the_leaders_host_and_it_rejoins_when_it_boots(
    cluster: HostCluster, stack: DeployedStack, tmp_path: Path
) -> None:
    topo = topology(stack.settings)
    old = _lead_away_from_the_pooler(stack)
    lost_host = topo.node_host(patroni.node_of(topo, old.name))
    setup_probe_table(stack.connections["owner"])
    survivors = [n.name for n in topo.nodes if topo.node_host(n) != lost_host]
    with Writer(stack.connections["agentPooler"]) as writer:
        wait_for("first write", lambda: bool(writer.acks))
        cluster.kill(lost_host)
        killed_at = time.monotonic()
        try:
            before = max(writer.acks)
            wait_for(
                "a write acknowledged by another node",
                lambda: any(
                    a != _node_address(stack, old.name)
                    for s, a in list(writer.acks.items())
                    if s > before
                ),
                timeout_s=120,
                explain=lambda: "\n".join(
                    [str(_members(stack))]
                    + [engine.logs(stack.client, n, 25) for n in survivors]
                    + [engine.logs(stack.client, topo.router_name, 25)]
                ),
            )
        except BaseException:
            cluster.start(lost_host)  # the stack's teardown needs every host
            raise
        progress(
            f"host {lost_host} killed: writes resumed {time.monotonic() - killed_at:.1f} s later"
        )
    new = _leader(stack)
    assert new.name != old.name
    lost = set(writer.acks) - stored(stack.connections["owner"])
    assert not lost, sorted(lost)[:20]
    # `elizadb status` tells the lost host's node from the others, and the new leader's role.
    rows = {r.name: r for r in deploy.status(stack.settings)}
    old_node = patroni.node_of(topo, old.name)
    assert rows[old_node.name].state == engine.UNREACHABLE
    assert rows[patroni.node_of(topo, new.name).name].in_recovery is False
    cluster.start(lost_host)
    wait_for(
        "the old leader streaming as a replica",
        lambda: any(m.name == old.name and m.state == "streaming" for m in _members(stack)),
        timeout_s=180,
        explain=lambda: f"{_members(stack)}\n{engine.logs(stack.client, old_node.name, 80)}",
    )
    health = patroni.etcd_health(stack.client, topo)
    wait_for(
        "every etcd member healthy again",
        lambda: all(h.healthy for h in patroni.etcd_health(stack.client, topo)),
        timeout_s=60,
        explain=lambda: str(health),
    )


def test_the_switchover_drill_hands_over_to_the_synchronous_standby_and_loses_nothing(
    stack: DeployedStack,
) -> None:
    """`elizadb drill switchover`: Patroni hands the leadership to the synchronous standby while
    the pooled writer writes; the drill sees the writes move to it, nothing acknowledged lost,
    and the old leader streaming again."""
    _wait_whole(stack)
    topo = topology(stack.settings)
    sync = next(m for m in _members(stack) if m.role == "Sync Standby")
    old = _leader(stack)
    # etcd led from the standby's host: once that node leads, its Patroni callback must hand
    # etcd's leadership to another host (image/patroni-callback.py).
    new_host = topo.node_host(patroni.node_of(topo, sync.name))
    _move_etcd_leader(stack, new_host)
    with private_ca_file(stack.outputs["caCert"]) as ca:
        result = run_switchover_drill(
            stack.client,
            stack.settings,
            stack.outputs,
            ca,
            progress,
            write_before_s=1.0,
            write_after_s=1.0,
        )
    progress(report.render_host_table([result]))
    assert result.old_leader == patroni.node_of(topo, old.name).short
    assert result.new_leader == patroni.node_of(topo, sync.name).short
    assert result.missing == 0
    served = {node for _, node, _, _ in result.acks}
    assert {result.old_leader, result.new_leader} <= served, served
    assert 0 < result.rto_s < result.events["first_write_after"] + 1, result.as_dict()
    assert result.events["rejoined"] >= result.events["new_leader"]
    assert _leader(stack).name == sync.name
    assert result.etcd_leader_host == new_host
    wait_for(
        f"etcd led from another host than the new leader's ({new_host})",
        lambda: etcd_leader_host_of(stack.client, topo) not in ("", new_host),
        timeout_s=30,
        explain=lambda: f"etcd leader on host {etcd_leader_host_of(stack.client, topo)!r}",
    )


def test_a_replicas_host_lost_with_its_etcd_member_leaves_the_leader_writing(
    cluster: HostCluster, stack: DeployedStack
) -> None:
    """The host that holds neither the leader nor the pooler dies with its node and its etcd
    member: two etcd members keep the quorum, so the leader keeps its lease (same member, same
    timeline) past Patroni's ttl, and the pooled writes go on. In synchronous mode, when the
    lost node was the synchronous standby, commits wait until Patroni names the other replica;
    the longest gap between acknowledgements is reported, not asserted."""
    topo = topology(stack.settings)
    _lead_away_from_the_pooler(stack)
    leader = _leader(stack)  # with its timeline once the cluster is whole
    leader_host = topo.node_host(patroni.node_of(topo, leader.name))
    lost_host = next(h for h in HOSTS if h not in (leader_host, topo.pooler_host))
    lost_node = next(n for n in topo.nodes if topo.node_host(n) == lost_host)
    lost_member = next(m for m in topo.etcd if topo.etcd_host(m) == lost_host)
    was_sync = any(
        m.name == member_name(lost_node) and m.role == "Sync Standby" for m in _members(stack)
    )
    setup_probe_table(stack.connections["owner"])
    ttl = Timings().ttl
    with Writer(stack.connections["agentPooler"]) as writer:
        wait_for("first write", lambda: bool(writer.acks))
        cluster.kill(lost_host)
        killed_at = time.time()
        try:
            # Past the lease: a leader that could not renew it would have lost it by now.
            wait_for(
                f"a write acknowledged more than {ttl + 5} s after the loss",
                lambda: any(t > killed_at + ttl + 5 for t in list(writer.acked_at.values())),
                timeout_s=ttl + 90,
                explain=lambda: str(_members(stack)),
            )
            health = {h.name: h.healthy for h in patroni.etcd_health(stack.client, topo)}
            now = _leader(stack)
        except BaseException:
            cluster.start(lost_host)  # the stack's teardown needs every host
            raise
        gap = _longest_gap(writer.acked_at, killed_at)
        after = sum(1 for t in list(writer.acked_at.values()) if t >= killed_at)
    progress(
        f"host {lost_host} ({lost_node.short}, {'the' if was_sync else 'not the'} synchronous "
        f"standby) killed: {after} writes acknowledged after it, longest gap {gap:.2f} s"
    )
    assert (now.name, now.timeline) == (leader.name, leader.timeline)
    assert health == {m.name: m.name != lost_member.name for m in topo.etcd}, health
    lost = set(writer.acks) - stored(stack.connections["owner"])
    assert not lost, sorted(lost)[:20]
    cluster.start(lost_host)
    _wait_whole(stack, timeout_s=180)  # its node streams again, on the leader's timeline
    assert (_leader(stack).name, _leader(stack).timeline) == (leader.name, leader.timeline)
    wait_for(
        "every etcd member healthy again",
        lambda: all(h.healthy for h in patroni.etcd_health(stack.client, topo)),
        timeout_s=60,
        explain=lambda: str(patroni.etcd_health(stack.client, topo)),
    )


def test_the_partition_drill_sees_one_writable_side_at_a_time_and_loses_nothing(
    stack: DeployedStack, tmp_path: Path
) -> None:
    """`elizadb drill partition` on the leader's host: its parts are cut off the network while
    a writer in the leader's container and one through the pooler keep writing. The drill's
    own judgement is checked: the isolated side wrote before the cut and never after the other
    side's first write, nothing acknowledged was lost, the old leader rejoined."""
    old = _lead_away_from_the_pooler(stack)
    with private_ca_file(stack.outputs["caCert"]) as ca:
        result = run_host_drill(
            stack.client,  # type: ignore[arg-type]  # an Engines for a stack with hosts
            stack.settings,
            stack.outputs,
            ca,
            progress,
            kind="partition",
            hold_s=25,
        )
    progress(report.render_host_table([result]))
    assert result.old_leader == patroni.node_of(topology(stack.settings), old.name).short
    assert result.new_leader != result.old_leader
    assert result.isolated_acked > 0 and result.acked > 0, result.as_dict()
    assert result.overlapping == 0, result.isolated_acks
    assert result.missing == 0
    assert result.events["rejoined"] > result.events["restored"]
    svg = report.render_svg([result], window=(-2, 35), marks=("new_leader", "restored"))
    drawn = sum(1 for t, *_ in result.acks if -2 <= t <= 35)
    assert svg.count("<line") >= drawn > 0


def test_every_host_killed_and_started_again_brings_the_cluster_back_by_itself(
    cluster: HostCluster, stack: DeployedStack
) -> None:
    """Every host crashes while the pooled writer writes (a power cut of the whole site), then
    all boot again: each engine restarts the stack's containers, etcd finds its quorum, Patroni
    elects a leader, and with no eliza-db command the cluster is whole again, has every
    acknowledged row, passes the verify suite and takes new pooled writes."""
    _wait_whole(stack)
    setup_probe_table(stack.connections["owner"])
    with Writer(stack.connections["agentPooler"]) as writer:
        wait_for("a few writes", lambda: len(writer.acks) >= 20)
        for host in HOSTS:
            cluster.kill(host)
        acked_before = set(writer.acks)
        started = time.time()
        for host in HOSTS:
            cluster.start(host)
        wait_for(
            "a pooled write acknowledged after the restart",
            lambda: any(t > started for t in list(writer.acked_at.values())),
            timeout_s=180,
            explain=lambda: engine.logs(stack.client, topology(stack.settings).router_name, 25),
        )
        first_write = min(t for t in list(writer.acked_at.values()) if t > started) - started
    # etcd renews every lease when it starts, so the members' keys of before the crash outlive
    # it: until a ttl has passed, patronictl may list members as they were, not as they are.
    time.sleep(max(0.0, started + Timings().ttl - time.time()))
    _wait_whole(stack, timeout_s=180)
    whole = time.time() - started
    progress(
        f"every host killed and started: whole {whole:.1f} s after the first start, "
        f"first pooled write {first_write:.1f} s after it, leader {_leader(stack).name}"
    )
    lost = set(writer.acks) - stored(stack.connections["owner"])
    assert not lost, sorted(lost)[:20]
    assert len(acked_before) >= 20  # rows acknowledged before the crash, among those kept
    results = run_checks(load_outputs(stack.outputs))
    failed = [f"{r.id}: {r.reason}" for r in results if r.status not in ("pass", "warn")]
    assert not failed, failed
