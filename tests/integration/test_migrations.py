"""The schema migrations (sql/) and their runner (image/migrate.sh), against a real PostgreSQL 17
+ pgvector server in a container of our image.

One container per module. The runner runs inside it, as `elizadb-migrate DIR`, connecting over
TCP with a pgpass file like a deployment would; the checks connect from the host as the roles
the bootstrap creates (eliza_agent, eliza_user, eliza_readonly).

Databases in the container:
    eliza             the main one, migrated once by `first_run`, 1536 dimensions, owned by postgres
    eliza_dims384     migrated with ELIZADB_EMBEDDING_DIMS=384, owned by eliza_owner
    eliza_concurrent  migrated by two runners at once
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import psycopg.errors
import pytest
from pgvector.psycopg import register_vector
from psycopg import pq

from infra.settings import DEFAULT_EMBEDDING_DIMENSIONS, MAX_EMBEDDING_DIMENSIONS
from tests.integration.needs import missing
from tests.integration.pg_scratch import (
    REPO_ROOT,
    EngineUnavailable,
    ExecResult,
    ScratchPostgres,
    build_image,
    engine_client,
)

pytestmark = [pytest.mark.integration, pytest.mark.once]

SQL_DIR = REPO_ROOT / "sql"
RUNNER = REPO_ROOT / "image" / "migrate.sh"
SQL_IN_CONTAINER = "/opt/elizadb/sql"
DIMS = 1536

# The roles the bootstrap creates before migrations run (contract item 4), with test passwords.
PASSWORDS = {
    "eliza_owner": "owner-pw",
    "eliza_agent": "agent-pw",
    "eliza_user": "user-pw",
    "eliza_readonly": "readonly-pw",
    "eliza_replicator": "replicator-pw",
    "eliza_backup": "backup-pw",
    "pgbouncer_auth": "pgbouncer-pw",
}

ELIZA_TABLES = (
    "accounts",
    "rooms",
    "memories",
    "goals",
    "participants",
    "relationships",
    "logs",
    "cache",
    "knowledge",
)
RLS_TABLES = ("accounts", "rooms", "memories", "goals", "participants", "relationships", "logs")


def migration_files() -> list[Path]:
    return sorted(SQL_DIR.glob("*.sql"))


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[ScratchPostgres]:
    try:
        client = engine_client()
    except EngineUnavailable as exc:
        missing(f"a container engine is needed: {exc}")
    build_image(client)
    with ScratchPostgres.start(client, "migrations") as server:
        with server.connect("postgres", autocommit=True) as conn:
            for role, password in PASSWORDS.items():
                extra = " REPLICATION" if role == "eliza_replicator" else ""
                conn.execute(f"CREATE ROLE {role} LOGIN{extra} PASSWORD '{password}'")
            conn.execute("CREATE DATABASE eliza")
            conn.execute("CREATE DATABASE eliza_dims384 OWNER eliza_owner")
            conn.execute("CREATE DATABASE eliza_concurrent")
        server.put_files("/usr/local/bin", {"elizadb-migrate": RUNNER.read_bytes()}, 0o755)
        server.put_files(SQL_IN_CONTAINER, {p.name: p.read_bytes() for p in migration_files()})
        yield server


def migrate(
    pg: ScratchPostgres,
    database: str,
    sql_dir: str = SQL_IN_CONTAINER,
    dims: int | str | None = None,
) -> ExecResult:
    env = pg.libpq_env(database)
    # What the bootstrap job passes: the size and its bound, from infra/settings.py.
    env["ELIZADB_EMBEDDING_DIMS"] = str(DEFAULT_EMBEDDING_DIMENSIONS if dims is None else dims)
    env["ELIZADB_EMBEDDING_MAX_DIMS"] = str(MAX_EMBEDDING_DIMENSIONS)
    return pg.exec(["elizadb-migrate", sql_dir], env=env)


@pytest.fixture(scope="module")
def first_run(pg: ScratchPostgres) -> ExecResult:
    result = migrate(pg, "eliza")
    assert result.exit_code == 0, result.stderr
    return result


def ledger(pg: ScratchPostgres, database: str = "eliza") -> list[tuple[Any, ...]]:
    with pg.connect(database) as conn:
        return conn.execute(
            "SELECT version, name, checksum, applied_at FROM elizadb.schema_migrations "
            "ORDER BY version"
        ).fetchall()


def connect_as(pg: ScratchPostgres, role: str, database: str = "eliza") -> psycopg.Connection[Any]:
    return pg.connect(database, user=role, password=PASSWORDS[role], autocommit=True)


@dataclass(frozen=True)
class People:
    agent: uuid.UUID
    alice: uuid.UUID
    bob: uuid.UUID
    room: uuid.UUID


@pytest.fixture(scope="module")
def people(pg: ScratchPostgres, first_run: ExecResult) -> People:
    """An agent and two users in one room; alice has two memories, bob one, and the agent one
    addressed to alice."""
    p = People(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    with pg.connect("eliza", autocommit=True) as conn:
        for who, email in ((p.agent, "agent@x"), (p.alice, "alice@x"), (p.bob, "bob@x")):
            conn.execute("INSERT INTO accounts (id, email) VALUES (%s, %s)", (who, email))
        conn.execute("INSERT INTO rooms (id) VALUES (%s)", (p.room,))
        for who in (p.agent, p.alice, p.bob):
            conn.execute(
                'INSERT INTO participants ("userId", "roomId") VALUES (%s, %s)', (who, p.room)
            )
        rows = [
            (p.alice, p.agent, "alice 1"),
            (p.alice, p.agent, "alice 2"),
            (p.bob, p.agent, "bob 1"),
        ]
        rows.append((p.agent, p.agent, "agent to alice"))
        for user, agent, text in rows:
            conn.execute(
                'INSERT INTO memories (type, content, "userId", "agentId", "roomId") '
                "VALUES ('messages', %s, %s, %s, %s)",
                (json.dumps({"text": text}), user, agent, p.room),
            )
        # The agent's own message is stored with the agent as user; make one "agentId" = alice
        # to exercise the seed policy's second branch.
        conn.execute(
            "UPDATE memories SET \"agentId\" = %s WHERE content->>'text' = 'agent to alice'",
            (p.alice,),
        )
    return p


# ---- the runner -----------------------------------------------------------------------------


def test_first_run_applies_every_file_in_order(pg: ScratchPostgres, first_run: ExecResult) -> None:
    names = [p.name for p in migration_files()]
    assert first_run.stdout.splitlines() == [f"applied {n}" for n in names]
    assert first_run.stderr == ""
    recorded = [(v, n, c) for v, n, c, _ in ledger(pg)]
    expected = [(n[:4], n, hashlib.sha256((SQL_DIR / n).read_bytes()).hexdigest()) for n in names]
    assert recorded == expected


def test_second_run_is_a_no_op(pg: ScratchPostgres, first_run: ExecResult) -> None:
    before = ledger(pg)
    again = migrate(pg, "eliza")
    assert again.exit_code == 0, again.stderr
    assert again.stdout.splitlines() == [f"unchanged {p.name}" for p in migration_files()]
    assert again.stderr == ""
    assert ledger(pg) == before


def test_changed_applied_migration_is_drift_and_nothing_is_applied(
    pg: ScratchPostgres, first_run: ExecResult
) -> None:
    files = {p.name: p.read_bytes() for p in migration_files()}
    tampered_name = "0003_core_tables.sql"
    old_sum = hashlib.sha256(files[tampered_name]).hexdigest()
    files[tampered_name] += b"\n-- an edit after the fact\n"
    new_sum = hashlib.sha256(files[tampered_name]).hexdigest()
    # A new file sorted after the tampered one: drift must stop the run before it.
    files["0900_must_not_apply.sql"] = b"CREATE TABLE public.must_not_apply (x int);\n"
    pg.put_files("/opt/elizadb/sql-tampered", files)
    before = ledger(pg)

    result = migrate(pg, "eliza", "/opt/elizadb/sql-tampered")

    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        (
            f"elizadb-migrate: drift: {tampered_name} was applied with checksum {old_sum} but "
            f"the file now has {new_sum}; an applied migration must not change — add a new "
            "migration instead"
        )
    ]
    assert ledger(pg) == before
    with pg.connect("eliza") as conn:
        assert conn.execute("SELECT to_regclass('public.must_not_apply')").fetchone() == (None,)


def test_failing_migration_exits_1_and_leaves_no_trace(
    pg: ScratchPostgres, first_run: ExecResult
) -> None:
    files = {p.name: p.read_bytes() for p in migration_files()}
    files["0901_broken.sql"] = b"CREATE TABLE public.half_done (x int);\nSELECT 1 / 0;\n"
    pg.put_files("/opt/elizadb/sql-broken", files)

    result = migrate(pg, "eliza", "/opt/elizadb/sql-broken")

    assert result.exit_code == 1
    assert "division by zero" in result.stderr
    assert "0901_broken.sql failed" in result.stderr
    assert "applied 0901_broken.sql" not in result.stdout
    with pg.connect("eliza") as conn:
        # The file and its ledger row were one transaction: neither is there.
        assert conn.execute("SELECT to_regclass('public.half_done')").fetchone() == (None,)
        assert conn.execute(
            "SELECT count(*) FROM elizadb.schema_migrations WHERE version = '0901'"
        ).fetchone() == (0,)


@pytest.mark.parametrize("bad", ["abc", "0", "2001", "-5"])
def test_bad_embedding_dims_is_a_usage_error(pg: ScratchPostgres, bad: str) -> None:
    result = migrate(pg, "eliza_concurrent", dims=bad)
    assert result.exit_code == 2
    assert "ELIZADB_EMBEDDING_DIMS" in result.stderr


def test_concurrent_runs_apply_each_file_once(pg: ScratchPostgres) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: migrate(pg, "eliza_concurrent"), range(2)))
    assert [r.exit_code for r in results] == [0, 0], [r.stderr for r in results]
    applied = [
        line for r in results for line in r.stdout.splitlines() if line.startswith("applied")
    ]
    assert sorted(applied) == [f"applied {p.name}" for p in migration_files()]
    assert len(ledger(pg, "eliza_concurrent")) == len(migration_files())


def test_embedding_dimension_is_honoured(pg: ScratchPostgres) -> None:
    result = migrate(pg, "eliza_dims384", dims=384)
    assert result.exit_code == 0, result.stderr
    with pg.connect("eliza_dims384") as conn:
        types = conn.execute(
            "SELECT attrelid::regclass::text, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attname = 'embedding' "
            "AND attrelid IN ('memories'::regclass, 'knowledge'::regclass) "
            "ORDER BY 1"
        ).fetchall()
    assert types == [("knowledge", "vector(384)"), ("memories", "vector(384)")]

    # A later run with another size changes nothing, and says why the agent will fail.
    again = migrate(pg, "eliza_dims384", dims=1536)
    assert again.exit_code == 0
    assert set(again.stdout.split()) - {"unchanged"} == {p.name for p in migration_files()}
    assert "memories.embedding is vector(384) but ELIZADB_EMBEDDING_DIMS is 1536" in again.stderr


# ---- the schema -----------------------------------------------------------------------------

# table -> column -> (type, NOT NULL, default); from the seed guide, plus what the adapter needs.
EXPECTED_COLUMNS: dict[str, dict[str, tuple[str, bool, str | None]]] = {
    "accounts": {
        "id": ("uuid", True, "gen_random_uuid()"),
        "createdAt": ("timestamp with time zone", True, "CURRENT_TIMESTAMP"),
        "name": ("text", False, None),
        "username": ("text", False, None),
        "email": ("text", True, None),
        "avatarUrl": ("text", False, None),
        "details": ("jsonb", False, "'{}'::jsonb"),
    },
    "rooms": {
        "id": ("uuid", True, "gen_random_uuid()"),
        "createdAt": ("timestamp with time zone", True, "CURRENT_TIMESTAMP"),
    },
    "memories": {
        "id": ("uuid", True, "gen_random_uuid()"),
        "type": ("text", True, None),
        "createdAt": ("timestamp with time zone", True, "CURRENT_TIMESTAMP"),
        "content": ("jsonb", True, None),
        "embedding": (f"vector({DIMS})", False, None),
        "userId": ("uuid", False, None),
        "agentId": ("uuid", False, None),
        "roomId": ("uuid", False, None),
        "isUnique": ("boolean", True, "true"),
        "unique": ("boolean", True, "true"),
    },
    "goals": {
        "id": ("uuid", True, "gen_random_uuid()"),
        "createdAt": ("timestamp with time zone", True, "CURRENT_TIMESTAMP"),
        "userId": ("uuid", False, None),
        "name": ("text", False, None),
        "status": ("text", False, None),
        "description": ("text", False, None),
        "roomId": ("uuid", False, None),
        "objectives": ("jsonb", True, "'[]'::jsonb"),
    },
    "participants": {
        "id": ("uuid", True, "gen_random_uuid()"),
        "createdAt": ("timestamp with time zone", True, "CURRENT_TIMESTAMP"),
        "joinedAt": ("timestamp with time zone", True, "CURRENT_TIMESTAMP"),
        "userId": ("uuid", False, None),
        "roomId": ("uuid", False, None),
        "userState": ("text", False, None),
        "last_message_read": ("text", False, None),
    },
    "relationships": {
        "id": ("uuid", True, "gen_random_uuid()"),
        "createdAt": ("timestamp with time zone", True, "CURRENT_TIMESTAMP"),
        "userA": ("uuid", True, None),
        "userB": ("uuid", True, None),
        "status": ("text", False, None),
        "userId": ("uuid", True, None),
    },
    "logs": {
        "id": ("uuid", True, "gen_random_uuid()"),
        "createdAt": ("timestamp with time zone", True, "CURRENT_TIMESTAMP"),
        "userId": ("uuid", True, None),
        "body": ("jsonb", True, None),
        "type": ("text", True, None),
        "roomId": ("uuid", True, None),
    },
    "cache": {
        "key": ("text", True, None),
        "agentId": ("text", True, None),
        "value": ("jsonb", False, "'{}'::jsonb"),
        "createdAt": ("timestamp with time zone", True, "CURRENT_TIMESTAMP"),
        "expiresAt": ("timestamp with time zone", False, None),
    },
    "knowledge": {
        "id": ("uuid", True, "gen_random_uuid()"),
        "agentId": ("uuid", False, None),
        "content": ("jsonb", True, None),
        "embedding": (f"vector({DIMS})", False, None),
        "createdAt": ("timestamp with time zone", True, "CURRENT_TIMESTAMP"),
        "isMain": ("boolean", True, "false"),
        "originalId": ("uuid", False, None),
        "chunkIndex": ("integer", False, None),
        "isShared": ("boolean", True, "false"),
    },
}

# (table, column) -> referenced table; every one ON DELETE CASCADE.
EXPECTED_FOREIGN_KEYS = {
    ("memories", "userId"): "accounts",
    ("memories", "agentId"): "accounts",
    ("memories", "roomId"): "rooms",
    ("goals", "userId"): "accounts",
    ("goals", "roomId"): "rooms",
    ("participants", "userId"): "accounts",
    ("participants", "roomId"): "rooms",
    ("relationships", "userA"): "accounts",
    ("relationships", "userB"): "accounts",
    ("relationships", "userId"): "accounts",
    ("logs", "userId"): "accounts",
    ("logs", "roomId"): "rooms",
    ("knowledge", "agentId"): "accounts",
    ("knowledge", "originalId"): "knowledge",
}

# index -> the tail of its definition (after "ON public.<table> ").
EXPECTED_INDEXES = {
    "idx_memories_embedding": "USING hnsw (embedding vector_cosine_ops)",
    "idx_memories_embedding_l2": "USING hnsw (embedding vector_l2_ops)",
    "idx_memories_type_room": 'USING btree (type, "roomId")',
    "idx_memories_recent": 'USING btree (type, "roomId", "agentId", "createdAt" DESC)',
    "idx_participants_user": 'USING btree ("userId")',
    "idx_participants_room": 'USING btree ("roomId")',
}


def test_tables_columns_and_defaults(pg: ScratchPostgres, first_run: ExecResult) -> None:
    with pg.connect("eliza") as conn:
        rows = conn.execute(
            """
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid)
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
            WHERE c.relkind = 'r' AND c.relname = ANY(%s)
            """,
            (list(EXPECTED_COLUMNS),),
        ).fetchall()
    actual: dict[str, dict[str, tuple[str, bool, str | None]]] = {}
    for table, column, typ, notnull, default in rows:
        actual.setdefault(table, {})[column] = (typ, notnull, default)
    assert actual == EXPECTED_COLUMNS


def test_foreign_keys_cascade(pg: ScratchPostgres, first_run: ExecResult) -> None:
    with pg.connect("eliza") as conn:
        rows = conn.execute(
            """
            SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text,
                   c.confdeltype, fa.attname
            FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            JOIN pg_attribute fa ON fa.attrelid = c.confrelid AND fa.attnum = c.confkey[1]
            WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
            """
        ).fetchall()
    assert {(t, col): ref for t, col, ref, _, _ in rows} == EXPECTED_FOREIGN_KEYS
    assert {deltype for _, _, _, deltype, _ in rows} == {"c"}  # c = CASCADE
    assert {refcol for *_, refcol in rows} == {"id"}


def test_indexes_storage_and_settings(pg: ScratchPostgres, first_run: ExecResult) -> None:
    with pg.connect("eliza") as conn:
        defs = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            ).fetchall()
        )
        storage = conn.execute(
            "SELECT attrelid::regclass::text, attstorage FROM pg_attribute "
            "WHERE attname = 'embedding' "
            "AND attrelid IN ('memories'::regclass, 'knowledge'::regclass) "
            "ORDER BY 1"
        ).fetchall()
        extensions = {r[0] for r in conn.execute("SELECT extname FROM pg_extension").fetchall()}
        owners = set(
            conn.execute(
                "SELECT relname, pg_get_userbyid(relowner) FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
            ).fetchall()
        )
        db_settings = conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s "
            "JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = current_database() AND s.setrole = 0"
        ).fetchone()
    for name, tail in EXPECTED_INDEXES.items():
        assert name in defs, f"index {name} is missing"
        assert defs[name].endswith(tail), defs[name]
    # PLAIN: the vectors stay inline and uncompressed (faster exact scans; see the trip-wires).
    assert storage == [("knowledge", "p"), ("memories", "p")]
    assert {"vector", "fuzzystrmatch", "pgcrypto"} <= extensions
    assert owners == {(t, "eliza_owner") for t in ELIZA_TABLES}
    assert db_settings is not None and "hnsw.iterative_scan=relaxed_order" in db_settings[0]


def test_unique_and_is_unique_are_one_flag(pg: ScratchPostgres, people: People) -> None:
    p = people
    with connect_as(pg, "eliza_agent") as conn:

        def flags(content: str) -> tuple[Any, ...] | None:
            return conn.execute(
                """SELECT "unique", "isUnique" FROM memories WHERE content->>'text' = %s""",
                (content,),
            ).fetchone()

        insert = (
            "INSERT INTO memories (type, content, \"roomId\", {col}) VALUES ('t', %s, %s, false)"
        )
        conn.execute(insert.format(col='"unique"'), (json.dumps({"text": "via unique"}), p.room))
        conn.execute(
            insert.format(col='"isUnique"'), (json.dumps({"text": "via isUnique"}), p.room)
        )
        conn.execute(
            "INSERT INTO memories (type, content, \"roomId\") VALUES ('t', %s, %s)",
            (json.dumps({"text": "default"}), p.room),
        )
        assert flags("via unique") == (False, False)
        assert flags("via isUnique") == (False, False)
        assert flags("default") == (True, True)

        conn.execute(
            """UPDATE memories SET "isUnique" = true WHERE content->>'text' = 'via unique'"""
        )
        assert flags("via unique") == (True, True)
        conn.execute("""UPDATE memories SET "unique" = false WHERE content->>'text' = 'default'""")
        assert flags("default") == (False, False)
        conn.execute("DELETE FROM memories WHERE type = 't'")


# ---- vector search --------------------------------------------------------------------------


def clustered_unit_vectors(n: int, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-like data: 60 topics in a 48-dimensional latent space, projected to `dims` and
    slightly noised, then normalised. (i.i.d. random vectors have no neighbours worth the name;
    no ANN index finds them, see the trip-wires.) Returns (vectors, topic of each)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(60, 48))
    projection = rng.normal(size=(48, dims)) / np.sqrt(48)
    topic = rng.integers(0, 60, n)
    latent = centres[topic] + 0.15 * rng.normal(size=(n, 48))
    vectors = latent @ projection + 0.02 * rng.normal(size=(n, dims))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), topic


@dataclass(frozen=True)
class Corpus:
    busy_room: uuid.UUID
    quiet_room: uuid.UUID
    vectors: np.ndarray


@pytest.fixture(scope="module")
def corpus(pg: ScratchPostgres, first_run: ExecResult) -> Corpus:
    """2000 memories of one agent: 90 % are 'messages' in one busy room (a long conversation),
    the rest spread over 'facts' and three quieter rooms."""
    n = 2000
    vectors, _ = clustered_unit_vectors(n, DIMS, seed=7)
    agent, user = uuid.uuid4(), uuid.uuid4()
    rooms = [uuid.uuid4() for _ in range(4)]
    with pg.connect("eliza", autocommit=True) as conn:
        register_vector(conn)
        conn.execute(
            "INSERT INTO accounts (id, email) VALUES (%s, 'corpus-agent'), (%s, 'corpus-user')",
            (agent, user),
        )
        for room in rooms:
            conn.execute("INSERT INTO rooms (id) VALUES (%s)", (room,))
        copy_sql = (
            'COPY memories ("type", "content", "embedding", "userId", "agentId", "roomId") '
            "FROM STDIN WITH (FORMAT BINARY)"
        )
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.set_types(["text", "jsonb", "vector", "uuid", "uuid", "uuid"])
            for i in range(n):
                kind = "messages" if i % 10 else "facts"
                room = rooms[0] if i % 10 else rooms[1 + i % 3]
                copy.write_row((kind, json.dumps({"text": f"m{i}"}), vectors[i], user, agent, room))
        conn.execute("ANALYZE memories")
    return Corpus(rooms[0], rooms[1], vectors)


def plan_of(conn: psycopg.Connection[Any], sql: str, params: Sequence[Any]) -> str:
    rows = conn.execute("EXPLAIN " + sql, params).fetchall()
    return re.sub(r"'\[[^']*\]'", "'[...]'", "\n".join(r[0] for r in rows))


@pytest.mark.parametrize(
    ("operator", "index"), [("<=>", "idx_memories_embedding"), ("<->", "idx_memories_embedding_l2")]
)
def test_hnsw_serves_filtered_search(
    pg: ScratchPostgres, corpus: Corpus, operator: str, index: str
) -> None:
    # A query near one stored message (index 5 is a 'message' of the busy room).
    noise = np.random.default_rng(1).normal(size=DIMS).astype(np.float32)
    query = corpus.vectors[5] + 0.002 * noise
    query /= np.linalg.norm(query)
    sql = (
        f'SELECT id FROM memories WHERE type = %s AND "roomId" = %s '
        f"ORDER BY embedding {operator} %s LIMIT 10"
    )
    # As the agent, with the planner's defaults: no enable_* switches. The busy room holds 90 %
    # of the rows, so an ordered HNSW scan beats reading and sorting them all.
    with connect_as(pg, "eliza_agent") as conn:
        register_vector(conn)
        assert conn.execute("SHOW hnsw.iterative_scan").fetchone() == ("relaxed_order",)
        plan = plan_of(conn, sql, ("messages", corpus.busy_room, query))
        assert f"Index Scan using {index} on memories" in plan, plan
        found = [r[0] for r in conn.execute(sql, ("messages", corpus.busy_room, query)).fetchall()]
        # The same query answered exactly, for recall.
        conn.execute("SET enable_indexscan = off")
        exact = [r[0] for r in conn.execute(sql, ("messages", corpus.busy_room, query)).fetchall()]
    assert len(found) == 10
    assert len(set(found) & set(exact)) >= 9, "HNSW recall@10 below 0.9 on clustered data"

    # A room with few rows is better served by the btree and a sort; the planner knows that.
    with connect_as(pg, "eliza_agent") as conn:
        register_vector(conn)
        plan = plan_of(conn, sql, ("facts", corpus.quiet_room, query))
        assert "Sort" in plan and "idx_memories_embedding" not in plan, plan


def test_recent_memories_are_read_in_index_order(pg: ScratchPostgres, corpus: Corpus) -> None:
    """getMemories, the adapter's read on every turn: the room's latest n rows come from
    idx_memories_recent in order, without fetching and sorting the whole room."""
    sql = (
        'SELECT * FROM memories WHERE type = %s AND "roomId" = %s AND "agentId" = %s'
        ' ORDER BY "createdAt" DESC LIMIT %s'
    )
    with connect_as(pg, "eliza_agent") as conn:
        agent = conn.execute(
            'SELECT "agentId" FROM memories WHERE "roomId" = %s LIMIT 1', (corpus.busy_room,)
        ).fetchone()
        assert agent is not None
        params = ("messages", corpus.busy_room, agent[0], 32)
        plan = plan_of(conn, sql, params)
        assert "Index Scan using idx_memories_recent on memories" in plan, plan
        assert "Sort" not in plan, plan
        assert len(conn.execute(sql, params).fetchall()) == 32


# ---- roles and row level security -----------------------------------------------------------


def as_end_user(
    conn: psycopg.Connection[Any], who: uuid.UUID | None, *, claims_json: bool = False
) -> None:
    """What a trusted middle tier does for an authenticated user (PostgREST's settings)."""
    conn.execute("SELECT set_config('request.jwt.claim.sub', '', false)")
    conn.execute("SELECT set_config('request.jwt.claims', '', false)")
    if who is None:
        return
    if claims_json:
        conn.execute(
            "SELECT set_config('request.jwt.claims', %s, false)", (json.dumps({"sub": str(who)}),)
        )
    else:
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, false)", (str(who),))


def texts(conn: psycopg.Connection[Any]) -> set[str]:
    return {r[0] for r in conn.execute("SELECT content->>'text' FROM memories").fetchall()}


def test_end_user_sees_and_changes_only_own_memories(pg: ScratchPostgres, people: People) -> None:
    p = people
    with connect_as(pg, "eliza_user") as conn:
        as_end_user(conn, None)
        assert texts(conn) == set(), "with no JWT subject an end user must see nothing"

        as_end_user(conn, p.alice)
        assert conn.execute("SELECT auth.uid()").fetchone() == (p.alice,)
        assert texts(conn) == {"alice 1", "alice 2", "agent to alice"}
        as_end_user(conn, p.alice, claims_json=True)  # the request.jwt.claims form
        assert texts(conn) == {"alice 1", "alice 2", "agent to alice"}

        as_end_user(conn, p.bob)
        assert texts(conn) == {"bob 1"}
        # Alice's rows are invisible to bob, so his UPDATE and DELETE do not reach them.
        assert (
            conn.execute(
                'UPDATE memories SET content = \'{"text": "hacked"}\' '
                "WHERE content->>'text' = 'alice 1'"
            ).rowcount
            == 0
        )
        assert conn.execute("DELETE FROM memories WHERE content->>'text' = 'alice 2'").rowcount == 0
        # Nor can he write a row in someone else's name (USING doubles as WITH CHECK).
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                'INSERT INTO memories (type, content, "userId", "roomId") VALUES (%s, %s, %s, %s)',
                ("messages", json.dumps({"text": "forged"}), p.alice, p.room),
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "UPDATE memories SET \"userId\" = %s WHERE content->>'text' = 'bob 1'", (p.alice,)
            )
        # His own rows he can write.
        conn.execute(
            'INSERT INTO memories (type, content, "userId", "roomId") VALUES (%s, %s, %s, %s)',
            ("messages", json.dumps({"text": "bob 2"}), p.bob, p.room),
        )
        assert (
            conn.execute(
                'UPDATE memories SET content = \'{"text": "bob 2 edited"}\' '
                "WHERE content->>'text' = 'bob 2'"
            ).rowcount
            == 1
        )
        assert (
            conn.execute("DELETE FROM memories WHERE content->>'text' = 'bob 2 edited'").rowcount
            == 1
        )

        # The other user-carrying tables follow the same rule.
        assert conn.execute("SELECT id FROM accounts").fetchall() == [(p.bob,)]
        assert conn.execute('SELECT "userId" FROM participants').fetchall() == [(p.bob,)]
        assert conn.execute("SELECT id FROM rooms").fetchall() == [(p.room,)]
    with pg.connect("eliza") as conn:
        assert conn.execute(
            "SELECT count(*) FROM memories WHERE content->>'text' IN ('alice 1', 'alice 2')"
        ).fetchone() == (2,)


def test_end_user_cannot_turn_row_level_security_off(pg: ScratchPostgres, people: People) -> None:
    with connect_as(pg, "eliza_user") as conn:
        for table in RLS_TABLES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"):
                conn.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"):
                conn.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        # row_security = off makes a query that RLS would filter fail instead.
        conn.execute("SET row_security = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("SELECT * FROM memories")
        conn.execute("RESET row_security")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM cache")
    with pg.connect("eliza") as conn:
        flags = conn.execute(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relname = ANY(%s)",
            (list(RLS_TABLES),),
        ).fetchall()
    assert sorted(flags) == sorted((t, True, True) for t in RLS_TABLES)


def test_agent_has_dml_on_every_user_and_no_ddl(pg: ScratchPostgres, people: People) -> None:
    p = people
    with connect_as(pg, "eliza_agent") as conn:
        # Serves every user: sees all rows without any JWT subject.
        assert {"alice 1", "alice 2", "bob 1", "agent to alice"} <= texts(conn)
        row = conn.execute(
            'INSERT INTO memories (type, content, "userId", "agentId", "roomId") '
            "VALUES ('messages', '{\"text\": \"agent dml\"}', %s, %s, %s) RETURNING id",
            (p.bob, p.agent, p.room),
        ).fetchone()
        assert row is not None
        assert (
            conn.execute("UPDATE memories SET type = 'facts' WHERE id = %s", (row[0],)).rowcount
            == 1
        )
        assert conn.execute("DELETE FROM memories WHERE id = %s", (row[0],)).rowcount == 1
        for table in ELIZA_TABLES:
            conn.execute(f"SELECT 1 FROM {table} LIMIT 1")

        for ddl in (
            "CREATE TABLE public.agent_made (x int)",
            "CREATE TEMPORARY TABLE agent_temp (x int)",
            "CREATE SCHEMA agent_schema",
            "CREATE TABLE auth.agent_made (x int)",
            "ALTER TABLE memories ADD COLUMN agent_col int",
            "DROP TABLE cache",
            "TRUNCATE memories",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(ddl)


def test_readonly_reads_everything_and_writes_nothing(pg: ScratchPostgres, people: People) -> None:
    with pg.connect("eliza") as conn:
        total = conn.execute("SELECT count(*) FROM memories").fetchone()
    with connect_as(pg, "eliza_readonly") as conn:
        assert conn.execute("SELECT count(*) FROM memories").fetchone() == total
        for table in ELIZA_TABLES:
            conn.execute(f"SELECT 1 FROM {table} LIMIT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM memories")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO rooms DEFAULT VALUES")


def test_future_tables_of_the_owner_get_the_agent_grants(
    pg: ScratchPostgres, first_run: ExecResult
) -> None:
    with pg.connect("eliza", autocommit=True) as conn:
        conn.execute("SET ROLE eliza_owner")
        conn.execute("CREATE TABLE public.later_table (x int)")
    try:
        with connect_as(pg, "eliza_agent") as conn:
            conn.execute("INSERT INTO later_table VALUES (1)")
        with connect_as(pg, "eliza_readonly") as conn:
            assert conn.execute("SELECT x FROM later_table").fetchall() == [(1,)]
        with (
            connect_as(pg, "eliza_user") as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("SELECT x FROM later_table")
    finally:
        with pg.connect("eliza", autocommit=True) as conn:
            conn.execute("DROP TABLE public.later_table")


# ---- an unmodified @elizaos/adapter-postgres 0.1.9 ------------------------------------------
# Its statements, copied verbatim from its dist/index.js, sent the way node-postgres sends them:
# extended protocol, every parameter as untyped text (OID 0), numbers as their decimal string.


def node_pg(
    conn: psycopg.Connection[Any], sql: str, params: Sequence[object] = ()
) -> list[tuple[str | None, ...]]:
    values = [None if v is None else str(v).encode() for v in params]
    res = conn.pgconn.exec_params(sql.encode(), values)
    if res.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        raise AssertionError(f"adapter query failed: {res.error_message.decode()}\n{sql}")
    return [
        tuple(
            None if (v := res.get_value(r, c)) is None else v.decode() for c in range(res.nfields)
        )
        for r in range(res.ntuples)
    ]


def vector_literal(v: np.ndarray) -> str:
    # The adapter's cleanVector: `[${embedding.map(n => Number(n.toFixed(6))).join(",")}]`
    return "[" + ",".join(f"{float(x):.6f}" for x in v) + "]"


def search_memories_by_embedding_sql(
    dims: int, unique: bool, agent: bool, room: bool, threshold: bool, count: bool
) -> str:
    """searchMemoriesByEmbedding builds its SQL from the options given, exactly so."""
    sql = f"""
                SELECT *,
                1 - (embedding <-> $1::vector({dims})) as similarity
                FROM memories
                WHERE type = $2
            """
    n = 2
    if unique:
        sql += ' AND "unique" = true'
    if agent:
        n += 1
        sql += f' AND "agentId" = ${n}'
    if room:
        n += 1
        sql += f' AND "roomId" = ${n}::uuid'
    if threshold:
        n += 1
        sql += f" AND 1 - (embedding <-> $1::vector) >= ${n}"
    sql += " ORDER BY embedding <-> $1::vector"
    if count:
        n += 1
        sql += f" LIMIT ${n}"
    return sql


GET_CACHED_EMBEDDINGS_SQL = """
                    WITH content_text AS (
                        SELECT
                            embedding,
                            COALESCE(
                                content->$2->>$3,
                                ''
                            ) as content_text
                        FROM memories
                        WHERE type = $4
                        AND content->$2->>$3 IS NOT NULL
                    )
                    SELECT
                        embedding,
                        levenshtein(
                            $1,
                            content_text
                        ) as levenshtein_score
                    FROM content_text
                    WHERE levenshtein(
                        $1,
                        content_text
                    ) <= $6  -- Add threshold check
                    ORDER BY levenshtein_score
                    LIMIT $5
                """


def test_adapter_startup_finds_the_schema(pg: ScratchPostgres, first_run: ExecResult) -> None:
    """init() applies its own schema.sql (DDL the agent may not run) unless it sees a table named
    rooms and the vector extension; as eliza_agent it must see both."""
    with connect_as(pg, "eliza_agent") as conn:
        node_pg(conn, "BEGIN")
        node_pg(conn, "SET app.use_openai_embedding = 'true'")
        node_pg(conn, "SET app.use_ollama_embedding = 'false'")
        node_pg(conn, "SET app.use_gaianet_embedding = 'false'")
        exists = node_pg(
            conn,
            """
                SELECT EXISTS (
                    SELECT FROM information_schema.tables
                    WHERE table_name = 'rooms'
                );
            """,
        )
        node_pg(conn, "COMMIT")
        vector = node_pg(
            conn,
            """
                SELECT 1 FROM pg_extension WHERE extname = 'vector'
            """,
        )
    assert exists == [("t",)]
    assert vector == [("1",)]


def test_adapter_memory_round_trip(pg: ScratchPostgres, first_run: ExecResult) -> None:
    vectors, _ = clustered_unit_vectors(6, DIMS, seed=11)
    agent, user_a, user_b, room = (str(uuid.uuid4()) for _ in range(4))
    with connect_as(pg, "eliza_agent") as conn:
        # createAccount; core's ensureUserExists falls back to the same username for every
        # nameless user and the adapter sends "" for a missing email: both must insert.
        create_account = """INSERT INTO accounts (id, name, username, email, "avatarUrl", details)
                    VALUES ($1, $2, $3, $4, $5, $6)"""
        node_pg(conn, create_account, [agent, "Agent", "agent", "agent@x", "", "{}"])
        node_pg(conn, create_account, [user_a, "Unknown User", "Unknown", "", "", '{"summary":""}'])
        node_pg(conn, create_account, [user_b, "Unknown User", "Unknown", "", "", '{"summary":""}'])
        node_pg(conn, "INSERT INTO rooms (id) VALUES ($1)", [room])
        for who in (agent, user_a):
            node_pg(
                conn,
                """INSERT INTO participants (id, "userId", "roomId")
                    VALUES ($1, $2, $3)""",
                [str(uuid.uuid4()), who, room],
            )
        assert {
            r[0]
            for r in node_pg(conn, 'SELECT "userId" FROM participants WHERE "roomId" = $1', [room])
        } == {agent, user_a}
        node_pg(
            conn,
            """UPDATE participants SET "userState" = $1 WHERE "roomId" = $2 AND "userId" = $3""",
            ["FOLLOWED", room, user_a],
        )
        assert node_pg(
            conn,
            """SELECT "userState" FROM participants WHERE "roomId" = $1 AND "userId" = $2""",
            [room, user_a],
        ) == [("FOLLOWED",)]

        # createMemory: a near-duplicate search (threshold 0.95, count 1), then the INSERT.
        insert_memory = """INSERT INTO memories (
                    id, type, content, embedding, "userId", "roomId", "agentId", "unique", "createdAt"
                ) VALUES ($1, $2, $3, $4, $5::uuid, $6::uuid, $7::uuid, $8, to_timestamp($9/1000.0))"""
        duplicate_check = search_memories_by_embedding_sql(DIMS, False, False, True, True, True)
        for i, v in enumerate(vectors):
            similar = node_pg(conn, duplicate_check, [vector_literal(v), "messages", room, 0.95, 1])
            node_pg(
                conn,
                insert_memory,
                [
                    str(uuid.uuid4()),
                    "messages",
                    json.dumps({"text": f"hello {i}"}),
                    vector_literal(v),
                    user_a,
                    room,
                    agent,
                    "true" if not similar else "false",
                    1_700_000_000_000 + i,
                ],
            )

        # searchMemoriesByEmbedding with every option the runtime passes.
        search = search_memories_by_embedding_sql(DIMS, True, True, True, True, True)
        rows = node_pg(conn, search, [vector_literal(vectors[0]), "messages", agent, room, 0.1, 3])
        assert 1 <= len(rows) <= 3
        assert json.loads(rows[0][3] or "null") == {"text": "hello 0"}  # SELECT *: content is 4th
        # getMemories and countMemories filter on "unique".
        got = node_pg(
            conn,
            # getMemories builds it piece by piece; this is its result for these options.
            'SELECT * FROM memories WHERE type = $1 AND "roomId" = $2 AND "unique" = true'
            ' AND "agentId" = $3 ORDER BY "createdAt" DESC LIMIT $4',
            ["messages", room, agent, 10],
        )
        assert len(got) == 6
        count = node_pg(
            conn,
            'SELECT COUNT(*) as count FROM memories WHERE type = $1 AND "roomId" = $2'
            ' AND "unique" = true',
            ["messages", room],
        )
        assert count == [("6",)]

        # getCachedEmbeddings, as MemoryManager calls it: field "content", sub-field "text",
        # threshold 2, 10 matches. Core's memories keep their text at content.text, so
        # content->'content'->>'text' is NULL for them and the lookup finds nothing, even for an
        # input longer than levenshtein's 255-character limit.
        args = ["hello 0", "content", "text", "messages", 10, 2]
        assert node_pg(conn, GET_CACHED_EMBEDDINGS_SQL, args) == []
        assert node_pg(conn, GET_CACHED_EMBEDDINGS_SQL, ["x" * 400, *args[1:]]) == []
        # A row that does carry content.content.text is found by edit distance.
        node_pg(
            conn,
            insert_memory,
            [
                str(uuid.uuid4()),
                "messages",
                json.dumps({"content": {"text": "hello zero"}}),
                vector_literal(vectors[1]),
                user_a,
                room,
                agent,
                "true",
                1_700_000_000_100,
            ],
        )
        cached = node_pg(conn, GET_CACHED_EMBEDDINGS_SQL, ["hello zer", *args[1:]])
        assert [score for _, score in cached] == ["1"]

        # goals, relationships, logs.
        goal = str(uuid.uuid4())
        node_pg(
            conn,
            """INSERT INTO goals (id, "roomId", "userId", name, status, objectives)
                VALUES ($1, $2, $3, $4, $5, $6)""",
            [goal, room, user_a, "g", "IN_PROGRESS", "[]"],
        )
        node_pg(
            conn,
            "UPDATE goals SET name = $1, status = $2, objectives = $3 WHERE id = $4",
            ["g2", "DONE", "[]", goal],
        )
        assert (
            len(
                node_pg(
                    conn,
                    """SELECT * FROM goals WHERE "roomId" = $1 AND "userId" = $2 LIMIT $3""",
                    [room, user_a, 5],
                )
            )
            == 1
        )
        node_pg(
            conn,
            """INSERT INTO relationships (id, "userA", "userB", "userId")
                    VALUES ($1, $2, $3, $4)
                    RETURNING id""",
            [str(uuid.uuid4()), agent, user_a, agent],
        )
        assert (
            len(
                node_pg(
                    conn,
                    """SELECT * FROM relationships
                    WHERE ("userA" = $1 AND "userB" = $2)
                    OR ("userA" = $2 AND "userB" = $1)""",
                    [user_a, agent],
                )
            )
            == 1
        )
        node_pg(
            conn,
            """INSERT INTO logs (
                        id,
                        body,
                        "userId",
                        "roomId",
                        type,
                        "createdAt"
                    ) VALUES ($1, $2, $3, $4, $5, NOW())
                    RETURNING id""",
            [str(uuid.uuid4()), '{"a":1}', user_a, room, "action"],
        )

        # removeRoom: its DELETEs, then the room; logs go by cascade.
        node_pg(conn, "BEGIN")
        for sql in (
            'DELETE FROM memories WHERE "roomId" = $1',
            'DELETE FROM participants WHERE "roomId" = $1',
            'DELETE FROM goals WHERE "roomId" = $1',
            "DELETE FROM rooms WHERE id = $1 RETURNING id",
        ):
            node_pg(conn, sql, [room])
        node_pg(conn, "COMMIT")
        assert node_pg(conn, 'SELECT count(*) FROM logs WHERE "roomId" = $1', [room]) == [("0",)]


def test_adapter_cache_and_knowledge(pg: ScratchPostgres, first_run: ExecResult) -> None:
    vectors, _ = clustered_unit_vectors(3, DIMS, seed=13)
    agent = str(uuid.uuid4())
    with connect_as(pg, "eliza_agent") as conn:
        node_pg(
            conn,
            """INSERT INTO accounts (id, name, username, email, "avatarUrl", details)
                    VALUES ($1, $2, $3, $4, $5, $6)""",
            [agent, "A", "a", "a@x", "", "{}"],
        )

        # setCache (upsert twice), getCache, deleteCache.
        set_cache = """INSERT INTO cache ("key", "agentId", "value", "createdAt")
                         VALUES ($1, $2, $3, CURRENT_TIMESTAMP)
                         ON CONFLICT ("key", "agentId")
                         DO UPDATE SET "value" = EXCLUDED.value, "createdAt" = CURRENT_TIMESTAMP"""
        node_pg(conn, set_cache, ["k", agent, '{"v":1}'])
        node_pg(conn, set_cache, ["k", agent, '{"v":2}'])
        get_cache = """SELECT "value"::TEXT FROM cache WHERE "key" = $1 AND "agentId" = $2"""
        assert node_pg(conn, get_cache, ["k", agent]) == [('{"v": 2}',)]
        node_pg(conn, """DELETE FROM cache WHERE "key" = $1 AND "agentId" = $2""", ["k", agent])
        assert node_pg(conn, get_cache, ["k", agent]) == []

        # createKnowledge (a main document) and createKnowledgeChunk.
        insert_knowledge = """
                        INSERT INTO knowledge (
                            id, "agentId", content, embedding, "createdAt",
                            "isMain", "originalId", "chunkIndex", "isShared"
                        ) VALUES ($1, $2, $3, $4, to_timestamp($5/1000.0), $6, $7, $8, $9)
                        ON CONFLICT (id) DO NOTHING
                    """
        main = str(uuid.uuid4())
        node_pg(
            conn,
            insert_knowledge,
            [
                main,
                agent,
                '{"text":"doc"}',
                vector_literal(vectors[0]),
                1_700_000_000_000,
                "true",
                None,
                None,
                "false",
            ],
        )
        node_pg(
            conn,
            insert_knowledge,
            [
                str(uuid.uuid4()),
                agent,
                '{"text":"chunk"}',
                vector_literal(vectors[1]),
                1_700_000_000_000,
                "false",
                main,
                0,
                "false",
            ],
        )
        node_pg(
            conn,
            insert_knowledge,
            [
                str(uuid.uuid4()),
                None,
                '{"text":"shared"}',
                vector_literal(vectors[2]),
                1_700_000_000_000,
                "true",
                None,
                None,
                "true",
            ],
        )
        mine = node_pg(
            conn, """SELECT * FROM knowledge WHERE ("agentId" = $1 OR "isShared" = true)""", [agent]
        )
        assert len(mine) >= 3

        # searchKnowledge's ranking query.
        search = """
                WITH vector_scores AS (
                    SELECT id,
                        1 - (embedding <-> $1::vector) as vector_score
                    FROM knowledge
                    WHERE ("agentId" IS NULL AND "isShared" = true) OR "agentId" = $2
                    AND embedding IS NOT NULL
                ),
                keyword_matches AS (
                    SELECT id,
                    CASE
                        WHEN content->>'text' ILIKE $3 THEN 3.0
                        ELSE 1.0
                    END *
                    CASE
                        WHEN (content->'metadata'->>'isChunk')::boolean = true THEN 1.5
                        WHEN (content->'metadata'->>'isMain')::boolean = true THEN 1.2
                        ELSE 1.0
                    END as keyword_score
                    FROM knowledge
                    WHERE ("agentId" IS NULL AND "isShared" = true) OR "agentId" = $2
                )
                SELECT k.*,
                    v.vector_score,
                    kw.keyword_score,
                    (v.vector_score * kw.keyword_score) as combined_score
                FROM knowledge k
                JOIN vector_scores v ON k.id = v.id
                LEFT JOIN keyword_matches kw ON k.id = kw.id
                WHERE ("agentId" IS NULL AND "isShared" = true) OR k."agentId" = $2
                AND (
                    v.vector_score >= $4
                    OR (kw.keyword_score > 1.0 AND v.vector_score >= 0.3)
                )
                ORDER BY combined_score DESC
                LIMIT $5
            """
        ranked = node_pg(conn, search, [vector_literal(vectors[0]), agent, "%doc%", 0.5, 5])
        assert ranked and json.loads(ranked[0][2] or "{}") == {"text": "doc"}

        # removeKnowledge: chunks, then the document.
        node_pg(conn, "BEGIN")
        node_pg(conn, 'DELETE FROM knowledge WHERE "originalId" = $1', [main])
        node_pg(conn, "DELETE FROM knowledge WHERE id = $1", [main])
        node_pg(conn, "COMMIT")
        node_pg(conn, 'DELETE FROM knowledge WHERE ("agentId" = $1 OR "isShared" = true)', [agent])


# ---- opt-in: the real adapter under Node ----------------------------------------------------

# Drives @elizaos/adapter-postgres itself (not a copy of its SQL) as eliza_agent. It prints one
# "ok"/"FAIL" line per check and exits explicitly: the adapter's own beforeExit handler does
# async cleanup, which re-fires beforeExit, so a script that just ends never exits.
ADAPTER_SCRIPT = r"""
const { PostgresDatabaseAdapter } = await import("@elizaos/adapter-postgres");
const { randomUUID } = await import("node:crypto");
let failed = false;
const check = (cond, what) => { console.log(cond ? "ok  " : "FAIL", what); if (!cond) failed = true; };
const unit = (seed) => {
  const v = Array.from({ length: 1536 }, (_, i) => Math.sin(seed * 1000 + i));
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
};
const db = new PostgresDatabaseAdapter({ connectionString: process.env.DB_URL });
try {
  await db.init();  // as eliza_agent its schema.sql would fail: init must find our schema
  const agent = randomUUID(), u1 = randomUUID(), u2 = randomUUID();
  check(await db.createAccount({ id: agent, name: "A", username: "agent", email: "a@x", details: {} }), "createAccount agent");
  check(await db.createAccount({ id: u1, name: "U", username: "Unknown", email: u1, details: {} }), "createAccount user 1");
  check(await db.createAccount({ id: u2, name: "U", username: "Unknown", email: "", details: {} }), "createAccount user 2, same username, empty email");
  const room = await db.createRoom();
  check(await db.addParticipant(agent, room) && await db.addParticipant(u1, room), "addParticipant");
  await db.setParticipantUserState(room, u1, "FOLLOWED");
  check((await db.getParticipantUserState(room, u1)) === "FOLLOWED", "participant userState");
  const e = unit(1);
  for (const [text, emb] of [["hello", e], ["hello again", e], ["other", unit(2)]]) {
    await db.createMemory({ id: randomUUID(), userId: u1, agentId: agent, roomId: room, content: { text }, embedding: emb }, "messages");
  }
  const all = await db.getMemories({ roomId: room, tableName: "messages", agentId: agent, count: 10 });
  check(all.length === 3, "getMemories");
  check(all.filter((m) => m.unique === false && m.isUnique === false).length === 1, "near-duplicate stored with unique = isUnique = false");
  check((await db.countMemories(room, true, "messages")) === 2, "countMemories");
  const found = await db.searchMemoriesByEmbedding(e, { tableName: "messages", roomId: room, agentId: agent, match_threshold: 0.5, count: 5, unique: true });
  check(found.length === 1 && found[0].content.text === "hello", "searchMemoriesByEmbedding");
  const cached = await db.getCachedEmbeddings({ query_table_name: "messages", query_threshold: 2, query_input: "hello", query_field_name: "content", query_field_sub_name: "text", query_match_count: 10 });
  check(Array.isArray(cached), "getCachedEmbeddings");
  await db.log({ body: { a: 1 }, userId: u1, roomId: room, type: "action" });
  await db.createGoal({ id: randomUUID(), roomId: room, userId: u1, name: "g", status: "IN_PROGRESS", objectives: [] });
  check((await db.getGoals({ roomId: room, onlyInProgress: true })).length === 1, "createGoal/getGoals");
  check(await db.createRelationship({ userA: agent, userB: u1 }), "createRelationship");
  check((await db.getRelationship({ userA: u1, userB: agent })) !== null, "getRelationship");
  check(await db.setCache({ key: "k", agentId: agent, value: JSON.stringify({ v: 1 }) }), "setCache");
  check((await db.getCache({ key: "k", agentId: agent })) === '{"v": 1}', "getCache");
  const doc = randomUUID();
  await db.createKnowledge({ id: doc, agentId: agent, content: { text: "about cats", metadata: {} }, embedding: new Float32Array(unit(3)), createdAt: Date.now() });
  const hits = await db.searchKnowledge({ agentId: agent, embedding: new Float32Array(unit(3)), match_threshold: 0.5, match_count: 5, searchText: "cats" });
  check(hits.length === 1, "createKnowledge/searchKnowledge");
  await db.removeKnowledge(doc);
  await db.removeRoom(room);
  check((await db.getRoom(room)) === null, "removeRoom");
} catch (err) {
  console.log("FAIL", err?.message ?? err);
  failed = true;
}
await db.close();
process.exit(failed ? 1 : 0);
"""


def test_real_adapter_under_node(pg: ScratchPostgres, first_run: ExecResult) -> None:
    """The pinned adapter of tests/adapter (installed there by `npm ci` when missing) against the
    bare migrated schema, including knowledge search, which the stack-level test does not drive."""
    from tests.integration.node_clients import npm_ci, require_node
    from tests.integration.test_eliza_adapter import ADAPTER_DIR

    require_node("@elizaos/adapter-postgres")
    npm_ci(ADAPTER_DIR)
    adapter_dir = str(ADAPTER_DIR)
    # Next to its node_modules, where Node resolves the package from.
    script = Path(adapter_dir) / "elizadb-adapter-check.mjs"
    script.write_text(ADAPTER_SCRIPT)
    env = dict(
        os.environ,
        DB_URL=f"postgresql://eliza_agent:{PASSWORDS['eliza_agent']}@127.0.0.1:{pg.host_port}/eliza",
        USE_OPENAI_EMBEDDING="true",  # 1536 dimensions, as the eliza database was migrated
    )
    try:
        done = subprocess.run(
            ["node", str(script)], env=env, capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        script.unlink(missing_ok=True)
    checks = [line for line in done.stdout.splitlines() if line.startswith(("ok", "FAIL"))]
    assert done.returncode == 0 and checks and not any(c.startswith("FAIL") for c in checks), (
        "\n".join(checks) + "\n" + done.stderr[-2000:]
    )
