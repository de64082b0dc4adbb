"""Moving a stack from the eliza-0.1 profile (the seed guide's schema, @elizaos/adapter-postgres
0.1) to eliza-1 (@elizaos/plugin-sql 1.x) without losing memories.

    elizadb move-to-eliza1 set-aside   the 0.1 tables move into schema eliza01 (sql/move-0.1-to-1/1)
    (set elizadb:schema.profile to eliza-1, `elizadb up`, start ElizaOS once with
     POSTGRES_URL = nodeConnections.migrator: the plugin creates its tables)
    elizadb move-to-eliza1 carry-over  the rows are copied into the plugin's tables (…/2), in one
                                       transaction that commits only if every row is accounted for
                                       and every embedding arrived unchanged

The plugin's own 0.x path does not apply. Started on a 0.1 database (tried with plugin-sql
1.7.2), its "pre-1.6.5" step renames the 0.1 tables' camelCase columns in place, outside a
transaction, and its migrator then refuses to go on ("Destructive migration blocked": NOT NULL
columns it cannot add to existing rows), leaving a database neither version can use.

Knowledge goes where 1.x keeps it: memories of type 'documents' and 'knowledge' (fragments), as
@elizaos/plugin-knowledge 1.x writes them, with their embeddings. Goals have no home in 1.x (its
core has no goals), nor has shared knowledge (a 1.x memory belongs to one agent): they stay in
eliza01, counted, and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from elizadb.errors import DeployError, UsageError

MOVE_DIR = Path(__file__).resolve().parents[2] / "sql" / "move-0.1-to-1"
# Embedding sizes the plugin has a column for (embeddings.dim_N).
PLUGIN_DIMENSIONS = (384, 512, 768, 1024, 1536, 3072)

# (what, rows in 0.1, rows carried into 1.x): each pair must be equal.
TALLIES: tuple[tuple[str, str, str], ...] = (
    (
        "accounts -> entities",
        "SELECT count(*) FROM eliza01.accounts",
        "SELECT count(*) FROM public.entities WHERE id IN (SELECT id FROM eliza01.accounts)",
    ),
    (
        "rooms",
        "SELECT count(*) FROM eliza01.rooms",
        "SELECT count(*) FROM public.rooms WHERE id IN (SELECT id FROM eliza01.rooms)",
    ),
    (
        "participants",
        "SELECT count(*) FROM eliza01.participants",
        (
            "SELECT count(*) FROM public.participants WHERE id IN"
            " (SELECT id FROM eliza01.participants)"
        ),
    ),
    (
        "memories",
        "SELECT count(*) FROM eliza01.memories",
        "SELECT count(*) FROM public.memories WHERE id IN (SELECT id FROM eliza01.memories)",
    ),
    (
        "knowledge -> documents",
        (
            'SELECT count(*) FROM eliza01.knowledge WHERE "agentId" IS NOT NULL'
            ' AND "originalId" IS NULL'
        ),
        (
            "SELECT count(*) FROM public.memories WHERE type = 'documents'"
            " AND metadata->>'type' = 'document' AND id IN"
            ' (SELECT id FROM eliza01.knowledge WHERE "originalId" IS NULL)'
        ),
    ),
    (
        "knowledge chunks",
        (
            'SELECT count(*) FROM eliza01.knowledge WHERE "agentId" IS NOT NULL'
            ' AND "originalId" IS NOT NULL'
        ),
        (
            "SELECT count(*) FROM public.memories WHERE type = 'knowledge'"
            " AND metadata->>'type' = 'fragment' AND id IN"
            ' (SELECT id FROM eliza01.knowledge WHERE "originalId" IS NOT NULL)'
        ),
    ),
    (
        "relationships",
        "SELECT count(*) FROM eliza01.relationships",
        (
            "SELECT count(*) FROM public.relationships WHERE id IN"
            " (SELECT id FROM eliza01.relationships)"
        ),
    ),
    (
        "logs",
        "SELECT count(*) FROM eliza01.logs",
        "SELECT count(*) FROM public.logs WHERE id IN (SELECT id FROM eliza01.logs)",
    ),
    (
        "cache",
        "SELECT count(*) FROM eliza01.cache",
        (
            "SELECT count(*) FROM public.cache c JOIN eliza01.cache o"
            ' ON o.key = c.key AND o."agentId" = c.agent_id::text'
        ),
    ),
)


# Rows with no home in 1.x, which stay in schema eliza01: what (and why) -> how many.
LEFT_IN_ELIZA01: dict[str, str] = {
    "goals (1.x has no goals)": "SELECT count(*) FROM eliza01.goals",
    "shared knowledge (a 1.x memory belongs to one agent)": (
        'SELECT count(*) FROM eliza01.knowledge WHERE "agentId" IS NULL'
    ),
}


@dataclass(frozen=True)
class Tally:
    what: str
    source: int
    carried: int

    @property
    def complete(self) -> bool:
        return self.source == self.carried


@dataclass(frozen=True)
class MoveReport:
    tallies: tuple[Tally, ...]
    embeddings_source: int  # 0.1 memories and agents' knowledge with an embedding
    embeddings_equal: int  # 1.x embeddings equal to them, component for component
    left_in_eliza01: dict[str, int]  # rows with no home in 1.x

    @property
    def complete(self) -> bool:
        return (
            all(t.complete for t in self.tallies)
            and self.embeddings_equal == self.embeddings_source
        )


def _one(conn: psycopg.Connection[Any], query: str | sql.Composed) -> Any:
    row = conn.execute(query).fetchone()
    return row[0] if row else None


def set_aside(conn: psycopg.Connection[Any]) -> None:
    """Step 1, on a superuser connection to the Eliza database. UsageError (nothing changed)
    when there is no 0.1 schema to set aside, or it was set aside already."""
    try:
        with conn.transaction():
            conn.execute((MOVE_DIR / "1_set_aside.sql").read_text())
    except psycopg.errors.RaiseException as err:
        raise UsageError(str(err.diag.message_primary).removeprefix("elizadb: ")) from None


def carry_over(conn: psycopg.Connection[Any], dims: int) -> MoveReport:
    """Step 2: copy, count, compare; commits only a complete move (DeployError otherwise).
    UsageError, before any change, when a step before it is missing or it ran already."""
    if dims not in PLUGIN_DIMENSIONS:
        raise UsageError(
            f"elizadb:embeddingDimensions = {dims}: @elizaos/plugin-sql stores embeddings of "
            f"{', '.join(map(str, PLUGIN_DIMENSIONS))} dimensions only; the 0.1 embeddings "
            "cannot be carried over as they are (re-embed the memories instead)"
        )
    if _one(conn, "SELECT to_regnamespace('eliza01') IS NULL"):
        raise UsageError("no schema eliza01: run `elizadb move-to-eliza1 set-aside` first")
    if _one(conn, "SELECT to_regclass('public.embeddings') IS NULL"):
        raise UsageError(
            "the plugin's tables do not exist yet: set elizadb:schema.profile to eliza-1, run "
            "`elizadb up`, and start ElizaOS once with POSTGRES_URL = nodeConnections.migrator "
            "(or run the plugin's migrations with it); then carry over"
        )
    if _one(conn, "SELECT count(*) FROM public.memories"):
        raise UsageError("public.memories holds rows already: the carry-over ran before")
    try:
        return _carry_over(conn, sql.Identifier(f"dim_{dims}"))
    except psycopg.Error as err:  # a row the copy could not take: nothing was committed
        raise DeployError(f"carry-over rolled back: {err}".strip()) from None


def _carry_over(conn: psycopg.Connection[Any], column: sql.Identifier) -> MoveReport:
    with conn.transaction():
        conn.execute((MOVE_DIR / "2_carry_over.sql").read_text())
        # Every 0.1 vector with a home in 1.x: memories' and agents' knowledge rows'.
        conn.execute(
            "CREATE TEMP VIEW eliza01_embedded AS"
            ' SELECT id, "createdAt" AS created_at, embedding FROM eliza01.memories'
            ' WHERE embedding IS NOT NULL AND "agentId" IS NOT NULL'
            ' UNION ALL SELECT id, "createdAt", embedding FROM eliza01.knowledge'
            ' WHERE embedding IS NOT NULL AND "agentId" IS NOT NULL'
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO public.embeddings (memory_id, created_at, {col})"
                " SELECT id, created_at, embedding FROM eliza01_embedded"
            ).format(col=column)
        )
        report = MoveReport(
            tallies=tuple(Tally(w, _one(conn, s), _one(conn, c)) for w, s, c in TALLIES),
            embeddings_source=_one(
                conn,
                "SELECT (SELECT count(*) FROM eliza01.memories WHERE embedding IS NOT NULL)"
                " + (SELECT count(*) FROM eliza01.knowledge WHERE embedding IS NOT NULL"
                ' AND "agentId" IS NOT NULL)',
            ),
            embeddings_equal=_one(
                conn,
                sql.SQL(
                    "SELECT count(*) FROM eliza01_embedded o JOIN public.embeddings e"
                    " ON e.memory_id = o.id WHERE e.{col} = o.embedding"
                ).format(col=column),
            ),
            left_in_eliza01={what: _one(conn, query) for what, query in LEFT_IN_ELIZA01.items()},
        )
        conn.execute("DROP VIEW eliza01_embedded")
        if not report.complete:
            raise DeployError("carry-over rolled back, rows would be lost:\n" + render(report))
    return report


def render(report: MoveReport) -> str:
    lines = [f"{'table':<22} {'0.1 rows':>9} {'1.x rows':>9}"]
    for t in report.tallies:
        mark = "" if t.complete else "  <- MISSING"
        lines.append(f"{t.what:<22} {t.source:>9} {t.carried:>9}{mark}")
    lines.append(
        f"{'embeddings (equal)':<22} {report.embeddings_source:>9} {report.embeddings_equal:>9}"
    )
    lines.append("kept in schema eliza01, no home in 1.x:")
    lines.extend(f"  {what}: {rows}" for what, rows in report.left_in_eliza01.items())
    return "\n".join(lines)
