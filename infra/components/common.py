"""Pieces every container of the stack shares: labels, health checks, uploads, sizes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker

from infra.durations import go_duration
from infra.settings import StackSettings
from infra.topology import Topology

LABEL_STACK = "elizadb.stack"
# The identity of the state that made a resource (elizadb/local/identity.py): the result of the
# stack's `random.RandomUuid` of this name, kept in Pulumi state or in the local state file.
LABEL_STACK_ID = "elizadb.stack-id"
STACK_ID_RESOURCE = "stack-id"


@dataclass(frozen=True)
class HostResources:
    """What one Docker host holds for the stack: its provider (None: the default one, for a
    stack that declares no host), the image built there, the stack network there and the
    backup volume there."""

    host: str
    provider: docker.Provider | None
    image: pulumi.Output[str]
    network: docker.Network
    backup_volume: docker.Volume

    def placed(
        self, name: str, opts: pulumi.ResourceOptions | None
    ) -> tuple[str, pulumi.ResourceOptions]:
        """A component's name and options on this host: its resources inherit the host's
        provider, and on a declared host the host is part of its name (and so of its children's).

        Pulumi does not replace a resource whose provider alone changed when the new provider's
        DiffConfig asks for no replacement, and pulumi-docker's asks for none when `host`
        changes: a part placed on another host would stay where it runs while the state said it
        had moved. Named after its host, a moved part is a new resource on its new host and the
        old one is deleted on its old host; the protected data volume of a PostgreSQL node or an
        etcd member makes `pulumi preview` fail instead (a data volume does not move). The alias
        takes over a part deployed before its host was in its name."""
        if self.provider is None:
            return name, opts or pulumi.ResourceOptions()
        mine = pulumi.ResourceOptions(providers=[self.provider], aliases=[pulumi.Alias(name=name)])
        return f"{name}-{self.host}", pulumi.ResourceOptions.merge(opts, mine)


@dataclass(frozen=True)
class StackInputs:
    """What the containers of a stack are built from: settings, names, what each host holds,
    and the secrets the stack component made first."""

    settings: StackSettings
    topo: Topology
    hosts: Mapping[str, HostResources]
    ca_cert_pem: pulumi.Output[str]
    server_cert_pem: pulumi.Output[str]
    server_key_pem: pulumi.Output[str]
    passwords: dict[str, pulumi.Output[str]]
    salt_seed: pulumi.Output[str]
    stack_id: pulumi.Output[str]

    def on(self, host: str) -> HostResources:
        return self.hosts[host]


LABEL_ROLE = "elizadb.role"
LABEL_NODE = "elizadb.node"


def stack_filter(stack: str) -> dict[str, str | list[str] | bool]:
    """The Docker API filter that lists one stack's containers, volumes or networks."""
    return {"label": f"{LABEL_STACK}={stack}"}


def _identity(
    settings: StackSettings, stack_id: pulumi.Output[str], **more: str
) -> list[tuple[str, str | pulumi.Output[str]]]:
    values: dict[str, str | pulumi.Output[str]] = {
        LABEL_STACK: settings.stack,
        LABEL_STACK_ID: stack_id,
        **{f"elizadb.{k}": v for k, v in more.items()},
    }
    return sorted(values.items())


def labels(args: StackInputs, role: str, node: str) -> list[docker.ContainerLabelArgs]:
    identity = _identity(args.settings, args.stack_id, role=role, node=node)
    return [docker.ContainerLabelArgs(label=k, value=v) for k, v in identity]


def volume_labels(
    settings: StackSettings, stack_id: pulumi.Output[str], **more: str
) -> list[docker.VolumeLabelArgs]:
    return [
        docker.VolumeLabelArgs(label=k, value=v) for k, v in _identity(settings, stack_id, **more)
    ]


def network_labels(
    settings: StackSettings, stack_id: pulumi.Output[str]
) -> list[docker.NetworkLabelArgs]:
    return [docker.NetworkLabelArgs(label=k, value=v) for k, v in _identity(settings, stack_id)]


# How long a container may take to stop cleanly before it is killed, on delete and replace as on
# `docker stop`. The provider stops a container it deletes with `destroy_grace_seconds` (default
# 0: SIGKILL right after the stop signal), not with `stop_timeout`: containers set both to these.
# A PostgreSQL fast shutdown writes a shutdown checkpoint of up to max_wal_size of dirty data.
DATABASE_GRACE_SECONDS = 120
# The backup agent lets a running pgBackRest backup stop cleanly.
BACKUP_GRACE_SECONDS = 120
POOLER_GRACE_SECONDS = 30


def healthcheck(test: list[str]) -> docker.ContainerHealthcheckArgs:
    return docker.ContainerHealthcheckArgs(
        tests=["CMD", *test],
        # In Go's Duration.String() form, as the provider reads them back (no perpetual diff).
        interval=go_duration(5),
        timeout=go_duration(3),
        retries=5,
        start_period=go_duration(120),
    )


def upload(path: str, content: str | pulumi.Output[str]) -> docker.ContainerUploadArgs:
    return docker.ContainerUploadArgs(file=path, content=content)


def secret_upload(path: str, content: pulumi.Output[str]) -> docker.ContainerUploadArgs:
    """Upload content is kept in Pulumi state: keys and passwords must be secret inputs."""
    return docker.ContainerUploadArgs(file=path, content=pulumi.Output.secret(content))


# Container inputs the provider would change in place (`docker update`). Podman's Docker API
# has no update endpoint, and the local deploy replaces the container: a change replaces it
# under `pulumi up` too, the same on every engine.
UPDATED_IN_PLACE = ["memory", "memorySwap", "restart"]


# A one-shot job: the provider waits for the container to stop and keeps its exit code and log
# (the program fails the deploy on a code other than 0: bootstrap.py `succeeded`). Every input
# of a container is replace-on-change, so a job whose inputs change runs again.
JOB_RUN: dict[str, Any] = {"attach": True, "logs": True, "must_run": False, "restart": "no"}


def container_options(
    parent: pulumi.Resource, opts: pulumi.ResourceOptions | None
) -> pulumi.ResourceOptions:
    """A container's options: a child of its component, after what the component waits for."""
    return child(
        parent,
        depends_on=opts.depends_on if opts else None,
        replace_on_changes=UPDATED_IN_PLACE,
    )


# Every volume has a fixed name: one that had to be replaced would collide with itself unless the
# old one goes first. Its labels are written when it is made and never changed: a volume made
# before stack ids existed keeps its labels rather than being replaced (it may be protected),
# as the local deploy, which never touches an existing volume, does.
VOLUME_OPTIONS: dict[str, Any] = {"delete_before_replace": True, "ignore_changes": ["labels"]}


def child(parent: pulumi.Resource, **kwargs: object) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, **kwargs)  # type: ignore[arg-type]
