"""The stack's bound on pgvector's iterative scan (DEFAULT_PG_PARAMETERS["hnsw.max_scan_tuples"])
is what the agent's sessions get through the pooler, and it is what stops a filtered search that
finds nothing: @elizaos/adapter-postgres 0.1's duplicate check (similarity >= 0.95, LIMIT 1) on
a new memory, served by the L2 HNSW index, visits about that many index tuples instead of the
whole table, while a duplicate that exists is still found."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from infra.settings import DEFAULT_PG_PARAMETERS
from tests.integration.stacks import DeployedStack, deployed_stack
from tests.integration.test_vector_operators import insert_rows
from verify.synthetic import clustered_vectors

# Once in CI: the bound is a PostgreSQL setting and its effect, whatever the engine.
pytestmark = [pytest.mark.integration, pytest.mark.once]
STACK = "itddscan"
PORT_BASE = 52300
DIMS = 384
BOUND = int(DEFAULT_PG_PARAMETERS["hnsw.max_scan_tuples"])
# More rows than the bound, so that a scan without it would visit visibly more.
ROWS = 2 * BOUND
L2 = "idx_memories_embedding_l2"
# createMemory's duplicate check as the adapter sends it (its text, less the room filter: every
# row here is in one room).
DUPLICATE_SEARCH = (
    "SELECT *, 1 - (embedding <-> %(q)s::vector) as similarity FROM memories"
    " WHERE type = 'messages' AND 1 - (embedding <-> %(q)s::vector) >= 0.95"
    " ORDER BY embedding <-> %(q)s::vector LIMIT 1"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(
        tmp_path_factory.mktemp(STACK),
        STACK,
        PORT_BASE,
        replicas=0,
        embeddingDimensions=DIMS,
        vector={"operators": ["l2"]},
    ) as handle:
        yield handle


@pytest.fixture(scope="module")
def stored(stack: DeployedStack) -> np.ndarray:
    vectors = clustered_vectors(ROWS, DIMS, seed=12)
    with psycopg.connect(
        stack.connections["superuser"], dbname="eliza", autocommit=True, connect_timeout=10
    ) as conn:
        register_vector(conn)
        insert_rows(conn, vectors)
        conn.execute("ANALYZE public.memories")
    return vectors


def _agent(stack: DeployedStack) -> psycopg.Connection[Any]:
    # Through PgBouncer's transaction pool, as the agent connects, parameters sent unnamed.
    return psycopg.connect(
        stack.connections["agentPooler"], autocommit=True, prepare_threshold=None
    )


def _explain(conn: psycopg.Connection[Any], q: np.ndarray, bound: int | None) -> dict[str, Any]:
    """The duplicate search's plan in a transaction, with the bound set for it alone if given."""
    text = "[" + ",".join(f"{x:.6f}" for x in q.tolist()) + "]"
    with conn.transaction():
        if bound is not None:
            conn.execute(f"SET LOCAL hnsw.max_scan_tuples = {bound}")
        row = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + DUPLICATE_SEARCH, {"q": text}
        ).fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


def _scan(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan's node that names an index."""
    if "Index Name" in plan:
        return plan
    for child in plan.get("Plans", []):
        found = _scan(child)
        if found:
            return found
    return {}


def test_the_agents_sessions_get_the_bound_from_the_configuration(stack: DeployedStack) -> None:
    with _agent(stack) as conn:
        conn.execute("SELECT '[1]'::vector")  # loads pgvector, which defines its settings
        rows = conn.execute(
            "SELECT name, setting, source FROM pg_settings WHERE name IN"
            " ('hnsw.max_scan_tuples', 'hnsw.iterative_scan', 'hnsw.ef_search') ORDER BY name"
        ).fetchall()
    assert rows == [
        ("hnsw.ef_search", DEFAULT_PG_PARAMETERS["hnsw.ef_search"], "configuration file"),
        # Migration 0006: the bound matters because the scan is iterative.
        ("hnsw.iterative_scan", "relaxed_order", "database"),
        ("hnsw.max_scan_tuples", str(BOUND), "configuration file"),
    ]


def test_a_duplicate_search_that_finds_nothing_stops_at_the_bound(
    stack: DeployedStack, stored: np.ndarray
) -> None:
    rng = np.random.default_rng(3)
    fresh = rng.standard_normal(DIMS)
    fresh /= np.linalg.norm(fresh)  # no stored memory is within 0.05 of a random direction
    with _agent(stack) as conn:
        bounded = _scan(_explain(conn, fresh, None))
        unbounded = _scan(_explain(conn, fresh, 20_000))  # pgvector's own default
    assert bounded.get("Index Name") == L2 and unbounded.get("Index Name") == L2
    assert bounded["Actual Rows"] == 0 and unbounded["Actual Rows"] == 0
    # Every candidate the scan hands up is refused by the similarity filter: their number is
    # the scan's length. pgvector checks the bound between batches, so it overshoots a little.
    assert BOUND <= bounded["Rows Removed by Filter"] < 1.2 * BOUND
    assert 1.5 * BOUND < unbounded["Rows Removed by Filter"] <= ROWS


def test_a_duplicate_that_exists_is_found_within_the_bound(
    stack: DeployedStack, stored: np.ndarray
) -> None:
    rng = np.random.default_rng(4)
    found = 0
    picks = rng.choice(ROWS, 10, replace=False)
    with _agent(stack) as conn:
        for i in picks:
            step = rng.standard_normal(DIMS)
            step -= (step @ stored[i]) * stored[i]
            near = stored[i] + 0.02 * step / np.linalg.norm(step)  # a near duplicate
            scan = _scan(_explain(conn, near / np.linalg.norm(near), None))
            assert scan.get("Index Name") == L2
            found += scan["Actual Rows"]
    assert found == len(picks)
