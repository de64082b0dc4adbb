"""The bootstrap job: a one-shot container that applies bootstrap.sql (roles, database, pooler
auth function, replication slots), the sql/ migrations and then vector_indexes.sql (the HNSW
indexes of vector.operators) on the primary. Its uploads carry
everything it applies, so any change to them replaces the job and it runs again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker as docker

from infra.components.common import (
    JOB_RUN,
    StackInputs,
    container_options,
    labels,
    secret_upload,
    upload,
)
from infra.profiles import SQL_ROOT, sql_dir
from infra.render import paths
from infra.render.bootstrap import (
    REWIND,
    VECTOR_INDEXES_SQL,
    render_bootstrap_sql,
    render_vector_indexes_sql,
)
from infra.render.connections import render_pgpass
from infra.render.router import READ_WRITE_PORT
from infra.roles import ROLES, SUPERUSER
from infra.settings import MAX_EMBEDDING_DIMENSIONS
from infra.topology import Topology


def migration_files(directory: Path = SQL_ROOT) -> list[Path]:
    return sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))


class JobFailed(pulumi.RunError):
    """The job ran and exited non-zero: the deploy fails, with the job's log."""


def check_job_exit(name: str, exit_code: int | None, log: str | None) -> str:
    """The provider waits for an attached container to stop and records its exit code, but does
    not fail on it: the program does, so that `pulumi up` stops here, as `elizadb up` does."""
    if exit_code == 0:
        return name
    tail = "\n".join((log or "").rstrip().splitlines()[-40:])
    raise JobFailed(
        f"{name} failed with exit code {exit_code}; its log ends:\n{tail}\n"
        f"fix the cause, then run the deploy again (a changed migration or configuration re-runs "
        f"the job; to re-run it unchanged: `pulumi up --replace <the job's URN>` or "
        f"`elizadb migrate`)"
    )


def succeeded(job: docker.Container, name: str) -> pulumi.Output[docker.Container]:
    """The job container, once it is known to have exited 0; fails the deploy otherwise."""

    def check(result: list[Any]) -> docker.Container:
        check_job_exit(name, result[0], result[1])
        return job

    return pulumi.Output.all(job.exit_code, job.container_logs).apply(check)


def _server_env(topo: Topology) -> list[str]:
    """Where the job finds the read-write node. Under Patroni: the router's read-write port, the
    one way that stays on the leader across psql's `\\connect` (a reconnect to the node list
    may land on a replica still catching up). Otherwise every node with
    target_session_attrs=read-write: the job follows a failover by itself."""
    if topo.router_name:
        return [
            f"PGHOST={topo.router_name}",
            f"PGHOSTADDR={topo.router_address}",
            f"PGPORT={READ_WRITE_PORT}",
        ]
    return [
        f"PGHOST={','.join(n.name for n in topo.nodes)}",
        f"PGHOSTADDR={','.join(topo.pg_endpoint(n)[0] for n in topo.nodes)}",
        f"PGPORT={','.join(str(topo.pg_endpoint(n)[1]) for n in topo.nodes)}",
    ]


class BootstrapJob(pulumi.ComponentResource):
    container: docker.Container
    # The job container, known only once the job succeeded: what comes after it depends on this,
    # so nothing is created on top of a failed bootstrap and the deploy fails with its log.
    succeeded: pulumi.Output[docker.Container]

    def __init__(
        self, name: str, args: StackInputs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        site = args.on(args.topo.pooler_host)
        name, placed = site.placed(name, opts)
        super().__init__("elizadb:index:BootstrapJob", name, None, placed)
        settings, topo, passwords = args.settings, args.topo, args.passwords
        names = [SUPERUSER, *(r.name for r in (*ROLES, *settings.server_roles))]
        if settings.patroni:
            names.append(REWIND.name)
        secrets = pulumi.Output.all(args.salt_seed, *(passwords[n] for n in names))
        bootstrap_sql = secrets.apply(
            lambda v: render_bootstrap_sql(
                settings, topo, dict(zip(names, v[1:], strict=True)), v[0]
            )
        )
        pgpass = passwords[SUPERUSER].apply(lambda pw: render_pgpass([("*", SUPERUSER, pw)]))
        sslmode = "verify-full" if settings.tls.enabled else "disable"
        vector_indexes = render_vector_indexes_sql(settings)
        self.container = docker.Container(
            name,
            name=topo.job_name,
            image=site.image,
            command=["job"],
            envs=[
                f"ELIZADB_EMBEDDING_DIMS={settings.embedding_dimensions}",
                f"ELIZADB_EMBEDDING_MAX_DIMS={MAX_EMBEDDING_DIMENSIONS}",
                f"PGDATABASE={settings.database}",
                *_server_env(topo),
                f"PGSSLMODE={sslmode}",
                f"PGSSLROOTCERT={paths.CA_CERT}",
                "PGTARGETSESSIONATTRS=read-write",
                # The job runs before any standby exists: with synchronous replication on, its
                # commits would wait for one forever.
                "PGOPTIONS=-c synchronous_commit=local",
                f"PGUSER={SUPERUSER}",
            ],
            labels=labels(args, "job", topo.job_name),
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(
                    name=site.network.name, ipv4_address=topo.job_address
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
                # After the migrations: only the configured operators' HNSW indexes exist. A
                # changed elizadb:vector.operators changes this upload, so the job runs again.
                *([upload(VECTOR_INDEXES_SQL, vector_indexes)] if vector_indexes else []),
            ],
            **JOB_RUN,
            opts=container_options(self, opts),
        )
        self.succeeded = succeeded(self.container, topo.job_name)
        self.register_outputs({"name": topo.job_name})
