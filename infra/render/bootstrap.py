"""bootstrap.sql: what the job applies as the superuser before the migrations — roles with their
SCRAM verifiers, the database, PgBouncer's auth function and the replication slots — and
vector_indexes.sql, what it applies after them: the HNSW indexes of `vector.operators`.

Idempotent; applied on every run of the job. bootstrap.sql carries verifiers, so it is uploaded
as a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from infra.render import HEADER, paths
from infra.render.patroni import REWIND_USER
from infra.render.scram import scram_verifier
from infra.roles import AGENT, OWNER, POOLER_AUTH, READONLY, ROLES, USER, Role, eliza_uuid
from infra.settings import StackSettings, VectorOperator
from infra.topology import Topology

SLOT_PREFIX = "elizadb_"
# Patroni's rewind role. Patroni makes it when it initialises a cluster, but not when it adopts
# a data directory it did not make (a stack moved from the builtin engine): the job makes sure it
# exists, with the stack's password, on every Patroni stack.
REWIND = Role(REWIND_USER, "LOGIN", "pg_rewind of a returning old leader, for Patroni")
# What pg_rewind reads through a role that is not a superuser (the grants Patroni gives it).
REWIND_FUNCTIONS = (
    "pg_ls_dir(text, boolean, boolean)",
    "pg_stat_file(text, boolean)",
    "pg_read_binary_file(text)",
    "pg_read_binary_file(text, bigint, bigint, boolean)",
)
# Where the job finds vector_indexes.sql (image/entrypoint.sh runs it when it is there).
VECTOR_INDEXES_SQL = f"{paths.ETC}/job/vector_indexes.sql"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def render_bootstrap_sql(
    settings: StackSettings,
    topo: Topology,
    passwords: Mapping[str, str],
    salt_seed: str,
) -> str:
    db = settings.database
    out: list[str] = [
        f"-- {HEADER}",
        "-- Quiet: query results and notices are not the job's output; errors still are.",
        "\\o /dev/null",
        "SET client_min_messages = warning;",
        "-- Keep role passwords out of the server log even though they are verifiers.",
        "SET log_statement = 'none';",
        "SET log_min_error_statement = 'panic';",
        "",
        "-- Roles (attributes reset on every run, so drift is undone)",
    ]
    for role in (*ROLES, *settings.server_roles, *((REWIND,) if settings.patroni else ())):
        verifier = scram_verifier(passwords[role.name], role.name, salt_seed)
        out += [
            f"SELECT format('CREATE ROLE %I', {_literal(role.name)})",
            f"  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(role.name)}) \\gexec",
            (
                f"ALTER ROLE {_ident(role.name)} WITH {role.attributes} NOSUPERUSER NOCREATEDB "
                f"NOCREATEROLE NOBYPASSRLS{'' if 'REPLICATION' in role.attributes else ' NOREPLICATION'} "
                f"PASSWORD {_literal(verifier)};"
            ),
        ]
    out += [
        "",
        "-- The Eliza database, owned by the schema owner; nobody connects unless granted.",
        f"SELECT format('CREATE DATABASE %I OWNER %I', {_literal(db)}, {_literal(OWNER.name)})",
        f"  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = {_literal(db)}) \\gexec",
        f"REVOKE ALL ON DATABASE {_ident(db)} FROM PUBLIC;",
        "REVOKE ALL ON DATABASE postgres FROM PUBLIC;",
    ]
    if settings.patroni:
        # Patroni's rewind user reads the leader's control data from the postgres database, and
        # its files through these functions, before it rewinds a returning old leader.
        out.append(f"GRANT CONNECT ON DATABASE postgres TO {_ident(REWIND_USER)};")
        out += [
            f"GRANT EXECUTE ON FUNCTION pg_catalog.{f} TO {_ident(REWIND_USER)};"
            for f in REWIND_FUNCTIONS
        ]
    for role in (OWNER, AGENT, USER, READONLY, POOLER_AUTH):
        out.append(f"GRANT CONNECT ON DATABASE {_ident(db)} TO {_ident(role.name)};")
    if settings.server_roles:
        out += [
            "",
            "-- ElizaOS servers with data isolation: the agent's rights, its server's rows.",
        ]
    for server, role in zip(settings.schema_settings.servers, settings.server_roles, strict=True):
        out += [
            f"GRANT {_ident(AGENT.name)} TO {_ident(role.name)};",
            f"GRANT CONNECT ON DATABASE {_ident(db)} TO {_ident(role.name)};",
            (
                f"ALTER ROLE {_ident(role.name)} IN DATABASE {_ident(db)}"
                f" SET app.server_id = {_literal(eliza_uuid(server))};"
            ),
        ]
    # Patroni keeps the slots of its members itself (use_slots): slots made here would be
    # nobody's and hold WAL.
    if not settings.patroni:
        out += _slots_sql(topo)
    out += [
        "",
        f"\\connect {db}",
        "SET client_min_messages = warning;",
        "SET log_statement = 'none';",
        "-- PgBouncer's auth_query: the only way pgbouncer_auth sees a verifier. Superusers and the",
        "-- replication role cannot log in through the pooler.",
        "CREATE SCHEMA IF NOT EXISTS pgbouncer AUTHORIZATION postgres;",
        "REVOKE ALL ON SCHEMA pgbouncer FROM PUBLIC;",
        "CREATE OR REPLACE FUNCTION pgbouncer.get_auth(p_usename text)",
        "  RETURNS TABLE (usename name, passwd text)",
        "  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $fn$",
        "    SELECT usename, passwd FROM pg_shadow",
        "     WHERE usename = p_usename AND NOT usesuper AND NOT userepl",
        "  $fn$;",
        "REVOKE ALL ON FUNCTION pgbouncer.get_auth(text) FROM PUBLIC;",
        f"GRANT USAGE ON SCHEMA pgbouncer TO {_ident(POOLER_AUTH.name)};",
        f"GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(text) TO {_ident(POOLER_AUTH.name)};",
        "-- No one but the owner creates objects in public.",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
    ]
    return "\n".join(out) + "\n"


def _slots_sql(topo: Topology) -> list[str]:
    """The builtin engine's replication slots (the SQL says what they are)."""
    wanted = [n.slot for n in topo.nodes] if topo.replicas else []
    wanted_array = "ARRAY[" + ", ".join(_literal(s) for s in wanted) + "]::text[]"
    return [
        "",
        "-- Replication slots on the primary: one for every node of the stack but itself; slots of",
        "-- removed nodes are dropped (their walsender is ended first) so that they cannot hold",
        "-- WAL without bound. cluster_name tells which node this is.",
        "SELECT pg_create_physical_replication_slot(s, true)",
        f"  FROM unnest({wanted_array}) AS s",
        "  WHERE s <> 'elizadb_' || replace(current_setting('cluster_name'), '-', '_')",
        "    AND NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = s);",
        "DO $$",
        "DECLARE",
        "  s record;",
        "BEGIN",
        "  FOR s IN SELECT slot_name FROM pg_replication_slots",
        f"           WHERE starts_with(slot_name, '{SLOT_PREFIX}')",
        f"             AND slot_name <> ALL ({wanted_array}) LOOP",
        "    FOR i IN 1..50 LOOP",
        "      PERFORM pg_terminate_backend(active_pid) FROM pg_replication_slots",
        "        WHERE slot_name = s.slot_name AND active_pid IS NOT NULL;",
        "      EXIT WHEN NOT EXISTS (SELECT FROM pg_replication_slots",
        "                            WHERE slot_name = s.slot_name AND active);",
        "      PERFORM pg_sleep(0.1);",
        "    END LOOP;",
        "    PERFORM pg_drop_replication_slot(s.slot_name);",
        "    RAISE NOTICE 'dropped replication slot % (its node is no longer configured)', s.slot_name;",
        "  END LOOP;",
        "END $$;",
    ]


@dataclass(frozen=True)
class VectorIndex:
    """One HNSW index on memories.embedding, as sql/0005_indexes.sql names and defines it."""

    operator: VectorOperator
    name: str
    opclass: str
    serves: str  # the SQL operator its operator class serves


VECTOR_INDEXES: tuple[VectorIndex, ...] = (
    VectorIndex("cosine", "idx_memories_embedding", "vector_cosine_ops", "<=>"),
    VectorIndex("l2", "idx_memories_embedding_l2", "vector_l2_ops", "<->"),
)


def _vector_index_steps(index: VectorIndex, wanted: bool) -> list[str]:
    """psql steps that bring one index to what is configured, each saying what it did."""
    regclass = f"to_regclass({_literal('public.' + index.name)})"
    label = f"vector index {index.name} ({index.operator}, serves {index.serves})"
    # A build that is still running in another session shows as invalid too: it is left to
    # finish (dropping it would wait for it anyway, then throw its work away).
    invalid = (
        f"SELECT EXISTS (SELECT FROM pg_index WHERE indexrelid = {regclass} AND NOT indisvalid)"
        f"   AND NOT EXISTS (SELECT FROM pg_stat_progress_create_index"
        f" WHERE index_relid = {regclass}) AS elizadb_invalid \\gset"
    )
    drop = f"DROP INDEX CONCURRENTLY IF EXISTS public.{_ident(index.name)};"
    if not wanted:
        return [
            f"SELECT {regclass} IS NOT NULL AS elizadb_present \\gset",
            "\\if :elizadb_present",
            f"\\echo {label}: not in vector.operators: dropping it (concurrently)",
            drop,
            f"\\echo {label}: dropped",
            "\\else",
            f"\\echo {label}: not in vector.operators, absent",
            "\\endif",
        ]
    return [
        invalid,
        "\\if :elizadb_invalid",
        f"\\echo {label}: INVALID (an interrupted concurrent build left it): dropping it",
        drop,
        "\\endif",
        f"SELECT {regclass} IS NULL AS elizadb_missing \\gset",
        "\\if :elizadb_missing",
        f"\\echo {label}: missing: building it concurrently (the table keeps taking writes)",
        "SELECT clock_timestamp() AS elizadb_started \\gset",
        (
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {_ident(index.name)} ON public.memories"
            f" USING hnsw (embedding public.{index.opclass});"
        ),
        (
            f"SELECT format('{label}: built in %s s, %s',"
            " round(extract(epoch FROM clock_timestamp() - :'elizadb_started'::timestamptz)"
            "::numeric, 1),"
            f" pg_size_pretty(pg_relation_size({regclass}))) AS elizadb_said \\gset"
        ),
        "\\echo :elizadb_said",
        "\\else",
        f"\\echo {label}: present and valid",
        "\\endif",
    ]


def render_vector_indexes_sql(settings: StackSettings) -> str | None:
    """vector_indexes.sql: run by the job after the migrations, outside any transaction, so
    that only the HNSW indexes of `vector.operators` exist on memories.embedding.

    Migrations run once per file, so a changed setting is reconciled here, on every run of the
    job: a missing index is built with CREATE INDEX CONCURRENTLY (a populated table keeps taking
    writes meanwhile; an INVALID index left by an interrupted build is dropped first, as IF NOT
    EXISTS would keep it), an unconfigured one is dropped. Idempotent. None for stacks whose
    schema the kit does not index (eliza-1)."""
    if settings.profile != "eliza-0.1":
        return None
    wanted = settings.vector_operators
    out = [
        f"-- {HEADER}",
        "\\set ON_ERROR_STOP on",
        "SET client_min_messages = warning;",
        # The job's PGOPTIONS keep commits local; an index build must not be cut short by a
        # database-wide statement_timeout either.
        "SET statement_timeout = 0;",
        f"\\echo vector indexes: configured {', '.join(wanted)}",
    ]
    for index in VECTOR_INDEXES:
        out += ["", *_vector_index_steps(index, index.operator in wanted)]
    return "\n".join(out) + "\n"
