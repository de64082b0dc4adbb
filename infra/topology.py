"""The nodes of a stack, derived from its settings: names, roles, ports and slots.

Pure: the Pulumi program, the renderers, the local deploy and `verify` all name things from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.settings import MAX_REPLICAS, StackSettings

PG_PORT = 5432
POOLER_PORT = 6432
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
        """The physical replication slot this node streams from (replicas only)."""
        return f"elizadb_replica_{self.index}"

    @property
    def application_name(self) -> str:
        return self.slot


@dataclass(frozen=True)
class Topology:
    stack: str
    prefix: str
    primary: Node
    replicas: tuple[Node, ...]
    pooler_name: str
    pooler_host_port: int
    network_name: str

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.primary, *self.replicas)

    def volume_name(self, node: Node) -> str:
        return f"{node.name}-data"

    @property
    def backup_volume_name(self) -> str:
        return f"{self.prefix}-backup"

    @property
    def job_name(self) -> str:
        return f"{self.prefix}-bootstrap"

    @property
    def server_names(self) -> tuple[str, ...]:
        """Every host name a client may use for a server or the pooler (certificate SANs).

        Every replica name the stack could ever have is included, so that scaling does not
        reissue the certificate and restart every node."""
        replicas = (f"{self.prefix}-replica-{i}" for i in range(1, MAX_REPLICAS + 1))
        return (self.primary.name, *replicas, self.pooler_name, "localhost")


def topology(settings: StackSettings) -> Topology:
    prefix = settings.prefix
    net = settings.network
    return Topology(
        stack=settings.stack,
        prefix=prefix,
        primary=Node(f"{prefix}-primary", "primary", 0, net.primary_port),
        replicas=tuple(
            Node(f"{prefix}-replica-{i}", "replica", i, net.replica_port_base + i - 1)
            for i in range(1, settings.replicas + 1)
        ),
        pooler_name=f"{prefix}-pgbouncer",
        pooler_host_port=net.pooler_port,
        network_name=f"{prefix}-net",
    )
