"""The containers of a Patroni stack (elizadb:ha.engine patroni): etcd members, PostgreSQL
nodes run by Patroni, and the router that sends the pooler to whichever node leads.

Nothing of eliza-db decides a failover here: Patroni holds a leader lease in etcd, promotes a
replica when the lease lapses and demotes a leader that cannot renew it; the router follows the
nodes' own answers to `GET /primary`.
"""

from __future__ import annotations

from dataclasses import replace

import pulumi
import pulumi_docker as docker

from infra.components.common import (
    DATABASE_GRACE_SECONDS,
    VOLUME_OPTIONS,
    HostResources,
    StackInputs,
    child,
    container_options,
    healthcheck,
    labels,
    secret_upload,
    upload,
    volume_labels,
)
from infra.components.postgres import node_volumes
from infra.render import paths
from infra.render.etcd import (
    CLIENT_PORT,
    ETCD_CONF,
    PEER_PORT,
    EtcdCluster,
    EtcdMember,
    render_etcd_conf,
)
from infra.render.patroni import (
    API_PORT,
    API_USER,
    PATRONI_YML_UPLOAD,
    REWIND_USER,
    PatroniCluster,
    PatroniMember,
    PatroniSecrets,
    render_patroni_yml,
)
from infra.render.pgbackrest import CONF_PATH as PGBACKREST_CONF
from infra.render.pgbackrest import SOCKET_DIR, archive_command, render_pgbackrest_conf
from infra.render.router import (
    HEALTH_PORT,
    RouterConfig,
    RouterMember,
    render_haproxy_cfg,
)
from infra.roles import REPLICATOR, SUPERUSER
from infra.settings import FORCED_PG_PARAMETERS, StackSettings, size_mb
from infra.topology import (
    BACKUP_MOUNT,
    BACKUP_SERVER_PORT,
    DATA_MOUNT,
    PG_PORT,
    EtcdNode,
    Node,
    Topology,
)

ETCD_MOUNT = "/var/lib/etcd"
HAPROXY_CFG = f"{paths.ETC}/haproxy.cfg"
# The passwords a Patroni stack needs beyond the roles of infra/roles.py.
PATRONI_PASSWORDS = (REWIND_USER, API_USER)


def member_name(node: Node) -> str:
    """A node's Patroni member name. Patroni names a member's slot after it ('-' → '_'), so the
    slots keep the names the nodes have always had (Node.slot)."""
    return node.slot.replace("_", "-")


def _etcd_member(topo: Topology, member: EtcdNode) -> EtcdMember:
    """On one host, peers reach a member by its name on the stack network; on several, at its
    host's address and the ports published there."""
    if topo.multi_host:
        client, peer = topo.etcd_ports(member)
        return EtcdMember(member.member, topo.host_addresses[topo.etcd_host(member)], client, peer)
    return EtcdMember(member.member, member.name)


def _patroni_member(topo: Topology, node: Node) -> PatroniMember:
    if topo.multi_host:
        address, pg_port = topo.pg_endpoint(node)
        host = topo.node_host(node)
        nearby = next((m.member for m in topo.etcd if topo.etcd_host(m) == host), "")
        return PatroniMember(member_name(node), address, pg_port, topo.api_port(node), nearby)
    return PatroniMember(member_name(node), node.name)


def etcd_cluster(topo: Topology) -> EtcdCluster:
    return EtcdCluster(
        members=tuple(_etcd_member(topo, m) for m in topo.etcd),
        # Unique per stack, so that members of two stacks can never join one cluster.
        token=topo.prefix,
    )


def patroni_cluster(settings: StackSettings, topo: Topology) -> PatroniCluster:
    # Patroni sets what it manages itself, and eliza-db's forced parameters are the builtin
    # engine's file layout; the rest (defaults, sizing, the user's) is cluster-wide and dynamic.
    tunables = {k: v for k, v in settings.pg_parameters().items() if k not in FORCED_PG_PARAMETERS}
    return PatroniCluster(
        scope=topo.prefix,
        members=tuple(_patroni_member(topo, n) for n in topo.nodes),
        etcd=etcd_cluster(topo),
        synchronous_mode=settings.synchronous,
        synchronous_node_count=settings.replication.synchronous_count,
        parameters=tunables,
        # The same command on every host: pgbackrest.conf says where the repository is (the
        # shared volume, or the repository host of a stack on several hosts).
        archive_command=archive_command(),
    )


def router_config(topo: Topology) -> RouterConfig:
    return RouterConfig(
        members=tuple(
            RouterMember(n.name, *topo.pg_endpoint(n), topo.api_endpoint(n)[1]) for n in topo.nodes
        ),
        ca_file=paths.CA_CERT,
    )


def tls_uploads(args: StackInputs) -> list[docker.ContainerUploadArgs]:
    return [
        upload(paths.CA_CERT, args.ca_cert_pem),
        upload(paths.SERVER_CERT, args.server_cert_pem),
        secret_upload(paths.SERVER_KEY_UPLOAD, args.server_key_pem),
    ]


def _network(site: HostResources, name: str, address: str) -> docker.ContainerNetworksAdvancedArgs:
    return docker.ContainerNetworksAdvancedArgs(
        name=site.network.name, aliases=[name], ipv4_address=address
    )


def published_ports(
    settings: StackSettings, host: str, ports: list[tuple[int, int]]
) -> list[docker.ContainerPortArgs]:
    """(internal, external) ports published on the host's address, for peers on other hosts."""
    ip = settings.host(host).publish_address
    return [docker.ContainerPortArgs(internal=i, external=e, ip=ip) for i, e in ports]


class EtcdMemberNode(pulumi.ComponentResource):
    container: docker.Container
    volume: docker.Volume

    def __init__(
        self,
        name: str,
        args: StackInputs,
        member: EtcdNode,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        host = args.topo.etcd_host(member)
        site = args.on(host)
        name, placed = site.placed(name, opts)
        super().__init__("elizadb:index:EtcdMember", name, None, placed)
        settings, topo = args.settings, args.topo
        # The store of the cluster's leader lease and configuration: it outlives the container.
        self.volume = docker.Volume(
            f"{name}-data",
            name=topo.etcd_volume_name(member),
            labels=volume_labels(settings, args.stack_id, node=member.name),
            opts=child(self, **VOLUME_OPTIONS, protect=True, retain_on_delete=True),
        )
        etcdctl = [
            "etcdctl",
            "--endpoints=https://localhost:2379",
            f"--cacert={paths.CA_CERT}",
            f"--cert={paths.SERVER_CERT}",
            "--key=/var/lib/etcd-private/server.key",
            "endpoint",
            "health",
        ]
        self.container = docker.Container(
            name,
            name=member.name,
            hostname=member.name,
            image=site.image,
            command=["etcd"],
            labels=labels(args, "etcd", member.name),
            networks_advanced=[_network(site, member.name, topo.etcd_address(member))],
            ports=published_ports(
                settings,
                host,
                list(zip((CLIENT_PORT, PEER_PORT), topo.etcd_ports(member), strict=False)),
            )
            if topo.multi_host
            else None,
            volumes=[
                docker.ContainerVolumeArgs(volume_name=self.volume.name, container_path=ETCD_MOUNT)
            ],
            uploads=[
                upload(ETCD_CONF, render_etcd_conf(etcd_cluster(topo), member.member)),
                *tls_uploads(args),
            ],
            healthcheck=healthcheck(etcdctl),
            restart="unless-stopped",
            wait_timeout=120,
            opts=container_options(self, opts),
        )
        self.register_outputs({"name": member.name})


class PatroniNode(pulumi.ComponentResource):
    container: docker.Container
    volume: docker.Volume
    socket_volume: docker.Volume

    def __init__(
        self,
        name: str,
        args: StackInputs,
        node: Node,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        host = args.topo.node_host(node)
        site = args.on(host)
        name, placed = site.placed(name, opts)
        super().__init__("elizadb:index:PatroniNode", name, None, placed)
        settings, topo, passwords = args.settings, args.topo, args.passwords
        self.volume, self.socket_volume = node_volumes(self, name, args, node)
        # The tunables reach Patroni through the config job (patroni_config.py), not through
        # this file: a changed parameter then rolls instead of replacing every node.
        cluster = replace(patroni_cluster(settings, topo), parameters={})
        member = member_name(node)
        patroni_yml = pulumi.Output.all(
            passwords[SUPERUSER],
            passwords[REPLICATOR.name],
            passwords[REWIND_USER],
            passwords[API_USER],
        ).apply(
            lambda pw: render_patroni_yml(
                cluster, member, PatroniSecrets(pw[0], pw[1], pw[2], pw[3])
            )
        )
        memory = size_mb(settings.resources.memory)
        self.container = docker.Container(
            name,
            name=node.name,
            hostname=node.name,
            image=site.image,
            command=["patroni"],
            envs=[f"ELIZADB_NODE={node.name}"],
            labels=labels(args, "patroni", node.name),
            networks_advanced=[_network(site, node.name, topo.address(node))],
            # On several hosts the peers, the router and the clients reach the node at its
            # host's address: PostgreSQL and the REST API are published there. On one host both
            # are published on the bind address, for clients: verify reads the REST API.
            ports=published_ports(
                settings,
                host,
                [
                    (PG_PORT, node.host_port),
                    (API_PORT, topo.api_port(node)),
                    (BACKUP_SERVER_PORT, topo.backup_endpoint(node)[1]),
                ],
            )
            if topo.multi_host
            else [
                docker.ContainerPortArgs(internal=i, external=e, ip=settings.network.bind_address)
                for i, e in ((PG_PORT, node.host_port), (API_PORT, topo.api_port(node)))
            ],
            volumes=[
                docker.ContainerVolumeArgs(volume_name=self.volume.name, container_path=DATA_MOUNT),
                # On several hosts the repository is the backup agent's alone (pgbackrest.conf).
                *(
                    []
                    if topo.multi_host
                    else [
                        docker.ContainerVolumeArgs(
                            volume_name=site.backup_volume.name, container_path=BACKUP_MOUNT
                        )
                    ]
                ),
                docker.ContainerVolumeArgs(
                    volume_name=self.socket_volume.name, container_path=SOCKET_DIR
                ),
            ],
            uploads=[
                secret_upload(PATRONI_YML_UPLOAD, patroni_yml),
                *tls_uploads(args),
                upload(PGBACKREST_CONF, render_pgbackrest_conf(settings, topo)),
            ],
            healthcheck=healthcheck(["pg_isready", "-q", "-h", "/run/postgresql", "-p", "5432"]),
            restart="unless-stopped",
            memory=memory,
            memory_swap=memory,
            shm_size=size_mb(settings.resources.shm_size),
            # Patroni stops PostgreSQL (fast shutdown) and releases its leader key on SIGTERM,
            # so that a replica takes over at once instead of after the lease.
            stop_timeout=DATABASE_GRACE_SECONDS,
            destroy_grace_seconds=DATABASE_GRACE_SECONDS,
            wait_timeout=300,
            opts=container_options(self, opts),
        )
        self.register_outputs({"name": node.name})


class Router(pulumi.ComponentResource):
    container: docker.Container

    def __init__(
        self, name: str, args: StackInputs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        site = args.on(args.topo.pooler_host)
        name, placed = site.placed(name, opts)
        super().__init__("elizadb:index:Router", name, None, placed)
        topo = args.topo
        # Ready once a leader answers: what the pooler (and so the agents) need.
        probe = (
            f"exec 3<>/dev/tcp/127.0.0.1/{HEALTH_PORT} && "
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"
        )
        self.container = docker.Container(
            name,
            name=topo.router_name,
            hostname=topo.router_name,
            image=site.image,
            command=["router"],
            labels=labels(args, "router", topo.router_name),
            networks_advanced=[_network(site, topo.router_name, topo.router_address)],
            uploads=[
                upload(HAPROXY_CFG, render_haproxy_cfg(router_config(topo))),
                upload(paths.CA_CERT, args.ca_cert_pem),
            ],
            healthcheck=healthcheck(["bash", "-c", probe]),
            restart="unless-stopped",
            wait_timeout=300,
            opts=container_options(self, opts),
        )
        self.register_outputs({"name": topo.router_name})
