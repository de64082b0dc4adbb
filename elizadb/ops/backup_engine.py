"""What backups and restores need on top of the engine module (elizadb/engine.py): the node that
is primary now, and one-shot jobs on the stack's image that carry the stack's labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

import docker

from elizadb.engine import File, Target, VolumeMount, in_recovery, run_job
from elizadb.errors import ElizaDbError
from infra.components.common import LABEL_NODE, LABEL_ROLE, LABEL_STACK
from infra.topology import Node, Topology


class BackupError(ElizaDbError):
    """A backup, a restore or one of their jobs failed; the message carries the log's end."""


def running_primary(client: Target, topo: Topology) -> Node | None:
    """The node that accepts writes now, None when none does; more than one is an error."""
    primaries = [n for n in topo.nodes if in_recovery(client, n.name) is False]
    if len(primaries) > 1:
        raise BackupError(
            "more than one node accepts writes ("
            + ", ".join(n.name for n in primaries)
            + "); resolve that first (elizadb status)"
        )
    return primaries[0] if primaries else None


def stack_job(
    client: docker.DockerClient,
    *,
    stack: str,
    name: str,
    image: str,
    command: Sequence[str],
    mounts: Sequence[VolumeMount],
    files: dict[str, str],
    node: str = "",
    archive: tuple[str, IO[bytes]] | None = None,
    timeout_s: float = 3600,
    stdout_only: bool = False,
) -> str:
    """A one-shot job of `stack` (engine.run_job): labelled so that `elizadb down` removes a
    leftover of an interrupted run."""
    return run_job(
        client,
        image=image,
        name=name,
        labels={LABEL_STACK: stack, LABEL_ROLE: "backup-job", LABEL_NODE: node or name},
        command=command,
        mounts=mounts,
        files=[File(path, content) for path, content in files.items()],
        archive=archive,
        timeout_s=timeout_s,
        stdout_only=stdout_only,
    )
