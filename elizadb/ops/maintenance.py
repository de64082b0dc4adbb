"""`elizadb maintenance`: the seed guide's regular tasks on the Eliza database.

  1. retention (only when elizadb:maintenance.memoryRetentionDays is set): delete memories older
     than that, in batches, so that no single transaction holds a long lock or a huge WAL burst;
  2. the dead-tuple report, taken before vacuuming (afterwards there is nothing left to see);
  3. VACUUM (ANALYZE) of every table of the database's own schemas;
  4. REINDEX INDEX CONCURRENTLY of every vector index (HNSW, IVFFlat): a rebuilt graph drops the
     entries of deleted rows, which vacuum only marks; the size before and after is the bloat
     the rebuild removed;
  5. the index-usage report: scans, size, and indexes never scanned since the statistics were
     last reset (candidates to drop, except unique ones, which enforce a constraint).

It runs as the superuser: the Eliza tables have FORCE ROW LEVEL SECURITY, and the table owner has
no policy, so any other role would see (and delete) no rows; VACUUM and REINDEX need the owner,
a superuser or the MAINTAIN privilege.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from infra.settings import StackSettings

RETENTION_BATCH = 5000
VECTOR_ACCESS_METHODS = ("hnsw", "ivfflat")


@dataclass(frozen=True)
class TableHealth:
    table: str
    live_rows: int
    dead_rows: int
    size_bytes: int
    last_vacuum: str | None  # manual or automatic, whichever is newer

    @property
    def dead_percent(self) -> float:
        total = self.live_rows + self.dead_rows
        return 100.0 * self.dead_rows / total if total else 0.0


@dataclass(frozen=True)
class IndexUsage:
    table: str
    index: str
    method: str
    scans: int
    tuples_read: int
    size_bytes: int
    unique: bool

    @property
    def unused(self) -> bool:
        return self.scans == 0 and not self.unique


@dataclass(frozen=True)
class Rebuild:
    index: str
    size_before: int
    size_after: int
    seconds: float


@dataclass
class MaintenanceReport:
    database: str
    retention_days: int | None = None
    memories_deleted: int = 0
    tables: list[TableHealth] = field(default_factory=list)  # before VACUUM
    vacuumed: list[str] = field(default_factory=list)
    rebuilt: list[Rebuild] = field(default_factory=list)
    indexes: list[IndexUsage] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def delete_old_memories(conn: psycopg.Connection[Any], days: int) -> int:
    """Delete memories whose "createdAt" is more than `days` days old; returns how many."""
    deleted = 0
    statement = sql.SQL(
        'DELETE FROM public.memories WHERE "id" IN ('
        ' SELECT "id" FROM public.memories'
        ' WHERE "createdAt" < now() - make_interval(days => %s) LIMIT %s)'
    )
    while True:
        with conn.transaction():
            count = conn.execute(statement, (days, RETENTION_BATCH)).rowcount
        deleted += count
        if count < RETENTION_BATCH:
            return deleted


def table_health(conn: psycopg.Connection[Any]) -> list[TableHealth]:
    rows = conn.execute(
        "SELECT format('%I.%I', schemaname, relname), n_live_tup, n_dead_tup,"
        " pg_total_relation_size(relid),"
        " greatest(last_vacuum, last_autovacuum)::text"
        " FROM pg_stat_user_tables ORDER BY schemaname, relname"
    ).fetchall()
    return [TableHealth(r[0], int(r[1]), int(r[2]), int(r[3]), r[4]) for r in rows]


def user_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT schemaname, relname FROM pg_stat_user_tables ORDER BY schemaname, relname"
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def vector_indexes(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_am a ON a.oid = c.relam"
        " WHERE a.amname = ANY(%s) AND i.indisvalid"
        " ORDER BY n.nspname, c.relname",
        (list(VECTOR_ACCESS_METHODS),),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def index_usage(conn: psycopg.Connection[Any]) -> list[IndexUsage]:
    rows = conn.execute(
        "SELECT format('%I.%I', s.schemaname, s.relname),"
        " format('%I.%I', s.schemaname, s.indexrelname),"
        " a.amname, s.idx_scan, s.idx_tup_read, pg_relation_size(s.indexrelid), i.indisunique"
        " FROM pg_stat_user_indexes s"
        " JOIN pg_index i ON i.indexrelid = s.indexrelid"
        " JOIN pg_class c ON c.oid = s.indexrelid"
        " JOIN pg_am a ON a.oid = c.relam"
        " ORDER BY s.schemaname, s.relname, s.indexrelname"
    ).fetchall()
    return [IndexUsage(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), bool(r[6])) for r in rows]


def _size(conn: psycopg.Connection[Any], schema: str, name: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT pg_relation_size({}::regclass)").format(
            sql.Literal(sql.Identifier(schema, name).as_string(conn))
        )
    ).fetchone()
    return int(row[0]) if row else 0


def run(
    conn: psycopg.Connection[Any], settings: StackSettings, *, reindex: bool = True
) -> MaintenanceReport:
    """Every step on `conn`, a superuser connection to the Eliza database in autocommit mode."""
    if not conn.autocommit:
        raise ValueError(
            "maintenance needs an autocommit connection (VACUUM, REINDEX CONCURRENTLY)"
        )
    report = MaintenanceReport(settings.database, settings.maintenance.memory_retention_days)
    started = time.monotonic()
    if report.retention_days is not None:
        report.memories_deleted = delete_old_memories(conn, report.retention_days)
        report.seconds["retention"] = time.monotonic() - started
    report.tables = table_health(conn)
    step = time.monotonic()
    for schema, table in user_tables(conn):
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, table)))
        report.vacuumed.append(f"{schema}.{table}")
    report.seconds["vacuum_analyze"] = time.monotonic() - step
    if reindex:
        step = time.monotonic()
        for schema, index in vector_indexes(conn):
            before = _size(conn, schema, index)
            one = time.monotonic()
            conn.execute(
                sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(sql.Identifier(schema, index))
            )
            report.rebuilt.append(
                Rebuild(
                    f"{schema}.{index}", before, _size(conn, schema, index), time.monotonic() - one
                )
            )
        report.seconds["reindex"] = time.monotonic() - step
    report.indexes = index_usage(conn)
    report.seconds["total"] = time.monotonic() - started
    return report


# -- reports ---------------------------------------------------------------------------------
def _mb(count: int) -> str:
    return f"{count / 1048576:.1f} MB"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    all_rows = [header, *rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in all_rows
    ]


def render(report: MaintenanceReport) -> str:
    lines = [f"maintenance of database {report.database}", ""]
    if report.retention_days is None:
        lines.append("retention: off (elizadb:maintenance.memoryRetentionDays is not set)")
    else:
        lines.append(
            f"retention: deleted {report.memories_deleted} memories older than "
            f"{report.retention_days} days"
        )
    lines += ["", "tables before VACUUM (ANALYZE) — dead rows are what vacuum reclaims:"]
    lines += _table(
        ("TABLE", "LIVE", "DEAD", "DEAD %", "SIZE", "LAST VACUUM"),
        [
            (
                t.table,
                str(t.live_rows),
                str(t.dead_rows),
                f"{t.dead_percent:.1f}",
                _mb(t.size_bytes),
                (t.last_vacuum or "never")[:19],
            )
            for t in report.tables
        ],
    )
    lines += ["", f"vector indexes rebuilt (REINDEX CONCURRENTLY): {len(report.rebuilt)}"]
    if report.rebuilt:
        lines += _table(
            ("INDEX", "BEFORE", "AFTER", "BLOAT REMOVED", "SECONDS"),
            [
                (
                    r.index,
                    _mb(r.size_before),
                    _mb(r.size_after),
                    f"{100.0 * (r.size_before - r.size_after) / r.size_before:.1f}%"
                    if r.size_before
                    else "-",
                    f"{r.seconds:.1f}",
                )
                for r in report.rebuilt
            ],
        )
    lines += ["", "index usage since statistics were reset:"]
    lines += _table(
        ("INDEX", "TABLE", "METHOD", "SCANS", "TUPLES READ", "SIZE", "NOTE"),
        [
            (
                i.index,
                i.table,
                i.method,
                str(i.scans),
                str(i.tuples_read),
                _mb(i.size_bytes),
                "unused" if i.unused else "",
            )
            for i in report.indexes
        ],
    )
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
    lines += ["", f"took {timings}"]
    return "\n".join(lines)


def to_json(report: MaintenanceReport) -> dict[str, Any]:
    data = asdict(report)
    for table, health in zip(data["tables"], report.tables, strict=True):
        table["dead_percent"] = round(health.dead_percent, 2)
    for index, usage in zip(data["indexes"], report.indexes, strict=True):
        index["unused"] = usage.unused
    return data
