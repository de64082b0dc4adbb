"""The config job of a Patroni stack: a one-shot container that puts the stack's PostgreSQL
parameters into Patroni's dynamic configuration and rolls the restarts they need
(infra/patroni_roll.py, uploaded and run with the image's python3).

The nodes' patroni.yml carries no tunable parameter, so a changed elizadb:postgres.parameters
replaces no node: it changes this job's cluster.json, which replaces the job, which runs again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pulumi_docker as docker

from infra import patroni_roll
from infra.components.bootstrap import succeeded
from infra.components.common import (
    JOB_RUN,
    StackInputs,
    container_options,
    labels,
    secret_upload,
    upload,
)
from infra.components.ha import member_name, patroni_cluster
from infra.render import paths
from infra.render.patroni import API_USER
from infra.roles import SUPERUSER
from infra.topology import Topology

SCRIPT = f"{patroni_roll.ROLL_DIR}/patroni_roll.py"
# Each step of the roll (a member taking the values, a restart, the switchover) may take this
# long; the whole job is bounded by the deploy's wait for jobs.
STEP_TIMEOUT_SECONDS = 180


def roll_spec(args: StackInputs) -> str:
    """cluster.json: where the job reaches each member, and the parameters to apply. Sorted, so
    that only a real change replaces the job."""
    topo: Topology = args.topo
    members = []
    for node in topo.nodes:
        # One address per node (its own, or its host's), with both ports there.
        address, pg_port = topo.pg_endpoint(node)
        members.append(
            {
                "name": member_name(node),
                # On one host the certificate is checked against the node's name; across hosts
                # against the host's address (both are SANs of the node certificate).
                "tls_name": address if topo.multi_host else node.name,
                "address": address,
                "api_port": topo.api_endpoint(node)[1],
                "pg_port": pg_port,
            }
        )
    spec = {
        "database": args.settings.database,
        "members": members,
        "parameters": dict(sorted(patroni_cluster(args.settings, topo).parameters.items())),
        "synchronous": args.settings.synchronous,
        "timeout_s": STEP_TIMEOUT_SECONDS,
    }
    return json.dumps(spec, indent=1, sort_keys=True) + "\n"


class PatroniConfigJob(pulumi.ComponentResource):
    container: docker.Container
    succeeded: pulumi.Output[docker.Container]

    def __init__(
        self, name: str, args: StackInputs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        site = args.on(args.topo.pooler_host)
        name, placed = site.placed(name, opts)
        super().__init__("elizadb:index:PatroniConfigJob", name, None, placed)
        topo = args.topo
        secrets = pulumi.Output.all(args.passwords[API_USER], args.passwords[SUPERUSER]).apply(
            lambda pw: json.dumps({"api_user": API_USER, "api": pw[0], "superuser": pw[1]})
        )
        self.container = docker.Container(
            name,
            name=topo.config_job_name,
            image=site.image,
            entrypoints=["python3"],
            command=[SCRIPT],
            labels=labels(args, "job", topo.config_job_name),
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(
                    name=site.network.name, ipv4_address=topo.config_job_address
                )
            ],
            uploads=[
                upload(SCRIPT, Path(patroni_roll.__file__).read_text()),
                upload(patroni_roll.CLUSTER_JSON, roll_spec(args)),
                secret_upload(patroni_roll.SECRETS_JSON, secrets),
                upload(paths.CA_CERT, args.ca_cert_pem),
                # The node certificate is also a client certificate: Patroni asks for one (and
                # the password) on every endpoint that changes something.
                upload(paths.SERVER_CERT, args.server_cert_pem),
                secret_upload(paths.SERVER_KEY_UPLOAD, args.server_key_pem),
            ],
            **JOB_RUN,
            opts=container_options(self, opts),
        )
        self.succeeded = succeeded(self.container, topo.config_job_name)
        self.register_outputs({"name": topo.config_job_name})
