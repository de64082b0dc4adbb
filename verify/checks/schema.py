"""schema: the Eliza database is what sql/ produces (verify/expected_schema.py), with the stack's
embedding dimension, and its migration ledger matches this repository's files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from infra.profiles import sql_dir
from verify import expected_schema as want
from verify.context import Context, scalar
from verify.migrations import Migration, ledger_problems, migration_files
from verify.model import Check, Findings, Outcome, Unreachable

MIGRATE_FIX = "run the migrations (`elizadb migrate`, or the bootstrap job of `pulumi up`)"


@dataclass(frozen=True)
class LiveColumn:
    name: str
    type: str  # format_type with the type modifier: vector(1536), varchar(10), ...
    base_type: str  # without it: vector
    not_null: bool
    default: str | None
    storage: str
    typmod: int


@dataclass(frozen=True)
class LiveIndex:
    table: str
    name: str
    method: str
    columns: tuple[str, ...]
    opclasses: tuple[str, ...]
    unique: bool
    valid: bool  # indisvalid and indisready and indislive
    partial: bool


@dataclass(frozen=True)
class Catalog:
    columns: dict[str, dict[str, LiveColumn]]  # table -> column -> ...; every public table
    constraints: dict[str, dict[str, str]]  # table -> definition -> name
    indexes: dict[str, LiveIndex]  # by index name


def _read_catalog(conn: psycopg.Connection[Any]) -> Catalog:
    # pg_get_constraintdef and pg_get_expr qualify names that are not on the search_path.
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL search_path = public")
        columns: dict[str, dict[str, LiveColumn]] = {}
        for table, *values in conn.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),"
            "       format_type(a.atttypid, NULL), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),"
            "       a.attstorage::text, a.atttypmod"
            "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            "  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
            "  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY c.relname, a.attnum"
        ).fetchall():
            column = LiveColumn(*values)
            columns.setdefault(table, {})[column.name] = column
        constraints: dict[str, dict[str, str]] = {}
        for table, name, definition in conn.execute(
            "SELECT c.relname, con.conname, pg_get_constraintdef(con.oid)"
            "  FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid"
            "  JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND con.contype IN ('p', 'u', 'f', 'c', 'x')"
        ).fetchall():
            constraints.setdefault(table, {})[definition] = name
        indexes = {
            row[1]: LiveIndex(row[0], row[1], row[2], tuple(row[3]), tuple(row[4]), *row[5:])
            for row in conn.execute(
                "SELECT t.relname, i.relname, am.amname,"
                "       ARRAY(SELECT coalesce(a.attname, '(expression)')"
                "               FROM unnest(ix.indkey::int2[]) WITH ORDINALITY k(attnum, n)"
                "               LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum"
                "              ORDER BY k.n),"
                "       ARRAY(SELECT o.opcname FROM unnest(ix.indclass::oid[]) WITH ORDINALITY k(oid, n)"
                "               JOIN pg_opclass o ON o.oid = k.oid ORDER BY k.n),"
                "       ix.indisunique, ix.indisvalid AND ix.indisready AND ix.indislive,"
                "       ix.indpred IS NOT NULL"
                "  FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid"
                "  JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
                "  JOIN pg_am am ON am.oid = i.relam WHERE n.nspname = 'public'"
            ).fetchall()
        }
    return Catalog(columns, constraints, indexes)


def _catalog(ctx: Context, seen: Findings) -> Catalog | None:
    try:
        conn = ctx.app_db(ctx.outputs.primary)
    except Unreachable as err:
        seen.unreachable(err)
        return None
    return ctx.memo("schema.catalog", lambda: _read_catalog(conn))


def _present_tables(catalog: Catalog, seen: Findings) -> list[want.Table]:
    """The expected tables that exist; the missing ones are schema.tables' to report."""
    present = []
    for table in want.TABLES:
        if table.name in catalog.columns:
            present.append(table)
        else:
            seen.not_checked(f"table {table.name}", "schema.tables", "missing")
    return present


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def check_extensions(ctx: Context) -> Outcome:
    """PostgreSQL is 17 or later and vector (≥ 0.8, for iterative HNSW scans), fuzzystrmatch and
    pgcrypto are installed in schema public."""
    seen = Findings()
    try:
        conn = ctx.app_db(ctx.outputs.primary)
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    if conn.info.server_version < want.MIN_SERVER_VERSION:
        seen.problem(f"PostgreSQL {conn.info.server_version} is older than 17")
    installed = {
        name: (version, schema)
        for name, version, schema in conn.execute(
            "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e"
            "  JOIN pg_namespace n ON n.oid = e.extnamespace"
        ).fetchall()
    }
    shown = []
    for name, minimum in want.EXTENSIONS.items():
        if name not in installed:
            seen.problem(f"extension {name} is not installed")
            continue
        version, schema = installed[name]
        shown.append(f"{name} {version}")
        if _version(version) < minimum:
            seen.problem(f"extension {name} is {version}, older than {'.'.join(map(str, minimum))}")
        if schema != "public":
            seen.problem(f"extension {name} is in schema {schema}, not public")
    return seen.outcome(
        f"PostgreSQL {conn.info.server_version // 10000}; " + ", ".join(shown),
        f"{MIGRATE_FIX}; an old extension version: ALTER EXTENSION <name> UPDATE (the server "
        "package must be new enough)",
    )


def check_tables(ctx: Context) -> Outcome:
    """Every table of the Eliza schema exists in schema public."""
    seen = Findings()
    catalog = _catalog(ctx, seen)
    if catalog is None:
        return seen.outcome("", "")
    expected = {t.name for t in want.TABLES}
    for table in want.TABLES:
        if table.name not in catalog.columns:
            seen.problem(f"table public.{table.name} is missing")
    extra = sorted(set(catalog.columns) - expected)
    if extra:
        seen.note(f"other tables: {', '.join(extra)}")
    return seen.outcome(f"{len(expected)} tables present", MIGRATE_FIX)


def column_problems(table: want.Table, live: dict[str, LiveColumn]) -> list[str]:
    """Missing columns, wrong types, nullability or storage; extra columns that would make the
    adapter's inserts fail (NOT NULL without a default)."""
    problems = []
    for col in table.columns:
        got = live.get(col.name)
        if got is None:
            problems.append(f"{table.name}.{col.name} is missing")
            continue
        # Vector columns are compared without their dimension: that is schema.vector_dimension.
        actual = got.base_type if col.type == "vector" else got.type
        if actual != col.type:
            problems.append(f"{table.name}.{col.name} is {got.type}, expected {col.type}")
        if got.not_null != col.not_null:
            problems.append(
                f"{table.name}.{col.name} is {'NOT NULL' if got.not_null else 'nullable'}"
                f", expected {'NOT NULL' if col.not_null else 'nullable'}"
            )
        if col.storage and got.storage != col.storage:
            problems.append(
                f"{table.name}.{col.name} has storage {got.storage}, expected "
                f"{col.storage} (PLAIN keeps vectors inline, out of TOAST)"
            )
    known = {c.name for c in table.columns}
    for name, got in live.items():
        if name not in known and got.not_null and got.default is None:
            problems.append(
                f"{table.name}.{name} is an unexpected NOT NULL column without a "
                "default: inserts that do not know it fail"
            )
    return problems


def check_columns(ctx: Context) -> Outcome:
    """Every expected column exists with its type, nullability and (for embeddings) PLAIN
    storage."""
    seen = Findings()
    catalog = _catalog(ctx, seen)
    if catalog is None:
        return seen.outcome("", "")
    count = 0
    for table in _present_tables(catalog, seen):
        count += len(table.columns)
        for problem in column_problems(table, catalog.columns[table.name]):
            seen.problem(problem)
    return seen.outcome(f"{count} columns with the expected types", MIGRATE_FIX)


def check_defaults(ctx: Context) -> Outcome:
    """Every expected column has its default (gen_random_uuid(), CURRENT_TIMESTAMP, ...)."""
    seen = Findings()
    catalog = _catalog(ctx, seen)
    if catalog is None:
        return seen.outcome("", "")
    for table in _present_tables(catalog, seen):
        live = catalog.columns[table.name]
        for col in table.columns:
            got = live.get(col.name)
            if got is not None and got.default != col.default:
                seen.problem(
                    f"{table.name}.{col.name} defaults to {got.default or 'nothing'}, "
                    f"expected {col.default or 'no default'}"
                )
    return seen.outcome("column defaults as expected", MIGRATE_FIX)


def check_constraints(ctx: Context) -> Outcome:
    """Every table has exactly the expected primary key, unique, foreign key (ON DELETE CASCADE)
    and check constraints."""
    seen = Findings()
    catalog = _catalog(ctx, seen)
    if catalog is None:
        return seen.outcome("", "")
    count = 0
    for table in _present_tables(catalog, seen):
        live = catalog.constraints.get(table.name, {})
        count += len(table.constraints)
        for definition in table.constraints:
            if definition not in live:
                seen.problem(f"{table.name}: missing constraint {definition}")
        for definition, name in live.items():
            if definition not in table.constraints:
                seen.problem(f"{table.name}: unexpected constraint {name} {definition}")
    return seen.outcome(f"{count} constraints as expected", MIGRATE_FIX)


def index_problems(index: want.Index, table: str, live: LiveIndex | None) -> list[str]:
    if live is None:
        return [f"index {index.name} on {table} is missing"]
    problems = []
    if live.table != table:
        problems.append(f"index {index.name} is on {live.table}, expected {table}")
    if live.method != index.method:
        problems.append(f"index {index.name} uses {live.method}, expected {index.method}")
    if live.columns != index.columns:
        problems.append(
            f"index {index.name} covers {', '.join(live.columns)}, expected "
            f"{', '.join(index.columns)}"
        )
    if index.opclasses and live.opclasses != index.opclasses:
        problems.append(
            f"index {index.name} has operator class {', '.join(live.opclasses)}, "
            f"expected {', '.join(index.opclasses)}"
        )
    if live.unique != index.unique:
        problems.append(f"index {index.name} is {'' if live.unique else 'not '}unique")
    if live.partial:
        problems.append(f"index {index.name} is partial")
    if not live.valid:
        problems.append(
            f"index {index.name} is invalid (a failed CREATE INDEX CONCURRENTLY or REINDEX)"
        )
    return problems


def check_indexes(ctx: Context) -> Outcome:
    """Every expected index exists, is valid, and has its access method, columns and (for the
    HNSW indexes) operator class: vector_cosine_ops for <=>, vector_l2_ops for <->."""
    seen = Findings()
    catalog = _catalog(ctx, seen)
    if catalog is None:
        return seen.outcome("", "")
    expected = set()
    operators = ctx.outputs.vector_operators
    for table in _present_tables(catalog, seen):
        for index in table.indexes:
            if index.operator and index.operator not in operators:
                if index.name in catalog.indexes:
                    expected.add(index.name)
                    seen.note(
                        f"{index.name} ({index.operator}) is not in vectorOperators: the next "
                        "run of the bootstrap job drops it"
                    )
                continue
            expected.add(index.name)
            for problem in index_problems(index, table.name, catalog.indexes.get(index.name)):
                seen.problem(problem)
    extra = sorted(set(catalog.indexes) - expected)
    if extra:
        seen.note(f"other indexes: {', '.join(extra)}")
    hnsw = sum(1 for i in catalog.indexes.values() if i.method == "hnsw" and i.valid)
    return seen.outcome(
        f"{len(expected)} indexes valid, {hnsw} HNSW",
        f"{MIGRATE_FIX}; an invalid index: REINDEX INDEX CONCURRENTLY <name>; a dropped HNSW "
        "index of vectorOperators is rebuilt by the bootstrap job (`elizadb migrate`), another "
        "by the migration's CREATE INDEX IF NOT EXISTS after removing its ledger row, or by hand",
    )


def check_vector_dimension(ctx: Context) -> Outcome:
    """The embedding columns are vector(N) with N = the stack's embeddingDimensions."""
    seen = Findings()
    catalog = _catalog(ctx, seen)
    if catalog is None:
        return seen.outcome("", "")
    dims = ctx.outputs.embedding_dimensions
    for table, column in want.EMBEDDING_COLUMNS:
        live = catalog.columns.get(table)
        if live is None:
            seen.not_checked(f"table {table}", "schema.tables", "missing")
        elif column not in live:
            seen.not_checked(f"{table}.{column}", "schema.columns", "missing")
        elif live[column].typmod != dims:
            seen.problem(
                f"{table}.{column} is {live[column].type}, but the stack's "
                f"embeddingDimensions is {dims}: agents' inserts would fail"
            )
    return seen.outcome(
        f"embeddings are vector({dims})",
        "agents must embed with the dimension the schema has: change the model or "
        "elizadb:embeddingDimensions back, or migrate the column (a new migration that alters "
        "it and recomputes every embedding)",
    )


def check_migrations(ctx: Context) -> Outcome:
    """The ledger elizadb.schema_migrations records every file of the profile's migrations in
    this repository (sql/, or sql/eliza-1/), with the same checksum, and nothing else."""
    seen = Findings()
    try:
        conn = ctx.app_db(ctx.outputs.primary)
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    files = migration_files(sql_dir(ctx.outputs.schema_profile))  # type: ignore[arg-type]
    if scalar(conn, "SELECT to_regclass('elizadb.schema_migrations')") is None:
        seen.problem("the ledger elizadb.schema_migrations does not exist")
        return seen.outcome("", MIGRATE_FIX)
    ledger = [
        Migration(*row)
        for row in conn.execute(
            "SELECT version, name, checksum FROM elizadb.schema_migrations ORDER BY version"
        ).fetchall()
    ]
    for problem in ledger_problems(files, ledger):
        seen.problem(problem)
    return seen.outcome(
        f"{len(files)} migrations applied, checksums match",
        f"{MIGRATE_FIX}. A checksum that differs is drift: find out who changed the ledger or the "
        "file; an applied migration must never change — restore it and add a new migration",
    )


def check_functions(ctx: Context) -> Outcome:
    """The functions and triggers the schema relies on are in place: auth.uid(), the trigger
    that keeps memories."unique" and "isUnique" equal, and the pooler's auth function."""
    seen = Findings()
    try:
        conn = ctx.app_db(ctx.outputs.primary)
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    for what, query in want.ROUTINES:
        row = conn.execute(query).fetchone()
        if not row or row[0] is not True:
            seen.problem(f"missing or wrong: {what}")
    return seen.outcome(
        f"{len(want.ROUTINES)} functions and triggers in place",
        f"{MIGRATE_FIX}; a disabled trigger: ALTER TABLE public.memories ENABLE "
        "TRIGGER memories_sync_unique_flags",
    )


SEED_SCHEMA = ("eliza-0.1",)  # the checks of sql/'s own tables
CHECKS = (
    Check("schema.extensions", check_extensions),
    Check("schema.tables", check_tables, profiles=SEED_SCHEMA),
    Check("schema.columns", check_columns, profiles=SEED_SCHEMA),
    Check("schema.defaults", check_defaults, profiles=SEED_SCHEMA),
    Check("schema.constraints", check_constraints, profiles=SEED_SCHEMA),
    Check("schema.indexes", check_indexes, profiles=SEED_SCHEMA),
    Check("schema.vector_dimension", check_vector_dimension, profiles=SEED_SCHEMA),
    Check("schema.migrations", check_migrations),
    Check("schema.functions", check_functions, profiles=SEED_SCHEMA),
)
