"""From the 0.1 schema to ElizaOS 1.x without losing memories (issue 8): a stack on the eliza-0.1
profile, written by the unmodified @elizaos/adapter-postgres 0.1.9 (tests/adapter) and with a few
hundred more memories, is moved to the eliza-1 profile — 0.1 tables set aside, profile switched,
@elizaos/plugin-sql 1.7.2's own migrations, rows carried over — and every row is counted and
every embedding compared, component for component."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

from elizadb.errors import DeployError, UsageError
from elizadb.ops import eliza1_move
from tests.integration.node_clients import npm_ci, require_node
from tests.integration.stacks import deployed_stack, progress, stack_settings
from verify.suite import load_outputs, run_checks
from verify.synthetic import clustered_vectors

pytestmark = [pytest.mark.integration, pytest.mark.once]

TESTS = Path(__file__).resolve().parents[1]
EXTRA_MEMORIES = 300
KNOWLEDGE_CHUNKS = 4


def _node(script: Path, args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Runs a driver; its exit status 0 means every operation it ran succeeded."""
    done = subprocess.run(
        ["node", str(script), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_a_0_1_stack_moves_to_eliza1_with_every_row(tmp_path: Path) -> None:
    require_node("@elizaos/adapter-postgres and @elizaos/plugin-sql")
    npm_ci(TESTS / "adapter")
    npm_ci(TESTS / "plugin-sql")
    with deployed_stack(tmp_path, "p8mv", 47400, replicas=0) as stack:
        ca = tmp_path / "ca.pem"
        ca.write_text(stack.outputs["caCert"])
        # An agent's life on the 0.1 schema, by the 0.1 adapter itself.
        out = _node(
            TESTS / "adapter" / "drive.mjs",
            [],
            {
                "ELIZADB_URL": stack.connections["agentPooler"],
                "ELIZADB_CA_FILE": str(ca),
                "USE_OPENAI_EMBEDDING": "true",
                "DEFAULT_LOG_LEVEL": "warn",
            },
            TESTS / "adapter",
        )
        ids = next(
            json.loads(line)["detail"]
            for line in out.splitlines()
            if line.startswith('{"op":"summary"')
        )
        with psycopg.connect(stack.connections["superuser"], dbname="eliza", autocommit=True) as su:
            register_vector(su)
            # More memories of that agent, with embedding-like vectors.
            vectors = clustered_vectors(EXTRA_MEMORIES + KNOWLEDGE_CHUNKS + 2, 1536, seed=8)
            with su.cursor() as cur:
                cur.executemany(
                    'INSERT INTO memories (id, type, content, embedding, "userId", "agentId",'
                    ' "roomId") VALUES (%s, %s, %s, %s, %s, %s, %s)',
                    [
                        (
                            uuid.uuid4(),
                            "messages",
                            Jsonb({"text": f"extra {i}"}),
                            vectors[i],
                            ids["user"],
                            ids["agent"],
                            ids["room"],
                        )
                        for i in range(EXTRA_MEMORIES)
                    ],
                )
            # The agent's RAG knowledge as the 0.1 adapter keeps it: a document, its chunks
            # ("originalId", "chunkIndex"), each with an embedding; and a shared document.
            document, shared = uuid.uuid4(), uuid.uuid4()
            chunks = [uuid.uuid4() for _ in range(KNOWLEDGE_CHUNKS)]
            knowledge = [vectors[EXTRA_MEMORIES + i] for i in range(KNOWLEDGE_CHUNKS + 2)]
            su.execute(
                'INSERT INTO knowledge (id, "agentId", content, embedding, "isMain")'
                " VALUES (%s, %s, %s, %s, true)",
                (document, ids["agent"], Jsonb({"text": "a document"}), knowledge[0]),
            )
            with su.cursor() as cur:
                cur.executemany(
                    'INSERT INTO knowledge (id, "agentId", content, embedding, "originalId",'
                    ' "chunkIndex") VALUES (%s, %s, %s, %s, %s, %s)',
                    [
                        (
                            c,
                            ids["agent"],
                            Jsonb({"text": f"chunk {i}"}),
                            knowledge[1 + i],
                            document,
                            i,
                        )
                        for i, c in enumerate(chunks)
                    ],
                )
            su.execute(
                'INSERT INTO knowledge (id, content, embedding, "isMain", "isShared")'
                " VALUES (%s, %s, %s, true, true)",
                (shared, Jsonb({"text": "shared"}), knowledge[-1]),
            )
            before = {
                t: su.execute(f"SELECT count(*) FROM public.{t}").fetchone()[0]
                for t in ("accounts", "rooms", "memories", "participants", "logs", "cache")
            }
            goals = su.execute("SELECT count(*) FROM public.goals").fetchone()[0]
            progress(f"0.1 rows before the move: {before}")
            assert before["memories"] > EXTRA_MEMORIES

            # Carrying over before the plugin has made its tables is refused, and says why.
            eliza1_move.set_aside(su)
            with pytest.raises(UsageError, match=r"no 0\.1 schema"):
                eliza1_move.set_aside(su)
            with pytest.raises(UsageError, match="plugin's tables do not exist yet"):
                eliza1_move.carry_over(su, 1536)

            # The profile switch: the job applies sql/eliza-1/; then ElizaOS's first start.
            stack.up(stack_settings("p8mv", 47400, replicas=0, schema={"profile": "eliza-1"}))
            migrator = stack.outputs["nodeConnections"]["migrator"]
            _node(
                TESTS / "plugin-sql" / "drive.mjs",
                ["migrate"],
                {"POSTGRES_URL": migrator, "LOG_LEVEL": "warn"},
                tmp_path,
            )

            # A memory with no agent has no place in 1.x (memories.agent_id is NOT NULL): the
            # carry-over counts it missing and commits nothing.
            orphan = uuid.uuid4()
            su.execute(
                'INSERT INTO eliza01.memories (id, type, content, "roomId") VALUES (%s, %s, %s, %s)',
                (orphan, "messages", Jsonb({"text": "no agent"}), ids["room"]),
            )
            with pytest.raises(DeployError, match="rows would be lost") as refused:
                eliza1_move.carry_over(su, 1536)
            assert "MISSING" in str(refused.value)
            assert su.execute("SELECT count(*) FROM public.memories").fetchone() == (0,)
            su.execute("DELETE FROM eliza01.memories WHERE id = %s", (orphan,))

            report = eliza1_move.carry_over(su, 1536)
            progress("\n" + eliza1_move.render(report))
            assert report.complete
            tallies = {t.what: (t.source, t.carried) for t in report.tallies}
            assert tallies["memories"] == (before["memories"], before["memories"])
            assert tallies["accounts -> entities"] == (before["accounts"], before["accounts"])
            assert tallies["rooms"] == (before["rooms"], before["rooms"])
            assert tallies["knowledge -> documents"] == (1, 1)
            assert tallies["knowledge chunks"] == (KNOWLEDGE_CHUNKS, KNOWLEDGE_CHUNKS)
            # Every vector compared: the memories' and the agent's knowledge's.
            assert report.embeddings_source == report.embeddings_equal
            assert report.embeddings_source >= EXTRA_MEMORIES + 1 + KNOWLEDGE_CHUNKS
            # No home in 1.x: kept in eliza01, counted, and the report says why.
            assert report.left_in_eliza01 == {
                "goals (1.x has no goals)": goals,
                "shared knowledge (a 1.x memory belongs to one agent)": 1,
            }
            assert goals >= 1
            assert "goals (1.x has no goals): " in eliza1_move.render(report)
            # Knowledge as @elizaos/plugin-knowledge 1.x keeps it: the document in the agent's
            # own room, its chunks fragments of it, in order, each with its own embedding.
            moved = su.execute(
                "SELECT m.type, m.metadata->>'type', m.metadata->>'documentId',"
                " (m.metadata->>'position')::int, m.room_id = m.agent_id,"
                " e.dim_1536 = k.embedding"
                " FROM memories m JOIN embeddings e ON e.memory_id = m.id"
                " JOIN eliza01.knowledge k ON k.id = m.id"
                " WHERE m.agent_id = %s AND m.type IN ('documents', 'knowledge')"
                " ORDER BY m.type, 4",
                (ids["agent"],),
            ).fetchall()
            assert moved == [("documents", "document", str(document), None, True, True)] + [
                ("knowledge", "fragment", str(document), i, True, True)
                for i in range(KNOWLEDGE_CHUNKS)
            ]
            assert su.execute(
                "SELECT type, name FROM rooms WHERE id = %s", (ids["agent"],)
            ).fetchone()[0] in ("SELF", "GROUP")
            # The agent is an agent now, with its memories' room and cache.
            assert su.execute(
                "SELECT count(*) FROM agents WHERE id = %s", (ids["agent"],)
            ).fetchone() == (1,)
            assert su.execute(
                "SELECT count(*) FROM cache WHERE agent_id = %s", (ids["agent"],)
            ).fetchone() == (1,)

            # Nothing carried twice.
            with pytest.raises(UsageError, match="ran before"):
                eliza1_move.carry_over(su, 1536)

        # The moved stack is a sound eliza-1 stack, and the plugin's search finds moved memories.
        results = {
            r.id: r
            for r in run_checks(load_outputs(stack.outputs), only=("schema", "security", "vector"))
        }
        assert not [r for r in results.values() if r.status != "pass"], results
        assert "found the memory itself first" in results["vector.plugin_search"].summary

        # The plugin finds the moved knowledge as @elizaos/plugin-knowledge 1.x looks for it.
        out = _node(
            TESTS / "plugin-sql" / "drive.mjs",
            ["recall"],
            {
                "POSTGRES_URL": stack.outputs["nodeConnections"]["agentPooler"],
                "ELIZADB_AGENT_ID": str(ids["agent"]),
                "ELIZADB_RECALL": json.dumps(
                    {
                        "embedding": [float(x) for x in knowledge[3]],
                        "fragment": str(chunks[2]),
                        "document": str(document),
                    }
                ),
                "LOG_LEVEL": "warn",
            },
            tmp_path,
        )
        recalled = [
            json.loads(line) for line in out.splitlines() if line.startswith('{"op":"recall')
        ]
        assert [r["op"] for r in recalled] == ["recall.fragments", "recall.documents"], out
        assert recalled[1]["detail"]["result"] == ["a document"]
