"""Backups of a deployed stack: pgBackRest backups through the stack's backup agent
(infra/components/backup.py, image/backup.sh), the catalog of what the repository holds, the WAL
archive check, and pg_dump logical exports.

The catalog is read with `pgbackrest info --output=json`: from the agent when it runs, otherwise
from a one-shot job on the backup volume (a stack that is down, or gone, can still be restored).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker

from elizadb.engine import Target, VolumeMount, exec_in, is_running, on
from elizadb.errors import UsageError
from elizadb.local.apply import REMOTE_IMAGE
from elizadb.local.capture import Declaration
from elizadb.ops.backup_engine import BackupError, running_primary, stack_job
from infra.components.backup import agent_name
from infra.components.image import image_fingerprint
from infra.render.pgbackrest import CONF_PATH, render_agent_conf
from infra.settings import StackSettings
from infra.topology import BACKUP_MOUNT, topology

BACKUP_TYPES = ("full", "diff", "incr")


@dataclass(frozen=True)
class Backup:
    label: str
    type: str  # full | diff | incr
    started: dt.datetime
    stopped: dt.datetime
    size: int  # bytes of the database as restored
    repo_size: int  # bytes this backup stored in the repository (compressed, new files only)
    wal_start: str  # the WAL segments a restore of this backup needs at least
    wal_stop: str
    lsn_start: str
    lsn_stop: str
    prior: str | None  # the backup an incremental or differential one builds on
    timeline: int

    @property
    def seconds(self) -> float:
        return (self.stopped - self.started).total_seconds()


@dataclass(frozen=True)
class Catalog:
    status: str
    backups: tuple[Backup, ...]  # oldest first
    archive_min: str | None
    archive_max: str | None

    @property
    def recoverable_from(self) -> dt.datetime | None:
        """The earliest time a point-in-time restore can reach: the end of the oldest backup."""
        return min((b.stopped for b in self.backups), default=None)

    def newest(self, kind: str | None = None) -> Backup | None:
        found = [b for b in self.backups if kind is None or b.type == kind]
        return found[-1] if found else None


def _utc(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def parse_info(text: str) -> Catalog:
    """The catalog of one stanza from `pgbackrest info --output=json`."""
    try:
        stanzas = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BackupError(f"pgbackrest info did not print JSON ({exc}): {text[:200]!r}") from None
    if not stanzas:
        return Catalog("no stanza", (), None, None)
    stanza = stanzas[0]
    backups = []
    for b in stanza.get("backup") or []:
        backups.append(
            Backup(
                label=b["label"],
                type=b["type"],
                started=_utc(b["timestamp"]["start"]),
                stopped=_utc(b["timestamp"]["stop"]),
                size=int(b["info"]["size"]),
                repo_size=int(b["info"]["repository"]["delta"]),
                wal_start=b["archive"]["start"],
                wal_stop=b["archive"]["stop"],
                lsn_start=(b.get("lsn") or {}).get("start", ""),
                lsn_stop=(b.get("lsn") or {}).get("stop", ""),
                prior=b.get("prior"),
                timeline=int(b["archive"]["start"][:8], 16),
            )
        )
    backups.sort(key=lambda b: (b.started, b.label))
    archives = stanza.get("archive") or []
    mins = [a["min"] for a in archives if a.get("min")]
    maxs = [a["max"] for a in archives if a.get("max")]
    return Catalog(
        status=(stanza.get("status") or {}).get("message", "unknown"),
        backups=tuple(backups),
        archive_min=min(mins) if mins else None,
        archive_max=max(maxs) if maxs else None,
    )


def image_ref(declaration: Declaration) -> str:
    return str(next(r.inputs["name"] for r in declaration.of_type(REMOTE_IMAGE)))


def stack_image(settings: StackSettings) -> str:
    """The image tag the stack declares, without running the program (no state is touched)."""
    return f"{settings.image.repository}:{image_fingerprint(settings.image.base)}"


def _agent(client: Target, settings: StackSettings) -> str:
    name = agent_name(topology(settings))
    if not is_running(client, name):
        raise BackupError(
            f"the backup agent {name} is not running; deploy the stack first (`elizadb up "
            f"--stack {settings.stack}`)"
        )
    return name


def read_catalog(client: Target, settings: StackSettings, image: str | None = None) -> Catalog:
    """From the agent when it runs; otherwise from a job on the backup volume (needs `image`)."""
    topo = topology(settings)
    name = agent_name(topo)
    if is_running(client, name):
        result = exec_in(client, name, ["elizadb-backup", "info"])
        if result.code != 0:
            raise BackupError(f"pgbackrest info failed in {name}:\n{result.tail()}")
        return parse_info(result.stdout)
    if image is None:
        raise BackupError(f"the backup agent {name} is not running; deploy the stack first")
    # The repository is on the agent's host (that of the pooler, on several hosts).
    client = on(client, name)
    try:
        client.volumes.get(topo.backup_volume_name)
    except docker.errors.NotFound:
        raise BackupError(
            f"stack {settings.stack} has no backup volume ({topo.backup_volume_name})"
        ) from None
    out = stack_job(
        client,
        image=image,
        name=f"{topo.prefix}-backup-info",
        stack=settings.stack,
        command=["backup", "info"],
        mounts=[VolumeMount(topo.backup_volume_name, BACKUP_MOUNT, read_only=True)],
        files={CONF_PATH: render_agent_conf(settings, topo)},
        stdout_only=True,
        timeout_s=120,
    )
    return parse_info(out)


def check_archiving(client: Target, settings: StackSettings) -> str:
    """`pgbackrest check` on the current primary: it switches to a new WAL segment and waits
    until that segment is in the repository, so everything committed before is archived."""
    result = exec_in(client, _agent(client, settings), ["elizadb-backup", "check"])
    if result.code != 0:
        raise BackupError(f"WAL archiving does not work:\n{result.tail()}")
    return result.stderr + result.stdout


def take_backup(client: Target, settings: StackSettings, kind: str) -> tuple[Backup, str]:
    """One backup now, on the current primary; waits for a scheduled one that is running.
    Returns the new backup and pgBackRest's log."""
    if kind not in BACKUP_TYPES:
        raise UsageError(f"backup type {kind!r}: use one of {', '.join(BACKUP_TYPES)}")
    agent = _agent(client, settings)
    before = {b.label for b in read_catalog(client, settings).backups}
    result = exec_in(client, agent, ["elizadb-backup", "run", kind])
    if result.code != 0:
        raise BackupError(f"the {kind} backup failed:\n{result.tail()}")
    made = [b for b in read_catalog(client, settings).backups if b.label not in before]
    if not made:
        raise BackupError(
            f"pgBackRest reported success but no new backup is listed:\n{result.tail()}"
        )
    return made[-1], result.stderr + result.stdout


def agent_status(client: Target, settings: StackSettings) -> dict[str, str]:
    """The schedule's last attempt (empty when none yet, or when the agent is not running)."""
    name = agent_name(topology(settings))
    if not is_running(client, name):
        return {}
    result = exec_in(client, name, ["elizadb-backup", "status"])
    pairs = (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return dict(pairs)


# -- reports ---------------------------------------------------------------------------------
def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError


def render_table(catalog: Catalog, status: dict[str, str] | None = None) -> str:
    header = (
        "LABEL",
        "TYPE",
        "STARTED (UTC)",
        "DURATION",
        "DB SIZE",
        "STORED",
        "WAL START",
        "WAL STOP",
    )
    rows = [header] + [
        (
            b.label,
            b.type,
            b.started.strftime("%Y-%m-%d %H:%M:%S"),
            f"{b.seconds:.0f}s",
            human_bytes(b.size),
            human_bytes(b.repo_size),
            b.wal_start,
            b.wal_stop,
        )
        for b in catalog.backups
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if not catalog.backups:
        lines.append("(no backups yet)")
    lines.append("")
    lines.append(f"stanza status: {catalog.status}")
    lines.append(f"WAL archive:   {catalog.archive_min or '-'} .. {catalog.archive_max or '-'}")
    start = catalog.recoverable_from
    lines.append(
        "restorable:    "
        + (
            f"from {start:%Y-%m-%d %H:%M:%S} UTC to the newest archived WAL"
            if start
            else "nothing yet"
        )
    )
    if status:
        when = _utc(int(status.get("last_attempt", "0")))
        kind, result = status.get("last_type", "?"), status.get("last_result", "?")
        lines.append(f"schedule:      last {kind} backup at {when:%Y-%m-%d %H:%M:%S} UTC: {result}")
    return "\n".join(lines)


def catalog_json(catalog: Catalog, status: dict[str, str] | None = None) -> dict[str, Any]:
    def plain(b: Backup) -> dict[str, Any]:
        data = asdict(b)
        data["started"], data["stopped"] = b.started.isoformat(), b.stopped.isoformat()
        return data

    start = catalog.recoverable_from
    return {
        "status": catalog.status,
        "backups": [plain(b) for b in catalog.backups],
        "archive": {"min": catalog.archive_min, "max": catalog.archive_max},
        "restorableFrom": start.isoformat() if start else None,
        "schedule": status or {},
    }


# -- logical export --------------------------------------------------------------------------
@dataclass(frozen=True)
class DumpResult:
    path: Path
    bytes: int
    seconds: float
    node: str


def dump(client: Target, settings: StackSettings, out: Path) -> DumpResult:
    """`pg_dump -Fc` of the Eliza database from the current primary, streamed into `out` (on a
    stack on several hosts, from the primary's host through its engine).

    It runs inside the primary's container as the postgres superuser (peer authentication over
    the local socket). A superuser is needed, not just a role that may read every table: every
    Eliza table has FORCE ROW LEVEL SECURITY, and pg_dump sets row_security = off, so that a role
    subject to a policy gets an error instead of a silently partial dump. Only superusers and
    BYPASSRLS roles are exempt, and no application role of the stack holds BYPASSRLS
    (infra/roles.py): granting it to one just for exports would widen what that role can always
    read."""
    topo = topology(settings)
    primary = running_primary(client, topo)
    if primary is None:
        raise BackupError(f"no node of stack {settings.stack} accepts writes; is it up?")
    out = out.expanduser()
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file name")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist")
    api = on(client, primary.name).api
    started = time.monotonic()
    exec_id = api.exec_create(
        primary.name,
        ["pg_dump", "-Fc", "-d", settings.database],
        user="postgres",
        stdout=True,
        stderr=True,
    )["Id"]
    partial = out.with_name(f".{out.name}.partial")
    errors: list[bytes] = []
    written = 0
    try:
        with open(partial, "wb") as handle:
            for chunk_out, chunk_err in api.exec_start(exec_id, stream=True, demux=True):
                if chunk_out:
                    handle.write(chunk_out)
                    written += len(chunk_out)
                if chunk_err:
                    errors.append(chunk_err)
        code = api.exec_inspect(exec_id).get("ExitCode")
        if code != 0:
            message = b"".join(errors).decode(errors="replace").strip()
            raise BackupError(f"pg_dump failed on {primary.name} (exit code {code}): {message}")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return DumpResult(out, written, time.monotonic() - started, primary.name)
