"""The nodes of a stack, derived from its settings: names, roles, ports and slots.

Pure: the Pulumi program, the renderers, the local deploy and `verify` all name things from here.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from infra.placement import LOCAL_HOST, POOLER, etcd_part
from infra.settings import MAX_REPLICAS, StackSettings

PG_PORT = 5432
POOLER_PORT = 6432
# Inside a Patroni node and an etcd member (infra/render/patroni.py, etcd.py say the same).
API_PORT = 8008
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
# pgBackRest's TLS server, in a Patroni node and in the backup agent (stacks on several hosts).
BACKUP_SERVER_PORT = 8432
# The data directory's parent is the volume's mount point; PGDATA is a folder inside it so that
# initdb finds an empty directory even when the volume has a lost+found.
DATA_MOUNT = "/var/lib/postgresql/data"
BACKUP_MOUNT = "/var/lib/pgbackrest"


@dataclass(frozen=True)
class Node:
    name: str  # container name and network host name, e.g. elizadb-dev-replica-1
    role: str  # "primary" | "replica"
    index: int  # 0 for the primary, 1.. for replicas
    host_port: int

    @property
    def short(self) -> str:
        return "primary" if self.role == "primary" else f"replica-{self.index}"

    @property
    def slot(self) -> str:
        """The physical slot this node streams from whenever it is a standby. Every node has one
        name, so that any node can follow any other after a failover."""
        return "elizadb_" + self.short.replace("-", "_")

    @property
    def application_name(self) -> str:
        return self.slot


@dataclass(frozen=True)
class EtcdNode:
    name: str  # container name and host name, e.g. elizadb-dev-etcd-1
    index: int  # 1..

    @property
    def member(self) -> str:
        return f"etcd-{self.index}"


@dataclass(frozen=True)
class Topology:
    stack: str
    prefix: str
    primary: Node
    replicas: tuple[Node, ...]
    pooler_name: str
    pooler_host_port: int
    network_name: str
    current_primary: Node  # the node that is read-write now (elizadb:primaryNode)
    # The primary and every replica the stack could ever have. Node configuration names them
    # all, so that neither scaling nor a failover changes (and restarts) a node.
    possible_nodes: tuple[Node, ...]
    subnet: ipaddress.IPv4Network
    # Patroni stacks (elizadb:ha.engine patroni): the etcd members and the router.
    etcd: tuple[EtcdNode, ...] = ()
    router_name: str = ""
    # Which Docker host each part runs on (infra/placement.py), the address the other hosts
    # reach each host at, and the host ports a stack publishes beyond the PostgreSQL ones:
    # Patroni's REST API (always), and etcd's client and peer ports (on several hosts).
    placed: Mapping[str, str] = field(default_factory=dict)
    host_addresses: Mapping[str, str] = field(default_factory=dict)
    api_port_base: int = 0
    etcd_client_port_base: int = 0
    etcd_peer_port_base: int = 0
    backup_port_base: int = 0

    # Fixed addresses: .1 gateway, .4 Patroni config job, .5 pooler, .6 bootstrap job, .7 backup agent, .8 readiness
    # job, .9 router, .10+ nodes, .30+ etcd members; the engine hands out .128 and above to
    # anything else.
    def _host(self, offset: int) -> str:
        return str(self.subnet.network_address + offset)

    @property
    def gateway(self) -> str:
        return self._host(1)

    @property
    def dynamic_range(self) -> str:
        return str(ipaddress.IPv4Network((self.subnet.network_address + 128, 25)))

    def address(self, node: Node) -> str:
        return self._host(10 + node.index)

    @property
    def config_job_address(self) -> str:
        return self._host(4)

    @property
    def pooler_address(self) -> str:
        return self._host(5)

    @property
    def job_address(self) -> str:
        return self._host(6)

    @property
    def backup_address(self) -> str:
        return self._host(7)

    @property
    def ready_address(self) -> str:
        return self._host(8)

    @property
    def router_address(self) -> str:
        return self._host(9)

    def etcd_address(self, member: EtcdNode) -> str:
        return self._host(29 + member.index)

    # -- hosts ------------------------------------------------------------------------------
    @property
    def multi_host(self) -> bool:
        """The parts run on several Docker hosts: peers reach each other at the hosts'
        addresses and published ports, never on the (per-host) stack network."""
        return len(set(self.placed.values())) > 1

    def node_host(self, node: Node) -> str:
        # A node the stack does not have (yet) would be placed round-robin; it is never placed.
        return self.placed.get(node.short, LOCAL_HOST)

    def etcd_host(self, member: EtcdNode) -> str:
        return self.placed.get(etcd_part(member.index), LOCAL_HOST)

    @property
    def pooler_host(self) -> str:
        """The pooler's host, and so that of the router, the jobs and the backup agent."""
        return self.placed.get(POOLER, LOCAL_HOST)

    @property
    def hosts_used(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.placed.values()))) or (LOCAL_HOST,)

    def pg_endpoint(self, node: Node) -> tuple[str, int]:
        """Where the other parts of the stack reach a node's PostgreSQL."""
        if self.multi_host:
            return self.host_addresses[self.node_host(node)], node.host_port
        return self.address(node), PG_PORT

    def api_port(self, node: Node) -> int:
        """The host port of a node's Patroni REST API: on the host's address on several hosts,
        on network.bindAddress on one."""
        return self.api_port_base + node.index

    def api_endpoint(self, node: Node) -> tuple[str, int]:
        if self.multi_host:
            return self.host_addresses[self.node_host(node)], self.api_port(node)
        return self.address(node), API_PORT

    def etcd_ports(self, member: EtcdNode) -> tuple[int, int]:
        """The host ports of a member's client and peer ports (published on several hosts)."""
        return (
            self.etcd_client_port_base + member.index - 1,
            self.etcd_peer_port_base + member.index - 1,
        )

    @property
    def repository_endpoint(self) -> tuple[str, int]:
        """Where the nodes of a stack on several hosts reach the backup repository: the agent's
        pgBackRest server, published on the pooler's host."""
        return self.host_addresses[self.pooler_host], self.backup_port_base

    def backup_endpoint(self, node: Node) -> tuple[str, int]:
        """Where the backup agent of a stack on several hosts reaches a node's pgBackRest
        server."""
        return self.host_addresses[self.node_host(node)], self.backup_port_base + 1 + node.index

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.primary, *self.replicas)

    def volume_name(self, node: Node) -> str:
        return f"{node.name}-data"

    def etcd_volume_name(self, member: EtcdNode) -> str:
        return f"{member.name}-data"

    @property
    def backup_volume_name(self) -> str:
        return f"{self.prefix}-backup"

    @property
    def job_name(self) -> str:
        return f"{self.prefix}-bootstrap"

    @property
    def config_job_name(self) -> str:
        return f"{self.prefix}-config"

    @property
    def server_names(self) -> tuple[str, ...]:
        """Every host name a client may use for a server or the pooler (certificate SANs).

        Every node name the stack could ever have is included, so that scaling does not reissue
        the certificate and restart every node."""
        ha = (*(m.name for m in self.etcd), self.router_name) if self.router_name else ()
        return (*(n.name for n in self.possible_nodes), self.pooler_name, *ha, "localhost")


def topology(settings: StackSettings) -> Topology:
    """Nodes keep the names they were created with ("primary" is the node that was initialised
    first); which one is read-write now is `settings.primary_node`, changed by a failover."""
    prefix = settings.prefix
    net = settings.network
    primary = Node(f"{prefix}-primary", "primary", 0, net.primary_port)
    possible = (
        primary,
        *(
            Node(f"{prefix}-replica-{i}", "replica", i, net.replica_port_base + i - 1)
            for i in range(1, MAX_REPLICAS + 1)
        ),
    )
    replicas = possible[1 : settings.replicas + 1]
    current = next(n for n in (primary, *replicas) if n.short == settings.primary_node)
    subnet = ipaddress.IPv4Network(net.subnet or default_subnet(settings.stack))
    return Topology(
        stack=settings.stack,
        prefix=prefix,
        primary=primary,
        replicas=replicas,
        pooler_name=f"{prefix}-pgbouncer",
        pooler_host_port=net.pooler_port,
        network_name=f"{prefix}-net",
        current_primary=current,
        possible_nodes=possible,
        subnet=subnet,
        etcd=tuple(
            EtcdNode(f"{prefix}-etcd-{i}", i) for i in range(1, settings.etcd_member_count + 1)
        )
        if settings.patroni
        else (),
        router_name=f"{prefix}-router" if settings.patroni else "",
        placed=settings.placed,
        host_addresses={
            name: address
            for name in settings.host_names
            if (address := settings.host(name).address) is not None
        },
        api_port_base=net.patroni_api_port_base,
        etcd_client_port_base=net.etcd_client_port_base,
        etcd_peer_port_base=net.etcd_peer_port_base,
        backup_port_base=net.backup_port_base,
    )


def default_subnet(stack: str) -> str:
    """A /24 in 10.200.0.0/13 picked by the stack name: distinct stacks rarely collide, and a
    collision is reported by the engine when the network is created (set network.subnet)."""
    h = int.from_bytes(hashlib.sha256(stack.encode()).digest()[:4], "big")
    return f"10.{200 + h % 8}.{(h >> 3) % 256}.0/24"
