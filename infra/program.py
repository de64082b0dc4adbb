"""The whole stack, declared once. `pulumi up` runs it through infra/__main__.py; the local
deploy runs the very same function under Pulumi's mock runtime and applies what it declares
through the Docker API (elizadb/local), so the two cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from infra.components.backup import BackupAgent
from infra.components.bootstrap import BootstrapJob
from infra.components.common import (
    STACK_ID_RESOURCE,
    VOLUME_OPTIONS,
    HostResources,
    StackInputs,
    child,
    network_labels,
    volume_labels,
)
from infra.components.ha import (
    PATRONI_PASSWORDS,
    EtcdMemberNode,
    PatroniNode,
    Router,
    member_name,
    patroni_cluster,
)
from infra.components.image import StackImage
from infra.components.patroni_config import PatroniConfigJob
from infra.components.pooler import Pooler
from infra.components.postgres import POSTGRES_NODE_TYPE, PostgresNode
from infra.components.ready import ReadyCheck, ready_name
from infra.components.secrets import StackSecrets
from infra.components.tls import StackTls
from infra.render.connections import connection_uri, node_uri
from infra.render.pgbouncer import session_pool_name
from infra.roles import AGENT, OWNER, POOLER_AUTH, READONLY, SUPERUSER, USER
from infra.settings import StackSettings
from infra.topology import BACKUP_MOUNT, Node, Topology, topology

# Where a relative elizadb:tls.rootCertPath is resolved for the node-postgres URIs: the project
# folder, where `elizadb up` writes the CA and where the README has Pulumi users save it.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ElizaDbStack(pulumi.ComponentResource):
    """Network, image, secrets, TLS, the primary, N replicas, the pooler, the bootstrap job and
    the backup agent."""

    outputs: dict[str, Any]

    def __init__(self, settings: StackSettings, opts: pulumi.ResourceOptions | None = None):
        topo = topology(settings)
        super().__init__("elizadb:index:Stack", topo.prefix, None, opts)
        # The identity of this stack's state, on every container, volume and network it makes:
        # a second checkout (other state) finds them and refuses to take them over.
        stack_id = random.RandomUuid(STACK_ID_RESOURCE, opts=child(self)).result
        hosts = {
            host: self._host_resources(settings, topo, host, stack_id) for host in topo.hosts_used
        }
        secrets = StackSecrets(
            "secrets",
            settings,
            (
                *(r.name for r in settings.server_roles),
                *(PATRONI_PASSWORDS if settings.patroni else ()),
            ),
            opts=child(self),
        )
        certs = StackTls("tls", settings, topo, opts=child(self))

        args = StackInputs(
            settings=settings,
            topo=topo,
            hosts=hosts,
            ca_cert_pem=certs.ca_cert_pem,
            server_cert_pem=certs.server_cert_pem,
            server_key_pem=certs.server_key_pem,
            passwords=secrets.passwords,
            salt_seed=secrets.salt_seed,
            stack_id=stack_id,
        )
        nodes: list[PostgresNode | PatroniNode]
        if settings.patroni:
            nodes, job = self._patroni_nodes(args)
        else:
            primary = PostgresNode("primary", args, topo.primary, opts=child(self))
            job = BootstrapJob("bootstrap", args, opts=child(self, depends_on=[primary.container]))
            # Replicas clone through the replication role and slots the job creates.
            nodes = [primary]
            for node in topo.replicas:
                nodes.append(
                    PostgresNode(
                        node.short, args, node, opts=child(self, depends_on=[job.succeeded])
                    )
                )
        # Backups need the stanza's server bootstrapped; the agent finds the primary itself. On
        # several hosts the nodes archive through the agent's server from their first WAL
        # segment, so it starts with them (its readiness waits for a leader): a node stops only
        # once its archiver has given up on a pending segment, and a repository that is not
        # there yet would hold up the config job's first restart.
        BackupAgent(
            "backup-agent",
            args,
            nodes,
            opts=child(
                self,
                depends_on=[n.container for n in nodes] if topo.multi_host else [job.succeeded],
            ),
        )
        pooler = Pooler("pgbouncer", args, opts=child(self, depends_on=[job.succeeded]))
        # Health waits that work on Docker and Podman alike: ask the servers (ready.py).
        ready = ReadyCheck(
            "ready", args, [*(n.container for n in nodes), pooler.container], opts=child(self)
        )
        self.outputs = stack_outputs(settings, topo, certs.ca_cert_pem, secrets.passwords)
        # Awaited by the deployment: a failed readiness check fails `pulumi up` with its log.
        self.register_outputs({"ready": ready.succeeded.apply(lambda c: ready_name(args))})

    def _host_resources(
        self, settings: StackSettings, topo: Topology, host: str, stack_id: pulumi.Output[str]
    ) -> HostResources:
        """The provider of a declared host, and the network, backup volume and image on it. A
        stack that declares no host keeps the default provider and its resources' names."""
        provider = None
        suffix = ""
        if settings.hosts:
            where = settings.host(host)
            provider = docker.Provider(
                f"host-{host}",
                host=where.url,
                cert_path=where.cert_path,
                opts=child(self),
            )
            suffix = f"-{host}"
        on = pulumi.ResourceOptions(provider=provider) if provider else None
        network = docker.Network(
            f"network{suffix}",
            name=topo.network_name,
            labels=network_labels(settings, stack_id),
            ipam_configs=[
                docker.NetworkIpamConfigArgs(
                    subnet=str(topo.subnet), gateway=topo.gateway, ip_range=topo.dynamic_range
                )
            ],
            # A fixed name: a new network.subnet replaces the network, and the new one cannot be
            # made while the old one exists. The containers on it are replaced too (their
            # addresses change), before it goes.
            opts=pulumi.ResourceOptions.merge(child(self, delete_before_replace=True), on),
        )
        backup_volume = docker.Volume(
            f"backup{suffix}",
            name=topo.backup_volume_name,
            labels=volume_labels(settings, stack_id),
            opts=pulumi.ResourceOptions.merge(
                child(self, **VOLUME_OPTIONS, protect=True, retain_on_delete=True), on
            ),
        )
        image = StackImage(
            f"image{suffix}",
            settings,
            opts=pulumi.ResourceOptions.merge(
                child(self), pulumi.ResourceOptions(providers=[provider]) if provider else None
            ),
        )
        return HostResources(host, provider, image.ref, network, backup_volume)

    def _patroni_nodes(
        self, args: StackInputs
    ) -> tuple[list[PostgresNode | PatroniNode], BootstrapJob]:
        """etcd first; then every node at once (Patroni elects one to initialise the cluster and
        the others clone it); the router once they run; the parameters (config job); the
        bootstrap job through whichever leads."""
        topo = args.topo
        etcd = [EtcdMemberNode(m.member, args, m, opts=child(self)) for m in topo.etcd]
        after_etcd = [m.container for m in etcd]
        # A builtin stack moved to Patroni (README: "Moving a builtin stack to Patroni") keeps
        # each node's volumes and container as the same resources: the alias carries the URNs
        # the builtin node gave them over to its children too, so that Pulumi replaces the
        # container instead of creating a second one of its name, and never deletes the volumes.
        moved = pulumi.Alias(type_=POSTGRES_NODE_TYPE)
        nodes: list[PostgresNode | PatroniNode] = [
            PatroniNode(n.short, args, n, opts=child(self, depends_on=after_etcd, aliases=[moved]))
            for n in topo.nodes
        ]
        router = Router("router", args, opts=child(self, depends_on=[n.container for n in nodes]))
        # The parameters before the bootstrap job: its index builds get the declared memory.
        config = PatroniConfigJob("config", args, opts=child(self, depends_on=[router.container]))
        job = BootstrapJob("bootstrap", args, opts=child(self, depends_on=[config.succeeded]))
        return nodes, job


def _endpoint(name: str, host: str, port: int, role: str) -> dict[str, Any]:
    return {"name": name, "host": host, "port": port, "role": role}


def stack_outputs(
    settings: StackSettings,
    topo: Topology,
    ca_cert_pem: pulumi.Output[str],
    passwords: dict[str, pulumi.Output[str]],
) -> dict[str, Any]:
    """Plain outputs name endpoints; every connection string is a secret."""
    db = settings.database
    tls = settings.tls.enabled
    root = settings.root_cert_path
    current = topo.current_primary
    standbys = [n for n in topo.nodes if n != current]

    def at(host_name: str) -> str:
        """Where clients reach the published ports of a host: its address on several hosts."""
        return topo.host_addresses[host_name] if topo.multi_host else settings.advertise_host

    def node_at(n: Node) -> tuple[str, int]:
        return at(topo.node_host(n)), n.host_port

    # Read-write URIs list the current primary first, then every other node.
    read_write = [node_at(n) for n in (current, *standbys)]

    def uri(role: str, hosts: list[tuple[str, int]], database: str = db) -> pulumi.Output[str]:
        return passwords[role].apply(
            lambda pw: connection_uri(role, pw, hosts, database, tls=tls, root_cert=root)
        )

    pooler_at = (at(topo.pooler_host), topo.pooler_host_port)
    pooler = [pooler_at]
    node_root = root if Path(root).is_absolute() else str(PROJECT_ROOT / root)

    def node(role: str, where: tuple[str, int], database: str = db) -> pulumi.Output[str]:
        return passwords[role].apply(
            lambda pw: node_uri(role, pw, *where, database, tls=tls, root_cert=node_root)
        )

    session_db = session_pool_name(db)
    connections = {
        "superuser": uri(SUPERUSER, read_write, "postgres"),
        "owner": uri(OWNER.name, read_write),
        "agentPrimary": uri(AGENT.name, read_write),
        "agentPooler": uri(AGENT.name, pooler),
        "userPooler": uri(USER.name, pooler),
        "poolerAdmin": uri(POOLER_AUTH.name, pooler, "pgbouncer"),
        "readonlyReplicas": [uri(READONLY.name, [node_at(n)]) for n in standbys],
    }
    # node-postgres / ElizaOS POSTGRES_URL: one host, absolute sslrootcert. No client-side
    # failover (the pooler follows a failover instead); see the README's ElizaOS 1.x section.
    node_connections = {
        # The migration role through the session-mode pool: for processes that run
        # @elizaos/plugin-sql's migrations (every ElizaOS 1.x start unless told to skip).
        "migrator": node(OWNER.name, pooler_at, session_db),
        # The agents' role through the transaction-mode pool: ordinary traffic.
        "agentPooler": node(AGENT.name, pooler_at),
        "agentSession": node(AGENT.name, pooler_at, session_db),
        # Straight to the current primary.
        "owner": node(OWNER.name, node_at(current)),
        "agentPrimary": node(AGENT.name, node_at(current)),
        # ENABLE_DATA_ISOLATION=true: each ElizaOS server's own role, transaction-mode pool.
        "servers": {
            server: node(role.name, pooler_at)
            for server, role in zip(
                settings.schema_settings.servers, settings.server_roles, strict=True
            )
        },
    }
    outputs: dict[str, Any] = {
        "stack": settings.stack,
        "environment": settings.environment.value,
        "database": db,
        "embeddingDimensions": settings.embedding_dimensions,
        "schemaProfile": settings.profile,
        "haEngine": settings.ha.engine,
        # The operators whose HNSW indexes exist on memories.embedding (none on eliza-1 stacks):
        # verify checks exactly these.
        "vectorOperators": list(settings.vector_operators),
        "poolerSessionDatabase": session_db,
        "tls": tls,
        "caCert": ca_cert_pem,
        "caCertPath": root,
        "network": topo.network_name,
        "backupVolume": topo.backup_volume_name,
        # Where the nodes mount the repository: nowhere on several hosts (the agent's alone).
        "backupMount": "" if topo.multi_host else BACKUP_MOUNT,
        "nodeNames": [n.name for n in topo.nodes],
        "primary": _endpoint(current.name, *node_at(current), "primary"),
        "replicas": [_endpoint(n.name, *node_at(n), "replica") for n in standbys],
        "pooler": _endpoint(topo.pooler_name, *pooler_at, "pooler"),
        # Which Docker host runs each container (elizadb:hosts; "local" when none is declared).
        "placement": {
            **{n.name: topo.node_host(n) for n in topo.nodes},
            **{m.name: topo.etcd_host(m) for m in topo.etcd},
            topo.pooler_name: topo.pooler_host,
        },
        "connections": pulumi.Output.secret(connections),
        "nodeConnections": pulumi.Output.secret(node_connections),
    }
    if settings.patroni:
        # Where verify reads each member's REST API (GET only, over TLS with the stack CA), and
        # what Patroni's dynamic configuration must hold.
        cluster = patroni_cluster(settings, topo)
        outputs["patroni"] = {
            "members": [
                {
                    "name": member_name(n),
                    "node": n.name,
                    "host": at(topo.node_host(n)),
                    "port": topo.api_port(n),
                }
                for n in topo.nodes
            ],
            "synchronous": cluster.synchronous_mode,
            "synchronousCount": cluster.synchronous_node_count,
            "ttl": cluster.timings.ttl,
            "parameters": dict(cluster.parameters),
        }
    return outputs
