"""Files on a server, over SQL, as the superuser.

PostgreSQL reads files with pg_stat_file/pg_read_file, and writes them with COPY ... TO. It has
no function to delete a file or to ask for free disk space, so those two go through
COPY ... TO PROGRAM (superuser only): the only places where the suite runs a program on a server.
Every path and command is composed with psycopg.sql.Literal and shlex.quote.
"""

from __future__ import annotations

import shlex
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class DiskUsage:
    path: str
    total_bytes: int
    free_bytes: int

    @property
    def free_fraction(self) -> float:
        return self.free_bytes / self.total_bytes if self.total_bytes else 0.0


def run_program(conn: psycopg.Connection[Any], command: str) -> None:
    """Run a shell command on the server (as its OS user); its output is discarded.

    COPY writes its one row to the command's stdin: the command reads it first, or the server
    may write into a pipe that the command has already closed (EPIPE, "could not close pipe to
    external command")."""
    program = f"cat >/dev/null; {command}"
    conn.execute(sql.SQL("COPY (SELECT 1) TO PROGRAM {}").format(sql.Literal(program)))


def remove_file(conn: psycopg.Connection[Any], path: str) -> None:
    run_program(conn, f"rm -f -- {shlex.quote(path)}")


def file_size(conn: psycopg.Connection[Any], path: str) -> int | None:
    """The size of `path`, or None when it does not exist."""
    row = conn.execute("SELECT size FROM pg_stat_file(%s, true)", (path,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def parse_df(text: str, path: str) -> DiskUsage:
    """`df -P -k PATH` output: a header, then one line whose columns 2 and 4 are the total and
    available 1024-byte blocks."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError(f"unexpected df output: {text!r}")
    cols = lines[-1].split()
    if len(cols) < 6 or not cols[1].isdigit() or not cols[3].isdigit():
        raise ValueError(f"unexpected df output: {text!r}")
    return DiskUsage(path, int(cols[1]) * 1024, int(cols[3]) * 1024)


def disk_usage(conn: psycopg.Connection[Any], path: str) -> DiskUsage:
    """Free space of the file system holding `path` on the server: df into a private temporary
    file, read back, removed."""
    out = f"/tmp/elizadb-verify-df-{uuid.uuid4().hex}"
    try:
        run_program(conn, f"df -P -k -- {shlex.quote(path)} > {shlex.quote(out)}")
        row = conn.execute("SELECT pg_read_file(%s)", (out,)).fetchone()
    finally:
        remove_file(conn, out)
    return parse_df(row[0] if row else "", path)


def mount_point(mountinfo: str, path: str) -> dict[str, str] | None:
    """The /proc/self/mountinfo entry mounted exactly at `path`: its root, options, fs type and
    source; None when `path` is not a mount point."""
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) >= 6 and fields[4] == path:
            tail = right.split()
            return {
                "root": fields[3],
                "options": fields[5],
                "fstype": tail[0] if tail else "",
                "source": tail[1] if len(tail) > 1 else "",
            }
    return None


def write_file(conn: psycopg.Connection[Any], path: str, text: str) -> None:
    """Create (or overwrite) `path` on the server with `text` and a newline."""
    conn.execute(sql.SQL("COPY (SELECT {}) TO {}").format(sql.Literal(text), sql.Literal(path)))
