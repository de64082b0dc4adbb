"""ElizaOS 1.x on the stack (issue 8): the unmodified, pinned @elizaos/plugin-sql 1.7.2 (with
@elizaos/core 1.7.2) against a deployed `schema.profile: eliza-1` stack, through PgBouncer.

tests/plugin-sql/drive.mjs does what ElizaOS does and prints one JSON line per operation:
`migrate` runs the plugin's own runtime migrations as the migration role through the
session-mode pool; `agent` lives an agent's memory life as the application role through the
transaction-mode pool. The driver runs from a scratch folder, so the `nodeConnections` URLs
(absolute sslrootcert) are proven to work from any working directory.

Under ENABLE_DATA_ISOLATION=true four memory calls cannot serve an agent, whoever calls them and
however; the plugin (1.7.2, dist/node/index.node.js) is the reason, not the stack:
- its migrations put a RESTRICTIVE policy on `memories` (apply_entity_rls_to_all_tables, STRICT
  for memories, logs, components, tasks):
  `USING (current_entity_id() IS NOT NULL AND room_id IN (SELECT room_id FROM participants
  WHERE entity_id = current_entity_id()))`, where current_entity_id() reads
  `current_setting('app.entity_id', true)`;
- the plugin sets app.entity_id only in withIsolationContext, a transaction that begins with
  `SELECT set_config('app.entity_id', $1, true)`; MemoryStore.get (getMemories), create, and
  the log store use it;
- MemoryStore.searchByEmbedding, getById, count and delete run on the pool (`this.db`), with no
  transaction and no set_config: `SELECT ... FROM embeddings INNER JOIN memories ... WHERE
  type = $1 AND agent_id = $2 ... ORDER BY 1 - (dim_1536 <=> $3) DESC`, `SELECT ... FROM
  memories WHERE id = $1`, `SELECT count(*) FROM memories WHERE room_id = $1 AND type = $2`,
  `DELETE FROM embeddings WHERE memory_id = $1; DELETE FROM memories WHERE id = $1`. The
  policy's `current_entity_id() IS NOT NULL` is false for every row, so they see none: search
  [], count 0, getMemoryById null, and the delete removes the memory's embedding (`embeddings`
  has no entity column, only the server policy binds it) but not the memory;
- a caller has no way in: the adapter's withIsolationContext(entity, fn) opens its transaction
  on one pooled connection while fn's calls take others; @elizaos/core's message service uses
  runtime.withEntityContext only if the runtime has one, and neither AgentRuntime nor the
  adapter defines it in 1.7.2.
test_data_isolation_keeps_two_servers_apart asserts exactly this, so an upgrade that changes it
fails there; getMemories with an entityId (the call that sets the context) returns the room's
memories, and nothing of the other server's.

Needs Node >= 20 and npm; node_modules are installed with `npm ci` from the pinned lock file
when missing. In CI (CI=true) a missing Node, npm or container engine fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.node_clients import npm_ci, require_node
from tests.integration.stacks import DeployedStack, deployed_stack, progress
from verify.checks import plugin_sql
from verify.suite import load_outputs, run_checks
from verify.thresholds import Thresholds

pytestmark = [pytest.mark.integration, pytest.mark.once]

DRIVER_DIR = Path(__file__).resolve().parents[1] / "plugin-sql"
DRIVER = DRIVER_DIR / "drive.mjs"
DRIVE_TIMEOUT = 120  # the driver takes a few seconds; two at once wait for each other
PLUGIN = "@elizaos/plugin-sql"

# Every operation `drive.mjs agent` must report, and report ok.
AGENT_OPERATIONS = {
    "pg.connectFromUrl",
    "pg.namedPreparedStatements",
    "init",
    "isReady",
    "ensureEmbeddingDimension",
    "createAgent",
    "getAgent",
    "createEntities",
    "getEntitiesByIds",
    "createWorld",
    "getWorld",
    "createRooms",
    "getRoomsByIds",
    "addParticipantsRoom",
    "getParticipantsForRoom",
    "setParticipantUserState",
    "getParticipantUserState",
    "createMemory",
    "searchMemories",
    "searchMemories.threshold",
    "searchMemories.inIsolationContext",
    "withEntityContext",
    "getMemories",
    "getMemoryById",
    "countMemories",
    "setCache",
    "setCache.removed",
    "getCache",
    "deleteCache",
    "getCache.deleted",
    "log",
    "getLogs",
    "createRelationship",
    "getRelationship",
    "deleteMemory",
    "countMemories.afterDelete",
    "getMemoryById.deleted",
    "getMemories.afterDelete",
    "summary",
}
# What `drive.mjs foreign` aims at another server's agent; every one must come back empty.
FOREIGN_OPERATIONS = {
    "foreign.getAgent",
    "foreign.getRoomsByIds",
    "foreign.getParticipantsForRoom",
    "foreign.getMemories",
    "foreign.getMemoryById",
    "foreign.countMemories",
    "foreign.getLogs",
    "foreign.deleteMemory",
}
# The plugin's tables (its Drizzle schema) that its migrations must have created.
PLUGIN_TABLES = {*plugin_sql.PLUGIN_TABLES, "components", "tasks"}


@pytest.fixture(scope="module", autouse=True)
def node_modules() -> None:
    require_node(PLUGIN)
    npm_ci(DRIVER_DIR)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(
        tmp_path_factory.mktemp("plugin"),
        "p8plug",
        47100,
        replicas=0,
        schema={"profile": "eliza-1"},
    ) as handle:
        yield handle


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ENABLE_DATA_ISOLATION",)}
    env.update(POSTGRES_URL=url, LOG_LEVEL="warn", **extra)
    env["ELIZADB_DRIVE_TIMEOUT_MS"] = str(DRIVE_TIMEOUT * 1000)
    return env


def _start(mode: str, url: str, cwd: Path, **extra: str) -> subprocess.Popen[str]:
    # The connection string travels in the environment, as POSTGRES_URL does for ElizaOS.
    return subprocess.Popen(
        ["node", str(DRIVER), mode],
        cwd=cwd,
        env=_env(url, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[dict[str, dict[str, Any]], int, str]:
    try:
        out, err = proc.communicate(timeout=DRIVE_TIMEOUT + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"drive.mjs did not finish in {DRIVE_TIMEOUT}s:\n{out[-3000:]}\n{err[-3000:]}")
    records: dict[str, dict[str, Any]] = {}
    for line in out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the plugin's own log lines
        if isinstance(record, dict) and "op" in record and "ok" in record:
            records[record["op"]] = record
    return records, proc.returncode, out[-2000:] + err[-3000:]


def _drive(mode: str, url: str, cwd: Path, **extra: str) -> dict[str, dict[str, Any]]:
    records, status, logs = _finish(_start(mode, url, cwd, **extra))
    failed = [r for r in records.values() if not r["ok"]]
    assert not failed and status == 0, json.dumps(failed, indent=1) + "\n" + logs
    return records


def _result(records: dict[str, dict[str, Any]], op: str) -> Any:
    return records[op]["detail"]["result"]


def _superuser(stack: DeployedStack) -> psycopg.Connection[Any]:
    return psycopg.connect(stack.connections["superuser"], dbname="eliza", autocommit=True)


def _tables(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
        " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
    ).fetchall()
    return dict(rows)


def _verify(stack: DeployedStack) -> dict[str, Any]:
    """The verify suite's schema, security and vector checks against the stack."""
    results = run_checks(load_outputs(stack.outputs), only=("schema", "security", "vector"))
    return {r.id: r for r in results}


def test_a_fresh_stack_holds_no_tables_until_the_plugin_migrates(stack: DeployedStack) -> None:
    with _superuser(stack) as su:
        assert _tables(su) == {}, "the eliza-1 profile must leave the tables to the plugin"
        extensions = {r[0] for r in su.execute("SELECT extname FROM pg_extension").fetchall()}
        assert {"vector", "fuzzystrmatch", "pgcrypto"} <= extensions
        owner = su.execute(
            "SELECT rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb FROM pg_roles"
            " WHERE rolname = 'eliza_owner'"
        ).fetchone()
        assert owner == (False,), "the migration role must not be a superuser"
    # verify knows the profile: no check of the 0.1 tables, and it says whose tables they are.
    results = _verify(stack)
    assert not [r for r in results.values() if r.status != "pass"], results
    assert "schema.tables" not in results and "vector.recall" not in results
    assert "the plugin's to create" in results["schema.plugin_tables"].summary
    assert results["schema.migrations"].summary.startswith("3 migrations applied")


def test_two_servers_starting_at_once_migrate_once(stack: DeployedStack, tmp_path: Path) -> None:
    """Two ElizaOS processes start together: both run the plugin's migrations through the
    session-mode pool; one waits for the other's advisory lock, neither fails or hangs, the
    schema is created once and no lock is left behind."""
    migrator = stack.outputs["nodeConnections"]["migrator"]
    started = time.monotonic()
    procs = [_start("migrate", migrator, tmp_path) for _ in range(2)]
    results = [_finish(p) for p in procs]
    elapsed = time.monotonic() - started
    progress(f"two concurrent plugin migrations finished in {elapsed:.1f}s")
    for records, status, logs in results:
        assert status == 0 and records["migrate"]["ok"], logs
    with _superuser(stack) as su:
        tables = _tables(su)
        assert tables.keys() >= PLUGIN_TABLES, sorted(tables)
        assert set(tables.values()) == {"eliza_owner"}, tables
        recorded = su.execute(
            "SELECT count(*), count(DISTINCT hash) FROM migrations._migrations"
            " WHERE plugin_name = %s",
            (PLUGIN,),
        ).fetchone()
        assert recorded == (1, 1), f"the plugin's migration was recorded {recorded[0]} times"
        assert su.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        ).fetchone() == (0,), "an advisory lock outlived the migrations"
        dims = su.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.embeddings'::regclass AND attname = 'dim_1536'"
        ).fetchone()
        assert dims == ("vector(1536)",)
        # sql/eliza-1/1003's event trigger tuned the plugin's tables as they appeared: vectors
        # that fit a page stored PLAIN, the search's filter indexed.
        storage = dict(
            su.execute(
                "SELECT attname, attstorage FROM pg_attribute"
                " WHERE attrelid = 'public.embeddings'::regclass AND attname LIKE 'dim_%'"
            ).fetchall()
        )
        assert storage == {
            "dim_384": "p",
            "dim_512": "p",
            "dim_768": "p",
            "dim_1024": "p",
            "dim_1536": "p",
            "dim_3072": "e",
        }, storage
        assert su.execute(
            "SELECT pg_get_indexdef('public.elizadb_memories_agent_type'::regclass)"
        ).fetchone() == (
            (
                "CREATE INDEX elizadb_memories_agent_type ON public.memories USING btree "
                "(agent_id, type)"
            ),
        )
    # A third start finds nothing to do.
    _drive("migrate", migrator, tmp_path)
    with _superuser(stack) as su:
        assert su.execute("SELECT count(*) FROM migrations._migrations").fetchone() == (1,)


def test_an_agent_lives_its_memory_life_through_the_transaction_pool(
    stack: DeployedStack, tmp_path: Path
) -> None:
    migrator = stack.outputs["nodeConnections"]["migrator"]
    _drive("migrate", migrator, tmp_path)  # idempotent; the test may run alone
    agent_url = stack.outputs["nodeConnections"]["agentPooler"]
    started = time.monotonic()
    records = _drive("agent", agent_url, tmp_path)
    progress(f"drive.mjs agent ran {len(records)} operations in {time.monotonic() - started:.1f}s")
    assert records.keys() >= AGENT_OPERATIONS, f"not reported: {AGENT_OPERATIONS - records.keys()}"

    conn = records["pg.connectFromUrl"]["detail"]["result"]
    assert conn == {
        "user": "eliza_agent",
        "database": "eliza",
        "app": "elizadb-plugin-drive",
        "authorized": True,
    }
    assert _result(records, "withEntityContext") == {"runtime": "undefined", "adapter": "undefined"}
    ranked = records["searchMemories"]["detail"]["result"]["ranked"]
    assert ranked[0]["text"] == "weather message 1"
    assert all(r["text"].startswith("weather") for r in ranked[:4]), ranked
    ids = records["summary"]["detail"]

    with _superuser(stack) as su:

        def one(sql: str, *args: Any) -> Any:
            return su.execute(sql, args).fetchone()[0]

        assert one("SELECT count(*) FROM memories WHERE room_id = %s", ids["roomId"]) == 11
        assert (
            one(
                "SELECT count(*) FROM embeddings e JOIN memories m ON m.id = e.memory_id"
                " WHERE m.room_id = %s AND vector_dims(e.dim_1536) = 1536",
                ids["roomId"],
            )
            == 11
        )
        assert one("SELECT count(*) FROM memories WHERE id = %s", ids["removed"]) == 0
        assert one("SELECT count(*) FROM participants WHERE room_id = %s", ids["roomId"]) == 2
        assert one("SELECT array_agg(key) FROM cache WHERE agent_id = %s", ids["agentId"]) == [
            "kept"
        ]
        assert one("SELECT body FROM logs WHERE room_id = %s", ids["roomId"]) == {
            "action": "REPLY",
            "tokens": 42,
        }

    results = _verify(stack)
    assert not [r for r in results.values() if r.status != "pass"], results
    assert "found the memory itself first" in results["vector.plugin_search"].summary
    assert "data isolation is off" in results["security.plugin_rls"].summary
    # A fault verify exists to catch: the agents' role given DDL.
    with _superuser(stack) as su:
        su.execute("GRANT CREATE ON SCHEMA public TO eliza_agent")
        try:
            broken = _verify(stack)["security.plugin_roles"]
        finally:
            su.execute("REVOKE CREATE ON SCHEMA public FROM eliza_agent")
    assert broken.status == "fail" and "eliza_agent has CREATE on schema public" in broken.reason


def test_an_elizaos_runtime_starts_on_the_stack(stack: DeployedStack, tmp_path: Path) -> None:
    """@elizaos/core's AgentRuntime with the plugin, as an ElizaOS agent starts: as the migration
    role it runs the plugin's migrations itself; as the agents' role it starts with migrations
    skipped — and without skipping it is refused at the plugin's CREATE SCHEMA, which is why
    the README gives a server that migrates the migrator's URL."""
    urls = stack.outputs["nodeConnections"]
    records = _drive("runtime", urls["migrator"], tmp_path, ELIZADB_AGENT_NAME="runtime-migrator")
    assert {"runtime.initialize", "runtime.agent", "runtime.room"} <= records.keys()
    records = _drive(
        "runtime",
        urls["agentPooler"],
        tmp_path,
        ELIZADB_AGENT_NAME="runtime-agent",
        ELIZADB_SKIP_MIGRATIONS="true",
    )
    assert {"runtime.initialize", "runtime.agent", "runtime.room"} <= records.keys()
    refused, status, logs = _finish(
        _start("runtime", urls["agentPooler"], tmp_path, ELIZADB_AGENT_NAME="runtime-refused")
    )
    assert status != 0 and not refused["runtime.initialize"]["ok"], logs
    detail = refused["runtime.initialize"]["detail"]
    assert "CREATE SCHEMA IF NOT EXISTS migrations" in detail and "permission denied" in detail


def test_a_lock_lost_in_the_transaction_pool_is_caught(stack: DeployedStack) -> None:
    """Why migrations need the session-mode pool, shown, and caught by verify: through the
    transaction-mode pool a session-level advisory lock is taken on one server connection and
    its release runs on another, so the lock stays behind on a pooled connection."""
    session_url = stack.outputs["nodeConnections"]["migrator"]
    transaction_url = session_url.replace("/eliza_session?", "/eliza?")
    assert transaction_url != session_url
    with psycopg.connect(session_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(8008)")
        assert conn.execute("SELECT pg_advisory_unlock(8008)").fetchone() == (True,)
    with (
        psycopg.connect(transaction_url, autocommit=True, prepare_threshold=None) as a,
        psycopg.connect(transaction_url, autocommit=True, prepare_threshold=None) as b,
    ):
        a.execute("SELECT pg_advisory_lock(8008)")  # on the server connection just released
        with b.transaction():
            b.execute("SELECT 1")  # PgBouncer hands b that same connection (LIFO) ...
            # ... so a's unlock runs elsewhere, where nothing is locked.
            assert a.execute("SELECT pg_advisory_unlock(8008)").fetchone() == (False,)
    time.sleep(1.5)
    outputs = load_outputs(stack.outputs)
    quick = Thresholds(advisory_lock_idle_seconds=1)
    (caught,) = run_checks(outputs, only=("pooler.advisory_locks",), thresholds=quick)
    assert caught.status == "fail" and "advisory lock 8008" in caught.reason, caught
    with _superuser(stack) as su:
        su.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks"
            " WHERE locktype = 'advisory' AND objid = 8008"
        )
    (clean,) = run_checks(outputs, only=("pooler.advisory_locks",), thresholds=quick)
    assert clean.status == "pass", clean


def test_the_agent_role_has_no_ddl_and_no_migration_ledger(stack: DeployedStack) -> None:
    """Least privilege: the agents' role reads and writes the plugin's tables (default
    privileges followed them) but cannot change the schema or read the migrator's ledger."""
    url = stack.outputs["nodeConnections"]["agentPrimary"]
    with psycopg.connect(url, autocommit=True) as agent:
        agent.execute("SELECT count(*) FROM public.memories")  # usable
        for statement in (
            "CREATE TABLE public.p8_probe (id int)",
            "ALTER TABLE public.memories ADD COLUMN p8_probe int",
            "CREATE SCHEMA p8_probe",
            "SELECT count(*) FROM migrations._migrations",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                agent.execute(statement)


SERVERS = ("server-a", "server-b")


@pytest.fixture(scope="module")
def isolated_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(
        tmp_path_factory.mktemp("isolated"),
        "p8iso",
        47200,
        replicas=0,
        schema={"profile": "eliza-1", "servers": list(SERVERS)},
    ) as handle:
        yield handle


ISOLATION = {"ENABLE_DATA_ISOLATION": "true"}


def test_data_isolation_keeps_two_servers_apart(
    isolated_stack: DeployedStack, tmp_path: Path
) -> None:
    """ENABLE_DATA_ISOLATION=true with two ELIZA_SERVER_IDs: the plugin installs its RLS when it
    migrates; each server's agent, connected as that server's role through the transaction
    pool, lives its life; neither server reads, counts or deletes the other's rows, and a role
    without a server sees none at all.

    The plugin's own entity RLS decides what the memory calls return under isolation (the
    module docstring of drive.mjs and the README say why): getMemories with an entityId finds
    the room's memories; searchMemories, countMemories and getMemoryById find none, and
    deleteMemory removes none, even wrapped in the adapter's withIsolationContext. Asserted as
    such, so that a plugin upgrade that changes it fails here."""
    stack = isolated_stack
    urls = stack.outputs["nodeConnections"]
    # The plugin asks every process with isolation on for its ELIZA_SERVER_ID, the migrating
    # one included; the migration role itself is tied to no server.
    _drive("migrate", urls["migrator"], tmp_path, **ISOLATION, ELIZA_SERVER_ID=SERVERS[0])
    ids: dict[str, dict[str, Any]] = {}
    for server in SERVERS:
        records = _drive(
            "agent",
            urls["servers"][server],
            tmp_path,
            **ISOLATION,
            ELIZA_SERVER_ID=server,
            ELIZADB_AGENT_NAME=f"agent-of-{server}",
        )
        assert records.keys() >= AGENT_OPERATIONS, (
            f"not reported: {AGENT_OPERATIONS - records.keys()}"
        )
        summary = records["summary"]["detail"]
        assert summary["isolated"] is True
        # Within an entity context (getMemories with the user's id): the room's memories.
        assert _result(records, "getMemories") == 12
        # Outside one, as the plugin runs these calls: nothing, and the delete removes nothing.
        assert _result(records, "searchMemories") == {"ranked": []}
        assert _result(records, "searchMemories.threshold") == []
        assert _result(records, "searchMemories.inIsolationContext") == 0
        assert _result(records, "getMemoryById") is None
        assert _result(records, "countMemories") == 0
        assert _result(records, "getMemories.afterDelete") == 12
        assert _result(records, "withEntityContext") == {
            "runtime": "undefined",
            "adapter": "undefined",
        }
        ids[server] = summary

    # Each server's agent aims every read and a delete at the other server's rows.
    for me, other in (SERVERS, SERVERS[::-1]):
        records = _drive(
            "foreign",
            urls["servers"][me],
            tmp_path,
            **ISOLATION,
            ELIZA_SERVER_ID=me,
            ELIZADB_AGENT_NAME=f"agent-of-{me}",
            ELIZADB_FOREIGN=json.dumps(ids[other]),
        )
        assert records.keys() >= FOREIGN_OPERATIONS, FOREIGN_OPERATIONS - records.keys()

    queries = {
        "agents": "SELECT count(*) FROM agents WHERE id = %s",
        "rooms": "SELECT count(*) FROM rooms WHERE agent_id = %s",
        "cache": "SELECT count(*) FROM cache WHERE agent_id = %s",
        "memories": "SELECT count(*) FROM memories WHERE agent_id = %s",
    }

    def visible(url: str, agent_id: str, entity: str | None = None) -> dict[str, int]:
        with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
            if entity:  # the entity context the plugin's memory policy asks for
                conn.execute("SELECT set_config('app.entity_id', %s, true)", (entity,))
            return {t: conn.execute(q, (agent_id,)).fetchone()[0] for t, q in queries.items()}

    a, b = ids["server-a"], ids["server-b"]
    own = visible(urls["servers"]["server-a"], a["agentId"], a["userId"])
    assert own == {"agents": 1, "rooms": 1, "cache": 1, "memories": 12}, own
    assert visible(urls["servers"]["server-b"], a["agentId"], a["userId"]) == dict.fromkeys(
        queries, 0
    ), "server-b sees server-a's rows"
    assert visible(urls["servers"]["server-a"], b["agentId"], b["userId"]) == dict.fromkeys(
        queries, 0
    ), "server-a sees server-b's rows"
    assert visible(urls["agentPooler"], a["agentId"], a["userId"]) == dict.fromkeys(queries, 0)
    with _superuser(stack) as su:
        rows = su.execute(
            "SELECT server_id::text, count(*) FROM memories GROUP BY 1 ORDER BY 1"
        ).fetchall()
        with psycopg.connect(urls["servers"]["server-a"]) as conn:
            uuid_a = conn.execute("SELECT current_setting('app.server_id')").fetchone()[0]
        assert (uuid_a, 12) in rows and len(rows) == 2, rows
        # Neither its own deleteMemory nor the other server's removed a memory. Its own did
        # remove the memory's embedding: `embeddings` has no entity column, so only the server
        # policy applies there, and the plugin deletes the embedding before the memory row.
        kept = [a["target"], a["removed"], b["target"], b["removed"]]
        memories = su.execute("SELECT id::text FROM memories WHERE id = ANY(%s::uuid[])", (kept,))
        assert {r[0] for r in memories.fetchall()} == set(kept)
        embedded = su.execute(
            "SELECT memory_id::text FROM embeddings WHERE memory_id = ANY(%s::uuid[])", (kept,)
        )
        assert {r[0] for r in embedded.fetchall()} == {a["target"], b["target"]}

    results = _verify(stack)
    assert not [r for r in results.values() if r.status != "pass"], results
    assert results["security.plugin_rls"].summary.startswith("data isolation on")
    # A table whose owner escapes the isolation: verify says so.
    with _superuser(stack) as su:
        su.execute("ALTER TABLE public.memories NO FORCE ROW LEVEL SECURITY")
        try:
            broken = _verify(stack)["security.plugin_rls"]
        finally:
            su.execute("ALTER TABLE public.memories FORCE ROW LEVEL SECURITY")
    assert broken.status == "fail" and "public.memories: RLS on, not forced" in broken.reason


def test_how_an_isolated_elizaos_server_starts(
    isolated_stack: DeployedStack, tmp_path: Path
) -> None:
    """`elizaos start` (@elizaos/server 1.7.2) always runs the plugin's migrations and, with
    isolation on, installs the plugin's RLS functions with its one POSTGRES_URL before any
    agent starts. No role of the stack serves both: a server's role has no DDL (refused at
    the migrator's CREATE SCHEMA), and the migrator is tied to no server, so the server's own
    rows fail the plugin's RLS. What works, and what the README gives: the migrations run once
    with the migrator's URL; each server's agents start through core (AgentRuntime /
    ElizaOS.addAgents) with migrations skipped, as the server's role. And the hazard it warns
    of: anything of the plugin started without isolation as the tables' owner removes it."""
    urls = isolated_stack.outputs["nodeConnections"]
    _drive("migrate", urls["migrator"], tmp_path, **ISOLATION, ELIZA_SERVER_ID=SERVERS[0])
    server_env = {**ISOLATION, "ELIZA_SERVER_ID": SERVERS[0]}

    refused, status, logs = _finish(
        _start("server", urls["servers"][SERVERS[0]], tmp_path, **server_env)
    )
    assert status != 0 and not refused["server.migrations"]["ok"], logs
    detail = refused["server.migrations"]["detail"]
    assert "CREATE SCHEMA IF NOT EXISTS migrations" in detail and "permission denied" in detail

    as_migrator, status, logs = _finish(_start("server", urls["migrator"], tmp_path, **server_env))
    for op in ("server.migrations", "server.installRLSFunctions", "server.getOrCreateRlsServer"):
        assert as_migrator[op]["ok"], logs
    assert status != 0 and not as_migrator["server.messageServer"]["ok"], logs
    assert "row-level security" in as_migrator["server.messageServer"]["detail"], logs

    # server-a's agent by AgentRuntime.initialize, server-b's by ElizaOS.addAgents (autoStart),
    # the two ways the README gives.
    for server, via_elizaos in zip(SERVERS, ("false", "true"), strict=True):
        records = _drive(
            "runtime",
            urls["servers"][server],
            tmp_path,
            **ISOLATION,
            ELIZA_SERVER_ID=server,
            ELIZADB_AGENT_NAME=f"runtime-of-{server}",
            ELIZADB_SKIP_MIGRATIONS="true",
            ELIZADB_VIA_ELIZAOS=via_elizaos,
        )
        assert {"runtime.initialize", "runtime.agent", "runtime.room"} <= records.keys()
    assert _result(records, "runtime.initialize")["via"] == "ElizaOS.addAgents"

    # The hazard the README warns of: an ElizaOS server started *without*
    # ENABLE_DATA_ISOLATION on the migrator's URL (the tables' owner) takes the isolation off
    # for every server — its migrations disable RLS, its uninstallRLS drops the policies — and
    # verify fails the stack for it.
    off = _drive("server", urls["migrator"], tmp_path, ELIZADB_AGENT_NAME="server-without")
    assert _result(off, "server.uninstallRLS") == "done"
    with _superuser(isolated_stack) as su:
        assert su.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind = 'r' AND (relrowsecurity OR relforcerowsecurity)"
        ).fetchone() == (0,)
    with psycopg.connect(urls["servers"][SERVERS[1]], autocommit=True) as b:
        everyone = b.execute("SELECT count(DISTINCT server_id) FROM rooms").fetchone()[0]
    assert everyone == 2, "with the RLS gone server-b reads server-a's rooms too"
    broken = _verify(isolated_stack)["security.plugin_rls"]
    assert broken.status == "fail" and "no table of public has the plugin's" in broken.reason
    # Put back by the migrations with isolation on, as the README says.
    _drive("migrate", urls["migrator"], tmp_path, **server_env)
    assert _verify(isolated_stack)["security.plugin_rls"].status == "pass"
    with psycopg.connect(urls["servers"][SERVERS[1]], autocommit=True) as b:
        assert b.execute("SELECT count(DISTINCT server_id) FROM rooms").fetchone() == (1,)
