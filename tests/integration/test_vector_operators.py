"""elizadb:vector.operators on a real stack: only the configured operators' HNSW indexes exist,
verify checks exactly those, and adding an operator to a populated stack builds its index
concurrently — a row written during the build is found through the new index — while an index
left INVALID by an interrupted build is rebuilt by the next run of the job."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

from elizadb.local import deploy
from tests.integration.stacks import DeployedStack, deployed_stack, progress, stack_settings
from verify.suite import Thresholds, load_outputs, run_checks
from verify.synthetic import clustered_vectors

pytestmark = [pytest.mark.integration, pytest.mark.once]
STACK = "p12aops"
PORT_BASE = 51000
# Small vectors and enough rows that the second index's build lasts long enough to be seen in
# progress (a few seconds on two loaded CPUs), and no longer.
DIMS = 384
ROWS = 5_000
VALUES: dict[str, Any] = {"replicas": 0, "embeddingDimensions": DIMS}
COSINE, L2 = "idx_memories_embedding", "idx_memories_embedding_l2"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(
        tmp_path_factory.mktemp(STACK), STACK, PORT_BASE, vector={"operators": ["l2"]}, **VALUES
    ) as handle:
        yield handle


def _superuser(stack: DeployedStack) -> psycopg.Connection[Any]:
    conn = psycopg.connect(
        stack.connections["superuser"], dbname="eliza", autocommit=True, connect_timeout=10
    )
    register_vector(conn)
    return conn


def hnsw_indexes(stack: DeployedStack) -> dict[str, bool]:
    """Each HNSW index on memories and whether it is valid."""
    with _superuser(stack) as conn:
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam"
            " WHERE i.indrelid = 'public.memories'::regclass AND am.amname = 'hnsw'"
        ).fetchall()
    return dict(rows)


def job_log(stack: DeployedStack) -> str:
    job = stack.client.containers.get(f"elizadb-{STACK}-bootstrap")
    return job.logs().decode(errors="replace")


def verify_results(stack: DeployedStack) -> dict[str, Any]:
    # A TLS + SCRAM login can take longer than verify's 3 s on a machine shared by many runs.
    results = run_checks(load_outputs(stack.outputs), thresholds=Thresholds(connect_timeout_s=20))
    failed = [f"{r.id}: {r.summary}\n{r.reason}" for r in results if r.status == "fail"]
    assert not failed, "verify failed:\n" + "\n".join(failed)
    return {r.id: r for r in results}


def insert_rows(conn: psycopg.Connection[Any], vectors: np.ndarray) -> None:
    room = conn.execute("INSERT INTO public.rooms DEFAULT VALUES RETURNING id").fetchone()
    assert room is not None
    with (
        conn.cursor(binary=True) as cur,
        cur.copy(
            'COPY public.memories (type, content, embedding, "roomId") FROM STDIN WITH (FORMAT BINARY)'
        ) as copy,
    ):
        copy.set_types(["text", "jsonb", "vector", "uuid"])
        for i, v in enumerate(vectors):
            copy.write_row(("messages", Jsonb({"n": i}), v, room[0]))


def test_a_stack_with_only_l2_has_only_the_l2_index_and_verify_checks_only_it(
    stack: DeployedStack,
) -> None:
    assert stack.outputs["vectorOperators"] == ["l2"]
    assert hnsw_indexes(stack) == {L2: True}
    log = job_log(stack)
    # The migration made both on the empty table; the job dropped the one not configured.
    assert f"vector index {COSINE} (cosine, serves <=>): dropped" in log, log
    assert f"vector index {L2} (l2, serves <->): present and valid" in log, log
    results = verify_results(stack)
    assert results["vector.hnsw_plan"].summary == f"L2 via {L2}"
    assert "cosine" not in results["vector.recall"].summary
    assert results["schema.indexes"].status == "pass"


def test_adding_cosine_builds_it_concurrently_and_a_row_written_meanwhile_is_found(
    stack: DeployedStack,
) -> None:
    with _superuser(stack) as conn:
        insert_rows(conn, clustered_vectors(ROWS, DIMS, seed=12))
    both = stack_settings(STACK, PORT_BASE, vector={"operators": ["cosine", "l2"]}, **VALUES)
    failure: list[BaseException] = []

    def up() -> None:
        try:
            stack.up(both)
        except BaseException as err:  # re-raised by the test below
            failure.append(err)

    deploying = threading.Thread(target=up)
    deploying.start()
    marker = np.zeros(DIMS, dtype=np.float32)
    marker[0] = 1.0  # far from every clustered row: it must be its own nearest neighbour
    marker_id = None
    phase = None
    with _superuser(stack) as conn:
        deadline = time.monotonic() + 600
        while deploying.is_alive() and time.monotonic() < deadline:
            found = conn.execute(
                "SELECT p.phase FROM pg_stat_progress_create_index p"
                " WHERE p.index_relid = to_regclass('public.idx_memories_embedding')"
            ).fetchone()
            if found is not None:
                phase = found[0]
                # A write while the index is being built concurrently: the table takes it.
                row = conn.execute(
                    "INSERT INTO public.memories (type, content, embedding) VALUES"
                    " ('messages', '{}', %s) RETURNING id",
                    (marker,),
                ).fetchone()
                assert row is not None
                marker_id = row[0]
                break
            time.sleep(0.05)
    deploying.join(timeout=900)
    assert not deploying.is_alive(), "the deploy did not finish in 15 minutes"
    if failure:
        raise failure[0]
    assert marker_id is not None, (
        f"the cosine index build was never seen in progress ({ROWS} rows); the test needs more rows"
    )
    progress(f"a row was written while the build was in phase {phase!r}")
    assert hnsw_indexes(stack) == {COSINE: True, L2: True}
    assert stack.outputs["vectorOperators"] == ["cosine", "l2"]
    log = job_log(stack)
    assert f"vector index {COSINE} (cosine, serves <=>): missing: building it concurrently" in log
    assert f"vector index {COSINE} (cosine, serves <=>): built in" in log, log
    with _superuser(stack) as conn, conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        query = "SELECT id FROM public.memories ORDER BY embedding <=> %s LIMIT 1"
        plan = conn.execute("EXPLAIN " + query, (marker,)).fetchall()
        assert any(COSINE in line[0] for line in plan), plan
        assert conn.execute(query, (marker,)).fetchone() == (marker_id,)
    results = verify_results(stack)
    assert results["vector.hnsw_plan"].summary == f"cosine via {COSINE}, L2 via {L2}"


def test_an_invalid_index_left_by_an_interrupted_build_is_rebuilt(stack: DeployedStack) -> None:
    # What a CREATE INDEX CONCURRENTLY that was cancelled leaves: the index, marked invalid
    # (IF NOT EXISTS alone would keep it as it is).
    with _superuser(stack) as conn:
        conn.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
            (f"public.{L2}",),
        )
    assert hnsw_indexes(stack)[L2] is False
    deploy.rerun_job(stack.settings, progress)
    log = job_log(stack)
    assert f"vector index {L2} (l2, serves <->): INVALID" in log, log
    assert f"vector index {L2} (l2, serves <->): built in" in log, log
    assert f"vector index {COSINE} (cosine, serves <=>): present and valid" in log, log
    assert hnsw_indexes(stack) == {COSINE: True, L2: True}
