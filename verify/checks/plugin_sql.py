"""ElizaOS 1.x stacks (schema.profile eliza-1): the tables are @elizaos/plugin-sql's, written by
its own runtime migrations at the first agent start; the kit owns what surrounds them — the
migration role, the agents' role without DDL, default privileges, the migration ledger, the
servers' isolation roles — and the plugin's vector search must find what was stored."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from infra.roles import AGENT, OWNER, SERVER_ROLE_PREFIX
from verify.checks.security import _primary_app
from verify.context import Context, scalar
from verify.model import Check, Findings, Outcome

PLUGIN = ("eliza-1",)
# Tables every @elizaos/plugin-sql 1.x schema has (its Drizzle schema holds more).
PLUGIN_TABLES = (
    "agents",
    "cache",
    "embeddings",
    "entities",
    "logs",
    "memories",
    "participants",
    "relationships",
    "rooms",
    "worlds",
)
# Wider vectors do not fit a heap page and keep their default storage (sql/eliza-1/1003).
MAX_PLAIN_DIMS = 2000
MIGRATE_HINT = (
    "start an ElizaOS server with POSTGRES_URL = nodeConnections.migrator (or run the plugin's "
    "migrations with it); the plugin creates its tables itself"
)


def _public_tables(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT relname, pg_get_userbyid(relowner) FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"
        ).fetchall()
    )


def check_plugin_tables(ctx: Context) -> Outcome:
    """Before the first agent start the schema holds no table (it is the plugin's to create);
    after it, the plugin's tables exist, owned by the migration role, with an embeddings column
    of the stack's dimension stored PLAIN (in the heap page, where the search scans it)."""
    seen = Findings()
    conn = _primary_app(ctx, seen)
    if conn is None:
        return seen.outcome("", "")
    tables = _public_tables(conn)
    if not tables:
        seen.note(
            "no table yet: the schema is @elizaos/plugin-sql's to create at the first agent "
            f"start — {MIGRATE_HINT}"
        )
        return seen.outcome("no table yet: the schema is the plugin's to create", "")
    missing = [t for t in PLUGIN_TABLES if t not in tables]
    if missing:
        seen.problem(f"tables of the plugin missing: {', '.join(missing)}")
    foreign = sorted(f"{t} (owner {o})" for t, o in tables.items() if o != OWNER.name)
    if foreign:
        seen.problem(
            f"tables not owned by the migration role {OWNER.name}: {', '.join(foreign)}; "
            "the plugin cannot alter them at its next migration"
        )
    dims = ctx.outputs.embedding_dimensions
    column = f"dim_{dims}"
    if "embeddings" in tables:
        row = conn.execute(
            "SELECT format_type(atttypid, atttypmod), attstorage FROM pg_attribute"
            " WHERE attrelid = 'public.embeddings'::regclass AND attname = %s AND NOT attisdropped",
            (column,),
        ).fetchone()
        found, storage = row if row else (None, None)
        if found == f"vector({dims})" and dims <= MAX_PLAIN_DIMS and storage != "p":
            seen.problem(
                f"embeddings.{column} is stored out of line (storage {storage!r}, not PLAIN): "
                "every search of the plugin scans the agent's rows through TOAST, about half as "
                "fast (the table was created before sql/eliza-1/1003's event trigger)"
            )
        if found != f"vector({dims})":
            seen.problem(
                f"embeddings.{column} is {found or 'missing'}, not vector({dims}): the plugin has "
                "no column for the stack's embedding size (it knows 384, 512, 768, 1024, 1536, "
                "3072)"
            )
    return seen.outcome(
        f"{len(tables)} tables of the plugin, owned by {OWNER.name}, embeddings.{column}",
        f"{MIGRATE_HINT}; tables created by another role: ALTER TABLE ... OWNER TO {OWNER.name}; "
        "an embedding column stored out of line: ALTER TABLE public.embeddings ALTER COLUMN "
        "dim_<N> SET STORAGE PLAIN, then VACUUM FULL public.embeddings to rewrite the rows",
    )


def check_plugin_roles(ctx: Context) -> Outcome:
    """The migration role is no superuser and owns the database and the plugin's ledger; the
    agents' role has no DDL anywhere and no access to the ledger, and default privileges give
    it the tables the migrator creates; every server role is the agent role with its server's
    app.server_id and nothing more."""
    seen = Findings()
    conn = _primary_app(ctx, seen)
    if conn is None:
        return seen.outcome("", "")
    strong = conn.execute(
        "SELECT rolname FROM pg_roles WHERE (rolname IN (%s, %s) OR starts_with(rolname, %s))"
        " AND (rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb OR rolreplication)",
        (OWNER.name, AGENT.name, SERVER_ROLE_PREFIX),
    ).fetchall()
    for (role,) in strong:
        seen.problem(f"{role} has SUPERUSER, BYPASSRLS, CREATEROLE, CREATEDB or REPLICATION")
    owner = scalar(
        conn, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
    )
    if owner != OWNER.name:
        seen.problem(f"the database is owned by {owner}, not the migration role {OWNER.name}")
    ledger_owner = scalar(
        conn, "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'migrations'"
    )
    if ledger_owner != OWNER.name:
        seen.problem(f"schema migrations is owned by {ledger_owner or 'nobody (missing)'}")
    agents = [AGENT.name] + [
        r
        for (r,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (SERVER_ROLE_PREFIX,)
        ).fetchall()
    ]
    for role in agents:
        for what, query in (
            (
                "CREATE on the database",
                "SELECT has_database_privilege(%s, current_database(), 'CREATE')",
            ),
            ("CREATE on schema public", "SELECT has_schema_privilege(%s, 'public', 'CREATE')"),
            (
                "USAGE on schema migrations",
                "SELECT coalesce(has_schema_privilege(%s, to_regnamespace('migrations'), 'USAGE'), false)",
            ),
            (
                "TEMPORARY on the database",
                "SELECT has_database_privilege(%s, current_database(), 'TEMPORARY')",
            ),
        ):
            if scalar(conn, query, (role,)):
                seen.problem(f"{role} has {what}: the agents' roles must not change the schema")
    granted = scalar(
        conn,
        "SELECT string_agg(DISTINCT a.privilege_type, ',' ORDER BY a.privilege_type)"
        "  FROM pg_default_acl d, aclexplode(d.defaclacl) a"
        " WHERE d.defaclrole = %s::regrole AND d.defaclnamespace = 'public'::regnamespace"
        "   AND d.defaclobjtype = 'r' AND a.grantee = %s::regrole",
        (OWNER.name, AGENT.name),
    )
    if granted != "DELETE,INSERT,SELECT,UPDATE":
        seen.problem(
            f"default privileges of {OWNER.name} in public give {AGENT.name} {granted or 'nothing'}"
            " on new tables, not SELECT, INSERT, UPDATE, DELETE"
        )
    for table, owner_name in _public_tables(conn).items():
        if owner_name == OWNER.name and not scalar(
            conn,
            "SELECT has_table_privilege(%s, %s, 'SELECT,INSERT,UPDATE,DELETE')",
            (AGENT.name, f"public.{table}"),
        ):
            seen.problem(f"{AGENT.name} cannot read and write public.{table}")
    for role in agents[1:]:
        if not scalar(conn, "SELECT pg_has_role(%s, %s, 'USAGE')", (role, AGENT.name)):
            seen.problem(f"{role} is not a member of {AGENT.name}")
        setting = scalar(
            conn,
            "SELECT bool_or(c LIKE 'app.server_id=%%') FROM pg_db_role_setting s,"
            " unnest(s.setconfig) c WHERE s.setrole = %s::regrole",
            (role,),
        )
        if not setting:
            seen.problem(f"{role} has no app.server_id: its statements would see no rows")
    return seen.outcome(
        f"{OWNER.name} migrates without superuser rights; {len(agents)} agent role(s) without DDL",
        "`elizadb migrate` re-applies the bootstrap and sql/eliza-1/ (roles, grants, default "
        "privileges); revoke a stray grant with REVOKE ... FROM <role>",
    )


def check_plugin_rls(ctx: Context) -> Outcome:
    """Where the plugin's data isolation is on (ENABLE_DATA_ISOLATION=true installs it), every
    table of public but servers has row level security enabled and FORCEd, with its
    server_isolation_policy; off, no table is half-isolated."""
    seen = Findings()
    conn = _primary_app(ctx, seen)
    if conn is None:
        return seen.outcome("", "")
    rows = conn.execute(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
        "       EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid"
        "                  AND p.polname = 'server_isolation_policy')"
        "  FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
        "   AND c.relname <> 'servers' ORDER BY 1"
    ).fetchall()
    isolated = [r for r in rows if r[1] or r[3]]
    remediation = (
        "run the plugin's migrations with ENABLE_DATA_ISOLATION=true as the migrator (README, "
        "ElizaOS 1.x): the plugin re-applies its RLS to every table after them"
    )
    if not isolated:
        # A stack made for isolated servers whose tables carry no isolation: never installed,
        # or taken off (an ElizaOS server started without ENABLE_DATA_ISOLATION as the
        # tables' owner runs the plugin's uninstallRLS). Every server then reads every row.
        servers = [
            r
            for (r,) in conn.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) ORDER BY 1",
                (SERVER_ROLE_PREFIX,),
            ).fetchall()
        ]
        if servers and rows:
            seen.problem(
                f"the stack has data isolation roles ({', '.join(servers)}) but no table of "
                "public has the plugin's row level security: each server reads every server's rows"
            )
        return seen.outcome(
            "data isolation is off (no table has the plugin's row level security)", remediation
        )
    for table, enabled, forced, policy in rows:
        if not (enabled and forced and policy):
            seen.problem(
                f"public.{table}: RLS {'on' if enabled else 'off'}, "
                f"{'forced' if forced else 'not forced'}, "
                f"{'with' if policy else 'without'} server_isolation_policy"
            )
    return seen.outcome(
        f"data isolation on: {len(rows)} tables with forced RLS and the server policy",
        remediation,
    )


def check_plugin_search(ctx: Context) -> Outcome:
    """The plugin's vector search, as it runs it (ranked by 1 - (dim_N <=> query), filtered by
    agent and type, joined to memories), returns a stored memory first when queried with that
    memory's own embedding. Read-only; passes with a note while no embedding is stored."""
    seen = Findings()
    conn = _primary_app(ctx, seen)
    if conn is None:
        return seen.outcome("", "")
    column = sql.Identifier(f"dim_{ctx.outputs.embedding_dimensions}")
    if scalar(conn, "SELECT to_regclass('public.embeddings') IS NULL"):
        return seen.outcome("no embeddings table yet (no agent has started)", "")
    sample = conn.execute(
        sql.SQL(
            "SELECT m.id, m.agent_id, m.type, e.{col}::text FROM public.embeddings e"
            " JOIN public.memories m ON m.id = e.memory_id WHERE e.{col} IS NOT NULL LIMIT 1"
        ).format(col=column)
    ).fetchone()
    if sample is None:
        return seen.outcome("no embedding stored yet: nothing to search", "")
    memory_id, agent_id, kind, vector = sample
    started = time.perf_counter()
    found = conn.execute(
        sql.SQL(
            "SELECT m.id, 1 - (e.{col} <=> %s::vector) AS similarity FROM public.embeddings e"
            " JOIN public.memories m ON m.id = e.memory_id"
            " WHERE m.type = %s AND m.agent_id = %s ORDER BY similarity DESC LIMIT 10"
        ).format(col=column),
        (vector, kind, agent_id),
    ).fetchall()
    millis = (time.perf_counter() - started) * 1000
    if not found or found[0][1] < 0.999 or memory_id not in [r[0] for r in found if r[1] >= 0.999]:
        seen.problem(
            f"searching with memory {memory_id}'s own embedding returned "
            f"{[(str(i), round(s, 4)) for i, s in found[:3]]}, not that memory first"
        )
    return seen.outcome(
        f"the plugin's search found the memory itself first ({millis:.0f} ms)",
        "check embeddings.memory_id against memories.id and the vector column's contents",
    )


def check_advisory_locks(ctx: Context) -> Outcome:
    """No session sits idle holding an advisory lock. @elizaos/plugin-sql (and elizadb-migrate)
    lock migrations with session-level advisory locks; taken through the transaction-mode pool,
    the lock and its release may land on different server connections, and the lock then stays
    on a pooled connection, where every later migration waits for it."""
    seen = Findings()
    conn = _primary_app(ctx, seen)
    if conn is None:
        return seen.outcome("", "")
    idle = ctx.thresholds.advisory_lock_idle_seconds
    rows = conn.execute(
        "SELECT a.pid, a.usename, a.datname, host(a.client_addr), l.classid, l.objid,"
        "       round(extract(epoch FROM now() - a.state_change))"
        "  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND a.state = 'idle'"
        "   AND a.state_change < now() - make_interval(secs => %s)",
        (idle,),
    ).fetchall()
    for pid, user, database, addr, high, low, seconds in rows:
        seen.problem(
            f"backend {pid} ({user}@{database} from {addr}) has been idle {seconds:.0f} s holding "
            f"advisory lock {(high << 32) | low}"
        )
    return seen.outcome(
        f"no session idle for {idle:g} s or more holds an advisory lock",
        "end the backend (SELECT pg_terminate_backend(pid)) or RECONNECT the pooler; run "
        "migrations through the session-mode pool (nodeConnections.migrator), never the "
        "transaction-mode one",
    )


POOLER_CHECKS = (Check("pooler.advisory_locks", check_advisory_locks),)
CHECKS = (
    Check("schema.plugin_tables", check_plugin_tables, profiles=PLUGIN),
    Check("security.plugin_roles", check_plugin_roles, profiles=PLUGIN),
    Check("security.plugin_rls", check_plugin_rls, profiles=PLUGIN),
    Check("vector.plugin_search", check_plugin_search, profiles=PLUGIN),
)
