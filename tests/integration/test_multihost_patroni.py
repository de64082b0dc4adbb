"""A Patroni stack placed on three Docker hosts (tests/integration/hosts.py), deployed by the
local deploy through each host's own engine: one node and one etcd member per host, the pooler
and the router on the third. Peers meet at the hosts' addresses and published ports only.

What is proven: the deploy puts every part on its host and the cluster forms (one leader, one
synchronous standby, one replica, three healthy etcd members); the verify suite passes from the
stack's outputs; when the leader's host dies (every process on it killed, its etcd member
included), a node on another host takes over and the writes through the pooler follow, with no
acknowledged row lost; when the host boots again its node rejoins as a streaming replica.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from elizadb.local.apply import REMOTE_IMAGE, Applier
from elizadb.local.capture import declare
from elizadb.local.state import StateFile
from elizadb.ops import patroni
from infra.topology import topology
from tests.integration.ha_probe import (
    Writer,
    setup_probe_table,
    start_node_writer,
    stop_node_writer,
    stored,
    wait_for,
)
from tests.integration.hosts import HostCluster
from tests.integration.needs import require_engine
from tests.integration.stacks import DeployedStack, deployed_stack, progress, stack_settings
from verify.suite import load_outputs, run_checks

pytestmark = [pytest.mark.integration, pytest.mark.multihost]

STACK = "itmh"
PORT = 52100
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
    Applier(require_engine(), STACK, progress)._ensure_image(images[0])
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
    return now


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
        "c": {"replica-2", "etcd-3", "router", "pgbouncer", "ready", "bootstrap"},
    }
    for host, parts in expected.items():
        with closing(cluster[host].client()) as client:
            names = {
                c.name.removeprefix(f"elizadb-{STACK}-")
                for c in client.containers.list(all=True, filters={"label": "elizadb.stack"})
            }
        assert names == parts, (host, names)
    # Patroni names its synchronous standby within a few loops of the cluster's start.
    wait_for(
        "one leader, one synchronous standby and one replica, all running or streaming",
        lambda: (
            sorted((m.role, m.state) for m in _members(stack))
            == [("Leader", "running"), ("Replica", "streaming"), ("Sync Standby", "streaming")]
        ),
        timeout_s=60,
        explain=lambda: str(_members(stack)),
    )
    health = patroni.etcd_health(stack.client, topology(stack.settings))
    assert [h.healthy for h in health] == [True, True, True], health


def test_the_verify_suite_passes_from_the_outputs(stack: DeployedStack) -> None:
    results = run_checks(load_outputs(stack.outputs))
    failed = [f"{r.id}: {r.reason}" for r in results if r.status not in ("pass", "warn")]
    assert not failed, failed


def test_writes_follow_the_loss_of_the_leaders_host_and_it_rejoins_when_it_boots(
    cluster: HostCluster, stack: DeployedStack, tmp_path: Path
) -> None:
    topo = topology(stack.settings)
    old = _lead_away_from_the_pooler(stack)
    lost_host = topo.node_host(patroni.node_of(topo, old.name))
    setup_probe_table(stack.connections["owner"])
    with Writer(stack.connections["agentPooler"]) as writer:
        wait_for("first write", lambda: bool(writer.acks))
        cluster.kill(lost_host)
        killed_at = time.monotonic()
        before = max(writer.acks)
        wait_for(
            "a write acknowledged by another node",
            lambda: any(
                a != _node_address(stack, old.name)
                for s, a in list(writer.acks.items())
                if s > before
            ),
            timeout_s=120,
        )
        progress(
            f"host {lost_host} killed: writes resumed {time.monotonic() - killed_at:.1f} s later"
        )
    new = _leader(stack)
    assert new.name != old.name
    lost = set(writer.acks) - stored(stack.connections["owner"])
    assert not lost, sorted(lost)[:20]
    cluster.start(lost_host)
    wait_for(
        "the old leader streaming as a replica",
        lambda: any(m.name == old.name and m.state == "streaming" for m in _members(stack)),
        timeout_s=180,
        explain=lambda: str(_members(stack)),
    )
    health = patroni.etcd_health(stack.client, topo)
    wait_for(
        "every etcd member healthy again",
        lambda: all(h.healthy for h in patroni.etcd_health(stack.client, topo)),
        timeout_s=60,
        explain=lambda: str(health),
    )


def test_a_partitioned_leader_stops_taking_writes_before_another_node_takes_over(
    cluster: HostCluster, stack: DeployedStack
) -> None:
    """The leader's host is cut off while a client on its side (in its container) and one on
    the others' side (through the pooler) keep writing: the acknowledgements of the two sides
    never overlap in time, no acknowledged row is lost, and after healing the old leader
    rejoins as a replica."""
    topo = topology(stack.settings)
    old = _lead_away_from_the_pooler(stack)
    old_node = patroni.node_of(topo, old.name)
    cut_host = topo.node_host(old_node)
    owner = stack.connections["owner"]
    setup_probe_table(owner)
    start_node_writer(stack.client, old_node.name, stack.settings.database, first=1_000_000)
    with Writer(stack.connections["agentPooler"]) as writer:
        wait_for("first pooled write", lambda: bool(writer.acks))
        cluster.partition(cut_host)
        cut_at = time.time()
        try:
            before = max(writer.acks)
            wait_for(
                "a pooled write acknowledged by another node",
                lambda: any(
                    a != topo.address(old_node) for s, a in list(writer.acks.items()) if s > before
                ),
                timeout_s=120,
            )
            # Let the isolated side run on for a lease more: it must not take a write.
            time.sleep(25)
        finally:
            isolated = stop_node_writer(stack.client, old_node.name)
            cluster.heal(cut_host)
    new_side = {
        s: at for s, at in writer.acked_at.items() if writer.acks[s] != topo.address(old_node)
    }
    assert isolated and new_side
    last_isolated, first_new = max(isolated.values()), min(new_side.values())
    progress(
        f"partition of host {cut_host}: its side's last acknowledged write "
        f"{last_isolated - cut_at:+.1f} s, the other side's first write "
        f"{first_new - cut_at:+.1f} s after the cut"
    )
    assert last_isolated < first_new, "two nodes acknowledged writes at the same time"
    wait_for(
        "the old leader streaming as a replica",
        lambda: any(m.name == old.name and m.state == "streaming" for m in _members(stack)),
        timeout_s=180,
        explain=lambda: str(_members(stack)),
    )
    lost = (set(writer.acks) | set(isolated)) - stored(owner)
    assert not lost, sorted(lost)[:20]
