"""A PostgreSQL node — the primary or a streaming replica — with its protected data volume."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from infra.components.common import (
    DATABASE_GRACE_SECONDS,
    VOLUME_OPTIONS,
    StackInputs,
    child,
    container_options,
    healthcheck,
    labels,
    secret_upload,
    upload,
    volume_labels,
)
from infra.render import paths
from infra.render.connections import render_pgpass
from infra.render.pgbackrest import CONF_PATH as PGBACKREST_CONF
from infra.render.pgbackrest import SOCKET_DIR, render_pgbackrest_conf
from infra.render.postgres import primary_conninfo, render_pg_hba, render_postgresql_conf
from infra.roles import REPLICATOR, SUPERUSER
from infra.settings import size_mb
from infra.topology import BACKUP_MOUNT, DATA_MOUNT, PG_PORT, Node

# The builtin node's component type: part of the URN of every resource below it.
POSTGRES_NODE_TYPE = "elizadb:index:PostgresNode"


def socket_volume_name(node: Node) -> str:
    return f"{node.name}-run"


def node_volumes(
    parent: pulumi.Resource, name: str, args: StackInputs, node: Node
) -> tuple[docker.Volume, docker.Volume]:
    """A node's data volume and its socket folder's volume, children of `parent` (the builtin
    node and the Patroni node declare the same two)."""
    settings, topo = args.settings, args.topo
    # Data outlives the container: a replace or a destroy must not take it along.
    data = docker.Volume(
        f"{name}-data",
        name=topo.volume_name(node),
        labels=volume_labels(settings, args.stack_id, node=node.name),
        opts=child(parent, **VOLUME_OPTIONS, protect=True, retain_on_delete=True),
    )
    # The server's Unix socket folder, shared with the backup agent, which reaches whichever
    # node is primary through it (peer authentication: no password). It holds nothing but
    # the socket, so it is not protected.
    socket = docker.Volume(
        f"{name}-run",
        name=socket_volume_name(node),
        labels=volume_labels(settings, args.stack_id, node=node.name),
        opts=child(parent, **VOLUME_OPTIONS),
    )
    return data, socket


class PostgresNode(pulumi.ComponentResource):
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
        site = args.on(args.topo.node_host(node))
        name, placed = site.placed(name, opts)
        super().__init__(POSTGRES_NODE_TYPE, name, None, placed)
        settings, topo = args.settings, args.topo
        self.volume, self.socket_volume = node_volumes(self, name, args, node)
        uploads = [
            upload(paths.POSTGRESQL_CONF, render_postgresql_conf(settings, topo, node)),
            upload(paths.PG_HBA_CONF, render_pg_hba(settings)),
            upload(paths.CA_CERT, args.ca_cert_pem),
            upload(paths.SERVER_CERT, args.server_cert_pem),
            secret_upload(paths.SERVER_KEY_UPLOAD, args.server_key_pem),
            upload(PGBACKREST_CONF, render_pgbackrest_conf(settings, topo)),
        ]
        # Every node may have to stream from a peer one day, or rewind against it (pg_rewind
        # needs a superuser connection to its source), after a failover or a switchover.
        pgpass = pulumi.Output.all(
            args.passwords[REPLICATOR.name], args.passwords[SUPERUSER]
        ).apply(
            lambda pw: render_pgpass(
                [("replication", REPLICATOR.name, pw[0]), ("*", SUPERUSER, pw[1])]
            )
        )
        uploads.append(secret_upload(paths.PGPASS_UPLOAD, pgpass))
        if node.role == "primary":
            # Only the node that runs initdb needs the superuser's password as a file of its own.
            uploads.append(
                secret_upload(paths.SUPERUSER_PASSWORD_UPLOAD, args.passwords[SUPERUSER])
            )
        # Static across failovers: the node's name, its peers, and how to reach whichever of
        # them is read-write.
        envs = [
            f"ELIZADB_NODE={node.name}",
            f"ELIZADB_PEERS={','.join(f'{n.name}={topo.address(n)}' for n in topo.nodes)}",
            f"ELIZADB_PRIMARY_CONNINFO={primary_conninfo(settings, topo, node)}",
            f"ELIZADB_SLOT={node.slot}",
        ]
        memory = size_mb(settings.resources.memory)
        self.container = docker.Container(
            name,
            name=node.name,
            hostname=node.name,
            image=site.image,
            command=[node.role],
            envs=envs,
            labels=labels(args, node.role, node.name),
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(
                    name=site.network.name, aliases=[node.name], ipv4_address=topo.address(node)
                )
            ],
            ports=[
                docker.ContainerPortArgs(
                    internal=PG_PORT, external=node.host_port, ip=settings.network.bind_address
                )
            ],
            volumes=[
                docker.ContainerVolumeArgs(volume_name=self.volume.name, container_path=DATA_MOUNT),
                docker.ContainerVolumeArgs(
                    volume_name=site.backup_volume.name, container_path=BACKUP_MOUNT
                ),
                docker.ContainerVolumeArgs(
                    volume_name=self.socket_volume.name, container_path=SOCKET_DIR
                ),
            ],
            uploads=uploads,
            healthcheck=healthcheck(["pg_isready", "-q", "-h", "/run/postgresql", "-p", "5432"]),
            restart="unless-stopped",
            memory=memory,
            memory_swap=memory,  # no swap on top of the limit
            shm_size=size_mb(settings.resources.shm_size),
            # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client.
            stop_signal="SIGINT",
            stop_timeout=DATABASE_GRACE_SECONDS,
            destroy_grace_seconds=DATABASE_GRACE_SECONDS,
            # No `wait`: the provider's wait needs the engine's health status, which Podman
            # keeps only with systemd; ready.py waits instead. The local deploy runs the
            # health check itself, for at most wait_timeout seconds.
            wait_timeout=300,
            opts=container_options(self, opts),
        )
        self.register_outputs({"name": node.name})
