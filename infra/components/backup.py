"""The backup agent: a long-running container that takes the stack's scheduled pgBackRest backups
(image/backup.sh) and through which `elizadb backup` and `elizadb backups` run.

How it reaches the node that is primary *now*, whichever that is after a failover: pgBackRest
backs up a server from a local data path and talks to it over its Unix socket. The agent mounts
every node's data volume (NODES_DIR/<node>/data) and socket volume (NODES_DIR/<node>/run); before
each backup it asks every socket which server is read-write (peer authentication as the postgres
OS user — the agent holds no password), then points /var/lib/postgresql/data at that node's data
volume, because pgBackRest insists that pg1-path equals the server's data_directory, which is
that same path on every node. Nothing in this declaration names the primary, so a failover
changes nothing here.

On one host this needs no second process on any node. Running backups inside the primary
through `docker exec` was not chosen: it needs the engine's socket inside a container for the
schedule, which is root on the host.

A stack on several hosts has no volume that every node could mount, so there the agent is
pgBackRest's repository host (infra/render/pgbackrest.py): it serves the repository to the
nodes' archive-push over TLS, at a port published on its host's address, and backs up through
each node's pgBackRest server; pgBackRest finds the primary among them itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_docker as docker

from infra.components.common import (
    BACKUP_GRACE_SECONDS,
    StackInputs,
    container_options,
    healthcheck,
    labels,
    upload,
)
from infra.components.ha import PatroniNode, published_ports, tls_uploads
from infra.components.postgres import PostgresNode
from infra.render.pgbackrest import CONF_PATH, NODES_DIR, render_agent_conf
from infra.topology import BACKUP_MOUNT, BACKUP_SERVER_PORT, Topology

AGENT_ROLE = "backup"


def agent_name(topo: Topology) -> str:
    return f"{topo.prefix}-backup-agent"


class BackupAgent(pulumi.ComponentResource):
    container: docker.Container

    def __init__(
        self,
        name: str,
        args: StackInputs,
        nodes: Sequence[PostgresNode | PatroniNode],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        site = args.on(args.topo.pooler_host)
        name, placed = site.placed(name, opts)
        super().__init__("elizadb:index:BackupAgent", name, None, placed)
        settings, topo, image, network = args.settings, args.topo, site.image, site.network
        backup_volume = site.backup_volume
        volumes = [
            docker.ContainerVolumeArgs(volume_name=backup_volume.name, container_path=BACKUP_MOUNT)
        ]
        uploads = [upload(CONF_PATH, render_agent_conf(settings, topo))]
        ports = None
        if topo.multi_host:
            # The repository host: the nodes' WAL arrives at its server, and it reaches the
            # nodes' servers; both sides prove themselves with the stack's certificate.
            uploads += tls_uploads(args)
            ports = published_ports(
                settings, topo.pooler_host, [(BACKUP_SERVER_PORT, topo.repository_endpoint[1])]
            )
        else:
            for node, pg in zip(topo.nodes, nodes, strict=True):
                volumes += [
                    docker.ContainerVolumeArgs(
                        volume_name=pg.volume.name,
                        container_path=f"{NODES_DIR}/{node.short}/data",
                    ),
                    docker.ContainerVolumeArgs(
                        volume_name=pg.socket_volume.name,
                        container_path=f"{NODES_DIR}/{node.short}/run",
                    ),
                ]
        self.container = docker.Container(
            name,
            name=agent_name(topo),
            hostname=agent_name(topo),
            image=image,
            command=["backup", "schedule"],
            envs=[
                f"ELIZADB_FULL_EVERY={settings.backup.full_every_seconds}",
                f"ELIZADB_INCR_EVERY={settings.backup.incr_every_seconds}",
            ],
            labels=labels(args, AGENT_ROLE, agent_name(topo)),
            # On one host it talks to the servers through their sockets only; it is on the
            # stack's network, at the stack's fixed address for it, like every container.
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(
                    name=network.name, ipv4_address=topo.backup_address
                )
            ],
            ports=ports,
            volumes=volumes,
            uploads=uploads,
            # Ready once the stanza exists and WAL archiving was seen to work (`pgbackrest check`).
            healthcheck=healthcheck(["elizadb-backup", "health"]),
            restart="unless-stopped",
            memory=256,
            memory_swap=256,  # no swap on top of the limit
            # The agent forwards SIGTERM to a running backup, which pgBackRest stops cleanly.
            stop_signal="SIGTERM",
            stop_timeout=BACKUP_GRACE_SECONDS,
            destroy_grace_seconds=BACKUP_GRACE_SECONDS,
            # No `wait`: the provider's wait needs the engine's health status, which Podman
            # keeps only with systemd; ready.py waits instead. The local deploy runs the
            # health check itself, for at most wait_timeout seconds.
            wait_timeout=300,
            opts=container_options(self, opts),
        )
        self.register_outputs({"name": agent_name(topo)})
