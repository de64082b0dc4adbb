"""PgBouncer in front of the primary, TLS on both legs."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from infra.components.common import (
    POOLER_GRACE_SECONDS,
    StackInputs,
    container_options,
    healthcheck,
    labels,
    secret_upload,
    upload,
)
from infra.render import paths
from infra.render.pgbouncer import render_pgbouncer_ini, render_userlist
from infra.roles import POOLER_AUTH
from infra.topology import POOLER_PORT


class Pooler(pulumi.ComponentResource):
    container: docker.Container

    def __init__(
        self, name: str, args: StackInputs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        site = args.on(args.topo.pooler_host)
        name, placed = site.placed(name, opts)
        super().__init__("elizadb:index:Pooler", name, None, placed)
        settings, topo, image, network = args.settings, args.topo, site.image, site.network
        sslmode = "require" if settings.tls.enabled else "disable"
        self.container = docker.Container(
            name,
            name=topo.pooler_name,
            hostname=topo.pooler_name,
            image=image,
            command=["pgbouncer"],
            labels=labels(args, "pgbouncer", topo.pooler_name),
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(
                    name=network.name, aliases=[topo.pooler_name], ipv4_address=topo.pooler_address
                )
            ],
            ports=[
                docker.ContainerPortArgs(
                    internal=POOLER_PORT,
                    external=topo.pooler_host_port,
                    # On several hosts every published port is on its host's address.
                    ip=settings.host(topo.pooler_host).publish_address
                    if topo.multi_host
                    else settings.network.bind_address,
                )
            ],
            uploads=[
                upload(paths.PGBOUNCER_INI, render_pgbouncer_ini(settings, topo)),
                upload(paths.CA_CERT, args.ca_cert_pem),
                upload(paths.SERVER_CERT, args.server_cert_pem),
                secret_upload(paths.SERVER_KEY_UPLOAD, args.server_key_pem),
                secret_upload(
                    paths.USERLIST_UPLOAD, args.passwords[POOLER_AUTH.name].apply(render_userlist)
                ),
            ],
            # A URI, not a key=value string: Podman splits health check arguments at spaces.
            healthcheck=healthcheck(
                [
                    "pg_isready",
                    "-q",
                    "-d",
                    f"postgresql://127.0.0.1:{POOLER_PORT}/pgbouncer?sslmode={sslmode}",
                ]
            ),
            restart="unless-stopped",
            memory=128,
            memory_swap=128,  # no swap on top of the limit
            # SIGTERM: immediate shutdown (SIGINT would wait for every client to leave).
            stop_signal="SIGTERM",
            stop_timeout=POOLER_GRACE_SECONDS,
            destroy_grace_seconds=POOLER_GRACE_SECONDS,
            # No `wait`: the provider's wait needs the engine's health status, which Podman
            # keeps only with systemd; ready.py waits instead. The local deploy runs the
            # health check itself, for at most wait_timeout seconds.
            wait_timeout=120,
            opts=container_options(self, opts),
        )
        self.register_outputs({"name": topo.pooler_name})
