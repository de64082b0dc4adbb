"""backups: the backup volume is mounted on the primary and writable by the backup tooling.

pgBackRest runs inside the server's container as the server's OS user, so what the server can
write, pgBackRest can write. Deeper checks (a stanza, a recent backup, a restore) come with the
backup issue.
"""

from __future__ import annotations

import uuid

import psycopg

from verify import server_files
from verify.context import Context, scalar
from verify.model import Check, Findings, Outcome, Unreachable


def check_volume(ctx: Context) -> Outcome:
    """The backup mount (output backupMount) on the primary is a directory and a read-write mount
    point of its own (a volume), not a folder that dies with the container."""
    seen = Findings()
    path = ctx.outputs.backup_mount
    try:
        conn = ctx.node(ctx.outputs.primary)
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    row = conn.execute("SELECT isdir FROM pg_stat_file(%s, true)", (path,)).fetchone()
    if row is None or row[0] is None:
        seen.problem(f"{path} does not exist on the primary")
    elif not row[0]:
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
    try:
        conn = ctx.node(ctx.outputs.primary)
    except Unreachable as err:
        seen.unreachable(err)
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


CHECKS = (
    Check("backups.volume", check_volume),
    Check("backups.writable", check_writable, writes="a probe file in the backup volume"),
)
