"""An unmodified ElizaOS adapter (@elizaos/adapter-postgres 0.1.9, from npm) against a deployed
stack (issue 3): it connects through PgBouncer as the agent role with verify-full TLS and does
what an agent does — accounts, rooms, participants, memories with embeddings, goals,
relationships, logs, cache — and searches memories by embedding and reads cached embeddings.

The adapter runs under Node in tests/adapter/drive.mjs, which prints one JSON line per operation.
While its pool still holds its connections, the test looks at them from PgBouncer and from the
primary; afterwards it checks the rows as the superuser.

Needs Node >= 20 and npm; node_modules are installed with `npm ci` from the pinned lock file
when missing. In CI (any spelling of CI but an explicit no) a missing Node, npm or container engine fails the test.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.node_clients import npm_ci, require_node
from tests.integration.stacks import DeployedStack, deployed_stack, progress

pytestmark = [pytest.mark.integration, pytest.mark.once]

ADAPTER_DIR = Path(__file__).resolve().parents[1] / "adapter"
DRIVER = ADAPTER_DIR / "drive.mjs"
APP = "elizadb-adapter-drive"  # the application_name drive.mjs connects with
DRIVE_TIMEOUT = 90  # the driver itself takes a few seconds

# Every operation drive.mjs must report, and report ok.
OPERATIONS = {
    "tls.wrongServerName",
    "init",
    "tls.adapterConnection",
    "createAccount",
    "getAccountById",
    "createRoom",
    "addParticipant",
    "getParticipantsForAccount",
    "getParticipantsForRoom",
    "setParticipantUserState",
    "createMemory",
    "createMemory.nearDuplicate",
    "createMemory.withCachedText",
    "getMemories",
    "countMemories",
    "searchMemoriesByEmbedding",
    "searchMemoriesByEmbedding.threshold",
    "getCachedEmbeddings.stockTypes",
    "getCachedEmbeddings",
    "createGoal",
    "updateGoal",
    "createRelationship",
    "getRelationship",
    "log",
    "setCache",
    "getCache",
    "deleteCache",
    "removeMemory",
    "summary",
}


def _pooler_ip(stack: DeployedStack) -> str:
    container = stack.client.containers.get(stack.outputs["pooler"]["name"])
    return container.attrs["NetworkSettings"]["Networks"][stack.outputs["network"]]["IPAddress"]


def _admin(stack: DeployedStack) -> psycopg.Connection:
    # PgBouncer's console speaks only the simple query protocol.
    return psycopg.connect(
        stack.connections["poolerAdmin"], autocommit=True, cursor_factory=psycopg.ClientCursor
    )


def _superuser_eliza(stack: DeployedStack) -> psycopg.Connection:
    # The superuser's URI names the postgres database; RLS does not hide rows from it.
    return psycopg.connect(stack.connections["superuser"], dbname="eliza", autocommit=True)


def _while_holding(stack: DeployedStack) -> dict[str, Any]:
    """What PgBouncer and the primary show of the adapter's connections."""
    with _admin(stack) as admin:
        cur = admin.execute("SHOW CLIENTS")
        names = [c.name for c in cur.description]
        clients = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    with _superuser_eliza(stack) as su:
        backends = su.execute(
            "SELECT a.application_name, host(a.client_addr), s.ssl, s.version"
            "  FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
            " WHERE a.usename = 'eliza_agent'"
        ).fetchall()
    return {"clients": clients, "backends": backends}


def _drive(stack: DeployedStack, ca_file: Path, stderr_file: Path) -> tuple[list[dict], dict, int]:
    """Runs drive.mjs with ELIZADB_HOLD=1; returns its JSON lines, what was seen while it held
    its connections, and its exit status."""
    env = dict(
        os.environ,
        ELIZADB_URL=stack.connections["agentPooler"],  # in the environment, not on argv
        ELIZADB_CA_FILE=str(ca_file),
        ELIZADB_HOLD="1",
        USE_OPENAI_EMBEDDING="true",  # 1536 dimensions in @elizaos/core, as the stack
        DEFAULT_LOG_LEVEL="warn",
        ELIZADB_DRIVE_TIMEOUT_MS=str(DRIVE_TIMEOUT * 1000),
    )
    lines: queue.Queue[str | None] = queue.Queue()
    with stderr_file.open("w") as stderr:
        proc = subprocess.Popen(
            ["node", str(DRIVER)],
            cwd=ADAPTER_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + DRIVE_TIMEOUT
        results: list[dict] = []
        seen: dict[str, Any] = {}
        try:
            while True:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                if line is None:
                    break
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # the adapter's own log lines
                if not isinstance(record, dict) or "op" not in record:
                    continue
                if record["op"] == "hold":
                    seen = _while_holding(stack)
                    assert proc.stdin is not None
                    proc.stdin.close()  # lets the driver close its pool and exit
                    continue
                results.append(record)
            status = proc.wait(timeout=max(1, deadline - time.monotonic()))
        except (queue.Empty, subprocess.TimeoutExpired):
            proc.kill()  # SIGKILL: the adapter turns SIGTERM into exit status 0
            proc.wait()
            pytest.fail(f"drive.mjs did not finish in {DRIVE_TIMEOUT}s; got {results}")
    return results, seen, status


def test_unmodified_eliza_adapter_through_the_pooler(tmp_path: Path) -> None:
    require_node("@elizaos/adapter-postgres")
    npm_ci(ADAPTER_DIR)
    with deployed_stack(tmp_path, "itada", 41700) as stack:
        assert stack.outputs["embeddingDimensions"] == 1536
        ca_file = tmp_path / "ca.pem"
        ca_file.write_text(stack.outputs["caCert"])
        stderr_file = tmp_path / "drive.stderr"

        started = time.monotonic()
        results, seen, status = _drive(stack, ca_file, stderr_file)
        progress(f"drive.mjs ran {len(results)} operations in {time.monotonic() - started:.1f}s")

        # Every operation ran and succeeded (drive.mjs checks each result itself).
        by_op = {r["op"]: r for r in results}
        failed = [r for r in results if not r["ok"]]
        assert not failed and status == 0, (
            json.dumps(failed, indent=1) + "\n" + stderr_file.read_text()[-3000:]
        )
        assert by_op.keys() >= OPERATIONS, f"not reported: {OPERATIONS - by_op.keys()}"
        ids = by_op["summary"]["detail"]

        # The adapter's own connection: verified TLS to the pooler, which sent it to the primary.
        conn = by_op["tls.adapterConnection"]["detail"]
        assert conn["authorized"] is True and conn["protocol"] in ("TLSv1.2", "TLSv1.3")
        assert conn["user"] == "eliza_agent" and conn["database"] == "eliza"
        # The search returned the expected memory first (drive.mjs asserts the whole ranking).
        ranked = by_op["searchMemoriesByEmbedding"]["detail"]["ranked"]
        assert ranked[0]["text"] == "weather message 1"
        assert by_op["getCachedEmbeddings"]["detail"]["levenshtein"] == 2

        # While the driver held its pool: PgBouncer had its clients, on TLS, as the agent ...
        clients = [c for c in seen["clients"] if c["application_name"] == APP]
        assert clients, seen["clients"]
        assert all(c["user"] == "eliza_agent" and c["database"] == "eliza" for c in clients)
        assert all(c["tls"].startswith("TLSv1.") for c in clients), clients
        # ... and every eliza_agent backend on the primary came from the pooler, over TLS.
        pooler_ip = _pooler_ip(stack)
        backends = seen["backends"]
        assert backends, "no eliza_agent backend on the primary"
        assert all(addr == pooler_ip and ssl for _, addr, ssl, _ in backends), (pooler_ip, backends)

        # The rows landed where an agent's data belongs.
        with _superuser_eliza(stack) as su:

            def one(sql: str, *args: Any) -> Any:
                return su.execute(sql, args).fetchone()[0]

            room, agent, user = ids["room"], ids["agent"], ids["user"]
            assert (
                one(
                    "SELECT count(*) FROM accounts WHERE id IN (%s, %s, %s)",
                    agent,
                    user,
                    ids["other"],
                )
                == 3
            )
            assert one("SELECT count(*) FROM rooms WHERE id = %s", room) == 1
            assert one(
                'SELECT array_agg("userState" ORDER BY "userState") FROM participants'
                ' WHERE "roomId" = %s',
                room,
            ) == ["FOLLOWED", None]
            # 12 memories + a near-duplicate + the cached-text one, minus the removed one
            assert (
                one(
                    'SELECT count(*) FROM memories WHERE "roomId" = %s AND type = %s',
                    room,
                    "messages",
                )
                == 13
            )
            assert one(
                'SELECT min(vector_dims(embedding)) = 1536 AND bool_and("agentId" = %s)'
                ' FROM memories WHERE "roomId" = %s',
                agent,
                room,
            )
            assert one(
                'SELECT "unique" IS FALSE AND "isUnique" IS FALSE FROM memories WHERE id = %s',
                ids["duplicate"],
            )
            assert one("SELECT count(*) FROM memories WHERE id = %s", ids["removed"]) == 0
            assert one("SELECT status FROM goals WHERE id = %s", ids["goal"]) == "DONE"
            assert (
                one(
                    'SELECT count(*) FROM relationships WHERE "userA" = %s AND "userB" = %s',
                    agent,
                    user,
                )
                == 1
            )
            assert one(
                'SELECT body FROM logs WHERE "roomId" = %s AND type = %s', room, "action"
            ) == {"action": "REPLY", "tokens": 42}
            assert one('SELECT array_agg(key) FROM cache WHERE "agentId" = %s', agent) == ["kept"]
