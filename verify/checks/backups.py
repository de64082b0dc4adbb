"""backups: the backup volume is mounted on the primary and writable by the backup tooling, and
the primary's WAL archiving works.

pgBackRest runs inside the server's container as the server's OS user, so what the server can
write, pgBackRest can write. A stack whose repository lives on a remote pgBackRest repository
host publishes backupMount "": the volume checks do not apply to it, the archiving check does.
Deeper checks (a recent backup, a restore) come with the backup issue.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass

import psycopg

from verify import server_files
from verify.context import Context, primary_session, row, scalar
from verify.model import Check, Findings, Outcome


def check_volume(ctx: Context) -> Outcome:
    """The backup mount (output backupMount) on the primary is a directory and a read-write mount
    point of its own (a volume), not a folder that dies with the container."""
    seen = Findings()
    path = ctx.outputs.backup_mount
    conn = primary_session(ctx, seen)
    if conn is None:
        return seen.outcome("", "")
    found = conn.execute("SELECT isdir FROM pg_stat_file(%s, true)", (path,)).fetchone()
    if found is None or found[0] is None:
        seen.problem(f"{path} does not exist on the primary")
    elif not found[0]:
        seen.problem(f"{path} on the primary is not a directory")
    else:
        mountinfo = scalar(conn, "SELECT pg_read_file('/proc/self/mountinfo')")
        mount = server_files.mount_point(mountinfo, path)
        if mount is None:
            seen.problem(
                f"{path} is not a mount point on the primary: backups would be "
                "written into the container and lost with it"
            )
        elif "rw" not in mount["options"].split(","):
            seen.problem(f"{path} is mounted read-only ({mount['options']})")
        else:
            volume = ctx.outputs.backup_volume
            named = f"volume {volume}" if volume and volume in mount["root"] else mount["root"]
            seen.note(f"{named}, {mount['fstype']}")
    return seen.outcome(
        f"{path} is a read-write mount",
        f"mount the stack's backup volume at {path} in the primary's container "
        "(`elizadb up` / `pulumi up` declare it)",
    )


def check_writable(ctx: Context) -> Outcome:
    """The server's OS user (the one pgBackRest runs as) can create a file in the backup volume:
    a probe file is written with COPY ... TO, read back, and removed."""
    seen = Findings()
    conn = primary_session(ctx, seen)
    if conn is None:
        return seen.outcome("", "")
    path = f"{ctx.outputs.backup_mount}/.elizadb-verify-{uuid.uuid4().hex}"
    try:
        server_files.write_file(conn, path, "elizadb verify backup probe")
        size = server_files.file_size(conn, path)
        if not size:
            seen.problem(f"the probe file {path} was written but reads back empty")
    except psycopg.Error as err:  # any refusal is the finding
        seen.problem(f"the server cannot write {path}: {str(err).strip()}")
    finally:
        if server_files.file_size(conn, path) is not None:
            server_files.remove_file(conn, path)
            if server_files.file_size(conn, path) is not None:
                seen.problem(f"the probe file {path} could not be removed")
    return seen.outcome(
        f"{ctx.outputs.backup_mount} writable by the server's OS user (probe written and removed)",
        "give the postgres user ownership of the volume (chown -R postgres:postgres "
        f"{ctx.outputs.backup_mount} in the container) and check that it is not full",
    )


@dataclass(frozen=True)
class Archiver:
    """The primary's archive settings and its pg_stat_archiver row."""

    mode: str
    command: str
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime.datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime.datetime | None


ARCHIVER_QUERY = """
    SELECT current_setting('archive_mode'), current_setting('archive_command'),
           archived_count, last_archived_wal, last_archived_time,
           failed_count, last_failed_wal, last_failed_time
    FROM pg_stat_archiver
"""
ARCHIVING_FIX = (
    "read the primary's PostgreSQL log (the container's log) for archive-push errors, and "
    "`elizadb backups` and the backup agent's log for the repository's state; once the cause is "
    "fixed, the server retries the same segment by itself"
)
SETTINGS_FIX = (
    "redeploy the stack (`elizadb up` / `pulumi up` set archive_mode = on and archive_command); "
    "a change of archive_mode takes a restart of the server"
)


def _when(at: datetime.datetime) -> str:
    return f"{at.astimezone(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"


def archive_tool(command: str) -> str:
    """What archive_command runs, as a reader knows it: "pgBackRest archive-push"."""
    words = command.split()
    program = words[0].rsplit("/", 1)[-1] if words else ""
    if program == "pgbackrest":
        return "pgBackRest " + next((w for w in words[1:] if w.startswith("archive-")), "")
    return program


def judge_archiving(a: Archiver) -> Outcome:
    """Fail when archiving is off or its newest attempt failed; else pass, naming the tool, the
    count and the last segment archived."""
    seen = Findings()
    fix = ARCHIVING_FIX
    if a.mode not in ("on", "always"):
        seen.problem(f"archive_mode is {a.mode!r} on the primary: no WAL is archived")
        fix = SETTINGS_FIX
    elif a.command.strip() in ("", "(disabled)"):
        seen.problem(f"archive_command is {a.command!r} on the primary: no WAL is archived")
        fix = SETTINGS_FIX
    if a.last_archived_wal and a.last_archived_time:
        seen.note(f"the last {a.last_archived_wal} at {_when(a.last_archived_time)}")
    else:
        seen.note(
            "none yet: the counts are this server's own, so a primary promoted after a "
            "failover starts at zero"
        )
    # The archiver retries a failed segment until it succeeds, so a failure older than the last
    # success is history; a newer one is the state now.
    if a.failed_count and a.last_failed_time:
        failed_at = _when(a.last_failed_time)
        if a.last_archived_time is None or a.last_failed_time > a.last_archived_time:
            last = (
                f"{a.last_archived_wal} at {_when(a.last_archived_time)}"
                if a.last_archived_time
                else "none yet"
            )
            seen.problem(
                f"archiving {a.last_failed_wal} failed at {failed_at} ({a.failed_count} failed "
                f"attempt(s) in all; last archived: {last})"
            )
        else:
            seen.note(f"{a.failed_count} earlier failed attempt(s), the last at {failed_at}")
    return seen.outcome(
        f"archiving with {archive_tool(a.command)}: {a.archived_count} segment(s) archived", fix
    )


def check_archiving(ctx: Context) -> Outcome:
    """The primary archives its WAL: archive_mode is on, archive_command is set, and the newest
    archive attempt (pg_stat_archiver) succeeded, so that a backup can be restored up to a
    recent moment."""
    seen = Findings()
    conn = primary_session(ctx, seen)
    if conn is None:
        return seen.outcome("", "")
    # verify connects as the outputs' superuser; in PostgreSQL 17 even a role without grants
    # may read these settings and pg_stat_archiver (measured), so no privilege is missing here.
    return judge_archiving(Archiver(*row(conn, ARCHIVER_QUERY)))


CHECKS = (
    Check("backups.volume", check_volume, needs_backup_mount=True),
    Check(
        "backups.writable",
        check_writable,
        writes="a probe file in the backup volume",
        needs_backup_mount=True,
    ),
    Check("backups.archiving", check_archiving),
)
