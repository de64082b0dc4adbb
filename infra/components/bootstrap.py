"""The bootstrap job: a one-shot container that applies bootstrap.sql (roles, database, pooler
auth function, replication slots) and the sql/ migrations on the primary. Its uploads carry
everything it applies, so any change to them replaces the job and it runs again."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_docker as docker

from infra.components.common import StackInputs, child, labels, secret_upload, upload
from infra.profiles import SQL_ROOT, sql_dir
from infra.render import paths
from infra.render.bootstrap import render_bootstrap_sql
from infra.render.connections import render_pgpass
from infra.roles import ROLES, SUPERUSER
from infra.topology import PG_PORT


def migration_files(directory: Path = SQL_ROOT) -> list[Path]:
    return sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))


class BootstrapJob(pulumi.ComponentResource):
    container: docker.Container

    def __init__(
        self, name: str, args: StackInputs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("elizadb:index:BootstrapJob", name, None, opts)
        settings, topo, passwords = args.settings, args.topo, args.passwords
        names = [SUPERUSER, *(r.name for r in (*ROLES, *settings.server_roles))]
        secrets = pulumi.Output.all(args.salt_seed, *(passwords[n] for n in names))
        bootstrap_sql = secrets.apply(
            lambda v: render_bootstrap_sql(settings, topo, dict(zip(names, v[1:])), v[0])
        )
        pgpass = passwords[SUPERUSER].apply(lambda pw: render_pgpass([("*", SUPERUSER, pw)]))
        sslmode = "verify-full" if settings.tls.enabled else "disable"
        self.container = docker.Container(
            name,
            name=topo.job_name,
            image=args.image,
            command=["job"],
            envs=[
                f"ELIZADB_EMBEDDING_DIMS={settings.embedding_dimensions}",
                f"PGDATABASE={settings.database}",
                # Whichever node is read-write: the job follows a failover by itself.
                f"PGHOST={','.join(n.name for n in topo.nodes)}",
                f"PGHOSTADDR={','.join(topo.address(n) for n in topo.nodes)}",
                f"PGPORT={','.join(str(PG_PORT) for _ in topo.nodes)}",
                f"PGSSLMODE={sslmode}",
                f"PGSSLROOTCERT={paths.CA_CERT}",
                "PGTARGETSESSIONATTRS=read-write",
                # The job runs before any standby exists: with synchronous replication on, its
                # commits would wait for one forever.
                "PGOPTIONS=-c synchronous_commit=local",
                f"PGUSER={SUPERUSER}",
            ],
            labels=labels(settings, "job", topo.job_name),
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(
                    name=args.network.name, ipv4_address=topo.job_address
                )
            ],
            uploads=[
                upload(paths.CA_CERT, args.ca_cert_pem),
                secret_upload(paths.BOOTSTRAP_SQL, bootstrap_sql),
                secret_upload(paths.PGPASS_UPLOAD, pgpass),
                *(
                    upload(f"{paths.SQL_DIR}/{f.name}", f.read_text())
                    for f in migration_files(sql_dir(settings.profile))
                ),
            ],
            # Run to completion and fail the deployment if it fails.
            attach=True,
            logs=True,
            must_run=False,
            restart="no",
            opts=child(self, depends_on=opts.depends_on if opts else None),
        )
        self.register_outputs({"name": topo.job_name})
