"""Which state a stack's resources on the engine belong to.

Every container, volume and network of a stack carries the stack's id (a random UUID made once
and kept in the stack's state, `random.RandomUuid` under `pulumi up` too). Before a command
touches anything, it looks for the stack's resources on the engine: when some are there but the
state at hand did not make them — a second clone, another state folder, a lost state file — it
refuses, so that a new set of secrets never replaces a running stack's."""

from __future__ import annotations

from dataclasses import dataclass, field

import docker

from elizadb.errors import ElizaDbError
from elizadb.local.state import StateFile
from infra.components.common import (
    LABEL_STACK,
    LABEL_STACK_ID,
    STACK_ID_RESOURCE,
    stack_filter,
)

STACK_ID_KEY = f"random:index/randomUuid:RandomUuid::{STACK_ID_RESOURCE}"


class ForeignStackError(ElizaDbError):
    """The engine holds the stack's resources, made with other state than this one."""

    exit_code = 2


@dataclass
class Found:
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.containers or self.volumes or self.networks)

    def describe(self) -> str:
        parts = [
            f"{len(items)} {kind} ({', '.join(sorted(items)[:4])}{', ...' if len(items) > 4 else ''})"
            for kind, items in (
                ("container(s)", self.containers),
                ("volume(s)", self.volumes),
                ("network(s)", self.networks),
            )
            if items
        ]
        return ", ".join(parts)


def state_stack_id(state: StateFile) -> str | None:
    entry = state.data["resources"].get(STACK_ID_KEY)
    return str(entry["outputs"]["result"]) if entry else None


def find_stack(client: docker.DockerClient, stack: str) -> Found:
    found = Found()
    label = stack_filter(stack)
    for container in client.containers.list(all=True, filters=label):
        found.containers.append(str(container.name))
        found.ids.add(container.labels.get(LABEL_STACK_ID, ""))
    for volume in client.volumes.list(filters=label):
        found.volumes.append(str(volume.name))
        found.ids.add((volume.attrs.get("Labels") or {}).get(LABEL_STACK_ID, ""))
    for network in client.networks.list(filters=label):
        found.networks.append(str(network.name))
        found.ids.add((network.attrs.get("Labels") or {}).get(LABEL_STACK_ID, ""))
    return found


def check_owned(client: docker.DockerClient, stack: str, state: StateFile) -> None:
    """Raise ForeignStackError unless every resource of `stack` on the engine was made with
    `state` (resources made before stack ids existed count as ours when the state is not new)."""
    found = find_stack(client, stack)
    if not found:
        return
    ours = state_stack_id(state)
    fresh = not state.data["resources"]
    labelled = found.ids - {""}
    if not fresh and (ours is None or labelled <= {ours}):
        return  # ours, or made before stack ids existed, by the state that holds its secrets
    made_by = f"stack id {', '.join(sorted(labelled))}" if labelled else "no stack id"
    have = f"stack id {ours}" if ours else "no state for it"
    raise ForeignStackError(
        f"stack {stack!r} already exists on this container engine ({found.describe()}; "
        f"{made_by}), but the state in {state.directory} has {have}: going on would make new "
        f"secrets and replace its containers. Nothing was changed. Use the state that made it: "
        f"in the checkout that deployed it run `elizadb state export --stack {stack} --out FILE`, "
        f"then here `elizadb state import --from FILE` (or point --state-dir / ELIZADB_STATE_DIR "
        f"at that state folder). If that stack is abandoned, remove its containers and "
        f"volumes with `docker` (label {LABEL_STACK}={stack}) first"
    )
