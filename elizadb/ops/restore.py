"""Restore a stack of the builtin engine from its pgBackRest repository: to a point in time or to
the newest archived WAL, in place (the stack's data is replaced) or into a new stack (steps 2 to 4
here, after elizadb/ops/restore_into.py has copied the repository into the new stack's backup
volume, so that the two never write into one repository).

The steps, each a plain container operation on the stack's own image:
  1. in place: archive the current WAL segment (`pgbackrest check`), then remove every container
     of the stack (servers are stopped cleanly; data volumes stay);
  2. `pgbackrest restore` into the data volume of the node that is to be primary; every other
     node's data directory is removed, so that its entrypoint clones the new primary (the node
     created as "primary" would run initdb on an empty directory instead, so when it is not the
     one restored it is restored as a standby);
  3. start that node alone: PostgreSQL replays archived WAL up to the target and promotes itself
     onto a new timeline; then the recovery target that pgBackRest wrote into
     postgresql.auto.conf is removed again (clones and rewinds copy that file, and a standby
     honouring a stale target would stop there and promote itself);
  4. into a new stack: the superuser gets the new stack's password (the restored catalog carries
     the source stack's), so that its bootstrap job can log in;
  5. `elizadb up`: bootstrap job (roles, slots), replicas clone, pooler, backup agent;
  6. a full backup, the first of the new timeline.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from elizadb.engine import (
    Target,
    VolumeMount,
    connect,
    container_state,
    explain,
    in_recovery,
    is_running,
    on,
    psql,
    wait_until,
)
from elizadb.errors import UsageError
from elizadb.local import deploy
from elizadb.local.apply import CONTAINER, Applier
from elizadb.local.capture import Declaration
from elizadb.ops.backup import Catalog, check_archiving, image_ref, read_catalog, take_backup
from elizadb.ops.backup_engine import BackupError, running_primary, stack_job
from infra.components.backup import agent_name
from infra.render.pgbackrest import CONF_PATH, render_pgbackrest_conf
from infra.render.scram import scram_verifier
from infra.roles import SUPERUSER
from infra.settings import StackSettings
from infra.topology import BACKUP_MOUNT, DATA_MOUNT, Node, Topology, topology

Progress = Callable[[str], None]
# What `pgbackrest restore` may write into postgresql.auto.conf; none of it may outlive recovery.
RECOVERY_PARAMETERS = (
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "restore_command",
)


@dataclass(frozen=True)
class RecoveryTarget:
    """A point in time (UTC), or None for the end of the archived WAL."""

    time: dt.datetime | None = None

    def pgbackrest_args(self) -> list[str]:
        if self.time is None:
            return ["--type=default"]
        stamp = self.time.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        # Exclusive: exactly the transactions that committed before the target.
        return ["--type=time", f"--target={stamp}", "--target-action=promote", "--target-exclusive"]

    def describe(self) -> str:
        return "the newest archived WAL" if self.time is None else f"{self.time.isoformat()}"


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time with its offset (`2025-05-01T12:00:00Z`, `2025-05-01 12:00:00+02:00`)."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--to-time {text!r}: not an ISO 8601 time; write e.g. 2025-05-01T12:00:00Z"
        ) from None
    if value.tzinfo is None:
        raise UsageError(
            f"--to-time {text!r}: give the time zone (e.g. a trailing Z for UTC, or +02:00)"
        )
    return value.astimezone(dt.UTC)


def check_target(target: RecoveryTarget, catalog: Catalog, now: dt.datetime) -> None:
    """Refuse what the repository cannot reach, before anything is stopped."""
    start = catalog.recoverable_from
    if start is None:
        raise BackupError("the repository holds no backup to restore from (elizadb backup)")
    if target.time is None:
        return
    # Backup times have one-second resolution; a target in the second a backup ended may lie
    # before that backup's consistent point.
    earliest = start + dt.timedelta(seconds=1)
    if target.time < earliest:
        raise UsageError(
            f"--to-time {target.time.isoformat()}: before the oldest backup ends; the earliest "
            f"point it can reach is {earliest.isoformat()}"
        )
    if target.time >= now:
        raise UsageError(
            f"--to-time {target.time.isoformat()}: in the future (now {now.isoformat()})"
        )


Action = Literal["restore", "restore-standby", "clear"]


@dataclass(frozen=True)
class NodeStep:
    node: Node
    action: Action


def plan(topo: Topology, target: Node) -> list[NodeStep]:
    """What happens to each node's data: the target is restored; replicas are cleared so their
    entrypoint clones the new primary; the node created as "primary" (whose entrypoint would run
    initdb on an empty directory), when it is not the target, is restored as a standby."""
    steps = []
    for node in topo.nodes:
        if node == target:
            steps.append(NodeStep(node, "restore"))
        elif node.role == "primary":
            steps.append(NodeStep(node, "restore-standby"))
        else:
            steps.append(NodeStep(node, "clear"))
    return steps


@dataclass
class RestoreReport:
    stack: str
    node: str
    target: str
    backup_set: str = ""
    restored_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    new_backup: str = ""


# -- steps -----------------------------------------------------------------------------------
def declared_primary(declaration: Declaration, topo: Topology) -> Node:
    name = declaration.outputs["primary"]["name"]
    return next(n for n in topo.nodes if n.name == name)


def _apply_without_containers(
    client: Target,
    declaration: Declaration,
    stack: str,
    progress: Progress,
    keep: str | None = None,
) -> None:
    """Network, volumes and image as declared, and no container but `keep` (a container name)."""
    partial = Declaration(
        resources=[
            r
            for r in declaration.resources
            if r.typ != CONTAINER or (keep is not None and r.inputs.get("name") == keep)
        ],
        outputs=declaration.outputs,
        secret_outputs=declaration.secret_outputs,
    )
    Applier(client, stack, progress).apply(partial)


def restore_job(
    client: Target,
    settings: StackSettings,
    topo: Topology,
    image: str,
    node: Node,
    command: list[str],
    tls: Mapping[str, str] | None = None,
) -> str:
    """A job on `node`'s data volume, on the node's host. `tls`: the files by which a node of a
    stack on several hosts reaches the repository host (path to content)."""
    return stack_job(
        on(client, node.name),
        image=image,
        name=f"{node.name}-restore",
        stack=settings.stack,
        node=node.name,
        command=["backup", *command],
        mounts=[
            VolumeMount(topo.volume_name(node), DATA_MOUNT),
            VolumeMount(topo.backup_volume_name, BACKUP_MOUNT, read_only=True),
        ],
        files={CONF_PATH: render_pgbackrest_conf(settings, topo), **(tls or {})},
    )


def _restore_nodes(
    client: Target,
    settings: StackSettings,
    image: str,
    target_node: Node,
    target: RecoveryTarget,
    delta: bool,
    report: RestoreReport,
    progress: Progress,
) -> None:
    topo = topology(settings)
    delta_args = ["--delta"] if delta else []
    for step in plan(topo, target_node):
        if step.action == "clear":
            progress(f"clearing {step.node.name}'s data: it clones the restored primary")
            restore_job(client, settings, topo, image, step.node, ["clear-data"])
        elif step.action == "restore-standby":
            progress(f"restoring {step.node.name} as a standby of {target_node.name}")
            restore_job(
                client, settings, topo, image, step.node, ["restore", *delta_args, "--type=standby"]
            )
    progress(f"restoring {target_node.name} to {target.describe()}")
    started = time.monotonic()
    log = restore_job(
        client,
        settings,
        topo,
        image,
        target_node,
        ["restore", *delta_args, *target.pgbackrest_args()],
    )
    report.seconds["restore"] = time.monotonic() - started
    report.backup_set = backup_set_of(log)


def _recover(
    client: Target,
    declaration: Declaration,
    settings: StackSettings,
    node: Node,
    report: RestoreReport,
    progress: Progress,
    timeout_s: float,
) -> None:
    """Start the restored node alone and wait until it has replayed to the target and promoted."""
    started = time.monotonic()
    progress(f"starting {node.name}: replaying archived WAL")
    _apply_without_containers(client, declaration, settings.stack, progress, keep=node.name)

    def promoted() -> bool:
        state = container_state(client, node.name)
        if not state.get("Running") or state.get("Restarting"):
            raise BackupError(f"{node.name} stopped during recovery: {explain(client, node.name)}")
        return in_recovery(client, node.name) is False

    wait_until(
        f"{node.name} promotion",
        promoted,
        timeout_s,
        on_timeout=lambda: explain(client, node.name),
    )
    report.seconds["recovery"] = time.monotonic() - started
    statements = [f"ALTER SYSTEM RESET {p}" for p in RECOVERY_PARAMETERS]
    result = psql(client, node.name, *statements)
    if result.code != 0:
        raise BackupError(f"could not clear the recovery settings on {node.name}:\n{result.tail()}")


def _set_superuser_password(client: Target, declaration: Declaration, node: Node) -> None:
    """The restored catalog carries the source stack's superuser password; the new stack's jobs
    log in with their own. Set as a SCRAM verifier (never the password itself), unlogged."""
    uri = declaration.outputs["connections"]["superuser"]
    password = unquote(urlsplit(uri).password or "")
    if not password:
        raise BackupError("the new stack's superuser password is not in its outputs")
    verifier = scram_verifier(password, SUPERUSER, secrets.token_hex(16))
    result = psql(
        client,
        node.name,
        "SET log_statement = 'none'",
        "SET log_min_duration_statement = -1",
        "SET log_min_error_statement = 'panic'",
        f"ALTER ROLE {SUPERUSER} PASSWORD '{verifier}'",
    )
    if result.code != 0:
        raise BackupError(f"could not set the superuser's password on {node.name}")


def _wait_archived(client: Target, node: Node, timeout_s: float = 120) -> None:
    """Wait until the new primary has archived everything ready, its timeline history first: a
    standby restored from the repository must find the new timeline there when it starts."""

    def nothing_ready() -> bool:
        result = psql(
            client,
            node.name,
            "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
        )
        return result.code == 0 and result.stdout.strip() == "0"

    wait_until(
        f"{node.name} WAL archiving",
        nothing_ready,
        timeout_s,
        on_timeout=lambda: explain(client, node.name),
    )


def finish(
    client: Target,
    settings: StackSettings,
    node: Node,
    report: RestoreReport,
    progress: Progress,
    project_dir: Path,
    backup_after: bool,
    archived_first: bool = True,
) -> RestoreReport:
    """`elizadb up` for the rest of the stack, then a full backup. The restored node has
    archived what it had to first, unless `archived_first` is False: on several hosts it
    archives through the backup agent, which `up` starts."""

    def archived() -> None:
        started = time.monotonic()
        _wait_archived(client, node)
        report.seconds["archive"] = time.monotonic() - started

    if archived_first:
        archived()
    progress("deploying the rest of the stack (bootstrap job, replicas, pooler, backup agent)")
    started = time.monotonic()
    deploy.up(settings, progress, project_dir)
    report.seconds["redeploy"] = time.monotonic() - started
    if not archived_first:
        archived()
    if backup_after:
        progress("a full backup of the new timeline")
        started = time.monotonic()
        backup, _ = take_backup(client, settings, "full")
        report.seconds["backup"] = time.monotonic() - started
        report.new_backup = backup.label
    return report


def recover_new_stack(
    client: Target,
    settings: StackSettings,
    declaration: Declaration,
    image: str,
    target: RecoveryTarget,
    report: RestoreReport,
    progress: Progress,
    recovery_timeout_s: float,
) -> None:
    """Steps 2 to 4 for a new builtin stack whose repository is in place
    (elizadb/ops/restore_into.py)."""
    node = declared_primary(declaration, topology(settings))
    _restore_nodes(client, settings, image, node, target, False, report, progress)
    _recover(client, declaration, settings, node, report, progress, recovery_timeout_s)
    _set_superuser_password(client, declaration, node)


# -- the two ways ----------------------------------------------------------------------------
def restore_in_place(
    settings: StackSettings,
    target: RecoveryTarget,
    progress: Progress,
    project_dir: Path,
    *,
    backup_after: bool = True,
    recovery_timeout_s: float = 3600,
) -> RestoreReport:
    """Replace the stack's data with its state at `target`. Destroys what was written after."""
    total = time.monotonic()
    client = connect()
    topo = topology(settings)
    declaration = deploy.declare_stack(settings)
    node = declared_primary(declaration, topo)
    running = running_primary(client, topo)
    if running is not None and running != node:
        raise UsageError(
            f"{running.name} accepts writes but the stack declares {node.name} as its primary; "
            f"run `elizadb up --stack {settings.stack}` first"
        )
    image = image_ref(declaration)
    catalog = read_catalog(client, settings, image)
    check_target(target, catalog, dt.datetime.now(dt.UTC))
    report = RestoreReport(settings.stack, node.name, target.describe())
    if running is not None and is_running(client, agent_name(topo)):
        progress("archiving the current WAL segment (pgbackrest check)")
        check_archiving(client, settings)
    progress(f"stopping every container of stack {settings.stack} (data volumes stay)")
    Applier(client, settings.stack, progress).down(delete_volumes=False)
    _apply_without_containers(client, declaration, settings.stack, progress)
    # Read again: the agent may have taken a backup since; now that it is stopped, nothing moves.
    catalog = read_catalog(client, settings, image)
    _restore_nodes(client, settings, image, node, target, True, report, progress)
    report.restored_bytes = restored_bytes(catalog, report.backup_set)
    _recover(client, declaration, settings, node, report, progress, recovery_timeout_s)
    finish(client, settings, node, report, progress, project_dir, backup_after)
    report.seconds["total"] = time.monotonic() - total
    return report


def backup_set_of(log: str) -> str:
    """The backup set a `pgbackrest restore` log names, "" when it names none."""
    match = re.search(r"restore backup set (\S+)", log)
    return match.group(1).rstrip(",") if match else ""


def restored_bytes(catalog: Catalog, label: str) -> int:
    return next((b.size for b in catalog.backups if b.label == label), 0)
