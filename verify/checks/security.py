"""security: row level security where users' rows live, least privilege for the runtime roles,
nothing granted to PUBLIC, and an end user who cannot read another user's rows."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql

from verify.context import Context, scalar
from verify.expected_schema import RLS_TABLES
from verify.model import Check, Findings, Outcome, Unreachable, skipped

RUNTIME_ROLES = ("eliza_agent", "eliza_user", "eliza_readonly")
END_USER = "eliza_user"
# Schemas of the stack's own objects (extensions live in public too).
APP_SCHEMAS = ("public", "auth", "elizadb", "pgbouncer")
SYSTEM_SCHEMAS = ["pg_catalog", "information_schema", "pg_toast"]


def _primary_app(ctx: Context, seen: Findings) -> psycopg.Connection[Any] | None:
    try:
        return ctx.app_db(ctx.outputs.primary)
    except Unreachable as err:
        seen.unreachable(err)
        return None


def check_rls(ctx: Context) -> Outcome:
    """Row level security is enabled AND forced on every table that holds users' rows, each has
    a policy for eliza_user, and eliza_user can read no table without RLS."""
    seen = Findings()
    conn = _primary_app(ctx, seen)
    if conn is None:
        return seen.outcome("", "")
    rows = conn.execute(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
        "       EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid"
        "                  AND %s::regrole = ANY (p.polroles)),"
        "       has_table_privilege(%s, c.oid, 'SELECT, INSERT, UPDATE, DELETE')"
        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
        (END_USER, END_USER),
    ).fetchall()
    by_name = {r[0]: r for r in rows}
    for table in RLS_TABLES:
        if table not in by_name:
            seen.not_checked(f"table {table}", "schema.tables", "missing")
            continue
        _, enabled, forced, has_policy, _ = by_name[table]
        if not enabled:
            seen.problem(f"{table}: row level security is disabled")
        elif not forced:
            seen.problem(f"{table}: row level security is not forced (its owner bypasses it)")
        if not has_policy:
            seen.problem(f"{table}: no policy for {END_USER}")
    for name, enabled, _, _, user_can in rows:
        if user_can and not enabled and name not in RLS_TABLES:
            seen.problem(
                f"{name}: {END_USER} has privileges on it but it has no row level security"
            )
    return seen.outcome(
        f"RLS enabled and forced on {len(RLS_TABLES)} tables",
        "run the RLS migration again (`elizadb migrate`), or: ALTER TABLE public.<t> ENABLE ROW "
        "LEVEL SECURITY; ALTER TABLE public.<t> FORCE ROW LEVEL SECURITY",
    )


def check_role_privileges(ctx: Context) -> Outcome:
    """The runtime roles (eliza_agent, eliza_user, eliza_readonly) hold no superuser or other
    role attribute, belong to no role, own nothing, cannot CREATE in the database or any schema,
    have no TRUNCATE/REFERENCES/TRIGGER/MAINTAIN on any table, and eliza_readonly cannot write."""
    seen = Findings()
    conn = _primary_app(ctx, seen)
    if conn is None:
        return seen.outcome("", "")
    for role in RUNTIME_ROLES:
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication"
            "  FROM pg_roles WHERE rolname = %s",
            (role,),
        ).fetchone()
        if row is None:
            seen.problem(f"role {role} does not exist")
            continue
        attrs = [
            a
            for a, on in zip(
                ("SUPERUSER", "CREATEROLE", "CREATEDB", "BYPASSRLS", "REPLICATION"),
                row,
                strict=True,
            )
            if on
        ]
        if attrs:
            seen.problem(f"{role} has {', '.join(attrs)}")
        for (other,) in conn.execute(
            "SELECT b.rolname FROM pg_roles b WHERE b.rolname <> %s"
            "   AND pg_has_role(%s, b.oid, 'MEMBER') ORDER BY 1",
            (role, role),
        ).fetchall():
            seen.problem(f"{role} is a member of {other} and has its privileges")
        for what in conn.execute(
            "SELECT 'database ' || current_database() || ' (' || p || ')'"
            "  FROM unnest(ARRAY['CREATE', 'TEMPORARY']) p"
            " WHERE has_database_privilege(%s, current_database(), p)"
            " UNION ALL SELECT 'schema ' || nspname FROM pg_namespace"
            " WHERE nspname <> ALL (%s) AND nspname NOT LIKE 'pg_temp%%'"
            "   AND nspname NOT LIKE 'pg_toast_temp%%' AND has_schema_privilege(%s, oid, 'CREATE')",
            (role, SYSTEM_SCHEMAS, role),
        ).fetchall():
            seen.problem(f"{role} may CREATE in {what[0]}")
        for (obj,) in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relowner = %s::regrole"
            " UNION ALL SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proowner = %s::regrole"
            " UNION ALL SELECT n.nspname FROM pg_namespace n WHERE n.nspowner = %s::regrole",
            (role, role, role),
        ).fetchall():
            seen.problem(f"{role} owns {obj}")
        forbidden = "TRUNCATE, REFERENCES, TRIGGER, MAINTAIN"
        if role == "eliza_readonly":
            forbidden += ", INSERT, UPDATE, DELETE"
        for table, privs in conn.execute(
            "SELECT c.oid::regclass::text, string_agg(p, ', ' ORDER BY p)"
            "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,"
            "       unnest(string_to_array(%s, ', ')) p"
            " WHERE n.nspname = ANY (%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
            "   AND has_table_privilege(%s, c.oid, p)"
            " GROUP BY 1 ORDER BY 1",
            (forbidden, list(APP_SCHEMAS), role),
        ).fetchall():
            seen.problem(f"{role} has {privs} on {table}")
    return seen.outcome(
        f"{', '.join(RUNTIME_ROLES)}: DML only, no DDL, no role attributes",
        "REVOKE what was granted (e.g. REVOKE CREATE ON SCHEMA public FROM <role>; REVOKE "
        "TRUNCATE ON <table> FROM <role>; ALTER ROLE <role> NOSUPERUSER ...); `elizadb up` "
        "resets the role attributes",
    )


def check_public_privileges(ctx: Context) -> Outcome:
    """PUBLIC holds nothing it should not: no privilege on the Eliza and postgres databases, no
    CREATE on any schema, no privilege on any table of the stack's schemas, no EXECUTE on a
    SECURITY DEFINER function, and no default privileges."""
    seen = Findings()
    conn = _primary_app(ctx, seen)
    if conn is None:
        return seen.outcome("", "")
    for (what,) in conn.execute(
        # grantee 0 is PUBLIC in aclexplode; a NULL acl means the built-in default.
        "SELECT 'database ' || d.datname || ': ' || a.privilege_type"
        "  FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a"
        " WHERE a.grantee = 0 AND d.datname IN (current_database(), 'postgres')"
        " UNION ALL"
        " SELECT 'schema ' || n.nspname || ': CREATE'"
        "  FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a"
        " WHERE a.grantee = 0 AND a.privilege_type = 'CREATE'"
        " UNION ALL"
        " SELECT 'table ' || c.oid::regclass::text || ': ' || a.privilege_type"
        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,"
        "       aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a"
        " WHERE a.grantee = 0 AND n.nspname = ANY (%s) AND c.relkind IN ('r','p','v','m','f','S')"
        " UNION ALL"
        " SELECT 'SECURITY DEFINER function ' || p.oid::regprocedure::text || ': EXECUTE'"
        "  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace,"
        "       aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a"
        " WHERE a.grantee = 0 AND p.prosecdef AND n.nspname <> ALL (%s)"
        " UNION ALL"
        " SELECT 'default privileges of ' || pg_get_userbyid(d.defaclrole) || ': '"
        "        || a.privilege_type"
        "  FROM pg_default_acl d, aclexplode(d.defaclacl) a WHERE a.grantee = 0"
        " ORDER BY 1",
        (list(APP_SCHEMAS), SYSTEM_SCHEMAS),
    ).fetchall():
        seen.problem(f"PUBLIC has {what}")
    return seen.outcome(
        "nothing granted to PUBLIC on databases, schemas, tables or definer functions",
        "REVOKE it FROM PUBLIC (e.g. REVOKE CREATE ON SCHEMA public FROM PUBLIC; REVOKE ALL ON "
        "DATABASE <db> FROM PUBLIC); the bootstrap and migration 0001 do so on `elizadb up`",
    )


# Rows one probe user must see (own) and must not see (the other user's), per table. The probe
# writes them as the superuser in a transaction that is always rolled back.
_PROBE_TABLES = ("accounts", "rooms", "memories", "goals", "participants", "relationships", "logs")


def check_user_isolation(ctx: Context) -> Outcome:
    """As eliza_user with a JWT subject (request.jwt.claim.sub), a user reads their own rows and
    none of another user's, in every table with users' rows, and cannot write a row for another
    user. Probed on synthetic rows in a transaction that is rolled back.

    In read-only mode nothing is written: the probe takes a subject that owns nothing and checks
    that it reads no rows at all (inconclusive, hence a skip, when the tables are empty).
    """
    seen = Findings()
    conn = _primary_app(ctx, seen)
    if conn is None:
        return seen.outcome("", "")
    if ctx.read_only:
        return _isolation_read_only(conn)
    with conn.transaction(force_rollback=True):
        ids = _write_probe_rows(conn)
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(END_USER)))
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (str(ids["alice"]),))
        for table in _PROBE_TABLES:
            own, other = ids[f"{table}.alice"], ids[f"{table}.bob"]
            visible = {
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT id FROM public.{} WHERE id = ANY (%s)").format(
                        sql.Identifier(table)
                    ),
                    ([own, other],),
                ).fetchall()
            }
            if other in visible:
                seen.problem(f"{table}: user alice reads user bob's row")
            if own not in visible:
                seen.problem(f"{table}: user alice cannot read her own row")
        try:
            with conn.transaction():  # a savepoint: the expected error must not end the probe
                conn.execute(
                    'INSERT INTO public.memories (type, content, "userId", "roomId")'
                    " VALUES ('elizadb_verify_probe', '{}', %s, %s)",
                    (ids["bob"], ids["rooms.bob"]),
                )
            seen.problem("memories: user alice wrote a row as user bob")
        except psycopg.errors.InsufficientPrivilege:
            pass  # "new row violates row-level security policy": what we want
    return seen.outcome(
        f"eliza_user sees only its own rows in {len(_PROBE_TABLES)} tables (probe rolled back)",
        "check the isolation policies (\\d+ public.<table>, pg_policies): each must restrict "
        "eliza_user to auth.uid(); a permissive USING (true) policy for eliza_user, or RLS "
        "switched off, exposes every user's rows",
    )


def _write_probe_rows(conn: psycopg.Connection[Any]) -> dict[str, uuid.UUID]:
    """Two users, alice and bob, each with a room and one row in every probed table."""
    ids: dict[str, uuid.UUID] = {}
    for user in ("alice", "bob"):
        uid = ids[user] = ids[f"accounts.{user}"] = uuid.uuid4()
        room = ids[f"rooms.{user}"] = uuid.uuid4()
        for key in ("memories", "goals", "participants", "relationships", "logs"):
            ids[f"{key}.{user}"] = uuid.uuid4()
        conn.execute(
            "INSERT INTO public.accounts (id, name, email) VALUES (%s, %s, %s)",
            (uid, f"elizadb-verify {user}", f"{uid}@verify.invalid"),
        )
        conn.execute("INSERT INTO public.rooms (id) VALUES (%s)", (room,))
        conn.execute(
            'INSERT INTO public.participants (id, "userId", "roomId") VALUES (%s, %s, %s)',
            (ids[f"participants.{user}"], uid, room),
        )
        conn.execute(
            'INSERT INTO public.memories (id, type, content, "userId", "roomId")'
            " VALUES (%s, 'elizadb_verify_probe', '{}', %s, %s)",
            (ids[f"memories.{user}"], uid, room),
        )
        conn.execute(
            'INSERT INTO public.goals (id, "userId", "roomId", name) VALUES (%s, %s, %s, %s)',
            (ids[f"goals.{user}"], uid, room, "probe"),
        )
        conn.execute(
            'INSERT INTO public.relationships (id, "userA", "userB", "userId")'
            " VALUES (%s, %s, %s, %s)",
            (ids[f"relationships.{user}"], uid, uid, uid),
        )
        conn.execute(
            'INSERT INTO public.logs (id, "userId", "roomId", body, type)'
            " VALUES (%s, %s, %s, '{}', 'probe')",
            (ids[f"logs.{user}"], uid, room),
        )
    return ids


def _isolation_read_only(conn: psycopg.Connection[Any]) -> Outcome:
    seen = Findings()
    with conn.transaction(force_rollback=True):
        totals = {
            t: scalar(conn, sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(t)))
            for t in _PROBE_TABLES
        }
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(END_USER)))
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (str(uuid.uuid4()),))
        for table in _PROBE_TABLES:
            if totals[table]:
                seen_rows = scalar(
                    conn, sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table))
                )
                if seen_rows:
                    seen.problem(
                        f"{table}: a user who owns nothing reads {seen_rows} of "
                        f"{totals[table]} rows"
                    )
    probed = [t for t in _PROBE_TABLES if totals[t]]
    if not probed and not seen.problems:
        return skipped("read-only mode and no rows to probe: isolation not tested")
    return seen.outcome(
        f"read-only probe: a user who owns nothing reads no rows in {', '.join(probed)}",
        "check the isolation policies (pg_policies) and that RLS is enabled on every table",
    )


CHECKS = (
    Check("security.rls", check_rls, profiles=("eliza-0.1",)),
    Check("security.role_privileges", check_role_privileges, profiles=("eliza-0.1",)),
    Check("security.public_privileges", check_public_privileges),
    Check("security.user_isolation", check_user_isolation, profiles=("eliza-0.1",)),
)
