"""verify warns before users feel it, on a real stack made that way: HNSW indexes larger than the
cache the server reports, an index larger than the maintenance_work_mem a rebuild would get, a
pooler whose clients queue — each seen as exactly that one warning — and a healthy stack with
rows in it that warns of nothing. The thresholds are what the server reports, so the stack's
memory parameters are lowered through elizadb:postgres.parameters rather than loading gigabytes.
`elizadb status` prints the warnings too."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from elizadb.cli import _status_warnings
from tests.integration.stacks import DeployedStack, deployed_stack, stack_settings
from verify.suite import CheckResult, Thresholds, load_outputs, run_checks, warning_checks
from verify.synthetic import clustered_vectors

pytestmark = [pytest.mark.integration, pytest.mark.once]
STACK = "p12awarn"
PORT_BASE = 51100
# 3000 vectors of 1536 dimensions: one per HNSW page, so each of the two indexes takes about
# 24 MB — far under the test stack's own cache (384 MB) and maintenance_work_mem (128 MB), far
# over the lowered values.
ROWS = 3000
DIMS = 1536
BASE: dict[str, Any] = {"replicas": 0}
# A TLS + SCRAM login can take longer than verify's 3 s on a machine shared by many test runs;
# how long a connection takes is not what these tests are about.
PATIENT = Thresholds(connect_timeout_s=20)
TEST_SHARED_BUFFERS = {"shared_buffers": "64MB"}  # what stacks.stack_settings sets by default


def _settings(parameters: dict[str, str] | None = None, **values: Any) -> Any:
    return stack_settings(
        STACK,
        PORT_BASE,
        postgres={"parameters": {**TEST_SHARED_BUFFERS, **(parameters or {})}},
        **BASE,
        **values,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(tmp_path_factory.mktemp(STACK), STACK, PORT_BASE, **BASE) as handle:
        with psycopg.connect(
            handle.connections["superuser"], dbname="eliza", autocommit=True
        ) as conn:
            register_vector(conn)
            room = conn.execute("INSERT INTO public.rooms DEFAULT VALUES RETURNING id").fetchone()
            assert room is not None
            vectors = clustered_vectors(ROWS, DIMS, seed=7)
            with (
                conn.cursor(binary=True) as cur,
                cur.copy(
                    'COPY public.memories (type, content, embedding, "roomId")'
                    " FROM STDIN WITH (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["text", "jsonb", "vector", "uuid"])
                for i, v in enumerate(vectors):
                    copy.write_row(("messages", Jsonb({"n": i}), np.asarray(v), room[0]))
        yield handle


def _up(stack: DeployedStack, settings: Any) -> None:
    """Deploy the changed parameters (the primary is replaced), then wait until the primary's
    published port and the pooler serve again: PgBouncer answers logins that failed during the
    restart from its cache for server_login_retry (0.5 s), and a new container's published port
    took seconds to answer here under load — neither is what these tests are about."""
    stack.up(settings)
    deadline = time.monotonic() + 180
    for uri in (stack.connections["superuser"], stack.connections["agentPooler"]):
        while True:
            try:
                with psycopg.connect(uri, prepare_threshold=None, connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def _run(stack: DeployedStack, **kwargs: Any) -> dict[str, CheckResult]:
    """Every check that does not write (the vector probe's writes are not what this is about,
    and on a populated table they take long on a loaded machine)."""
    kwargs.setdefault("thresholds", PATIENT)
    results = run_checks(load_outputs(stack.outputs), read_only=True, **kwargs)
    failed = [f"{r.id}: {r.summary}\n{r.reason}" for r in results if r.status == "fail"]
    assert not failed, "verify failed:\n" + "\n".join(failed)
    return {r.id: r for r in results}


def _warned(results: dict[str, CheckResult]) -> list[str]:
    return [i for i, r in results.items() if r.status == "warn"]


def test_a_healthy_stack_with_memories_warns_of_nothing(stack: DeployedStack) -> None:
    results = _run(stack)
    assert _warned(results) == []
    assert results["vector.index_cache"].summary.startswith("2 HNSW index(es), ")
    assert "within effective_cache_size 384 MB" in results["vector.index_cache"].summary
    assert "within maintenance_work_mem 128 MB" in results["vector.index_build"].summary
    assert _status_warnings(stack.settings) == "verify: 0 warning(s)"


def test_indexes_the_cache_cannot_hold_warn_naming_them_and_what_to_raise(
    stack: DeployedStack,
) -> None:
    _up(stack, _settings({"effective_cache_size": "16MB"}))
    results = _run(stack)
    assert _warned(results) == ["vector.index_cache"]
    warning = results["vector.index_cache"]
    assert "public.idx_memories_embedding " in warning.reason
    assert "public.idx_memories_embedding_l2 " in warning.reason
    assert "more than the server can cache (effective_cache_size 16 MB, of which " in (
        warning.reason
    )
    assert "shared_buffers 64 MB" in warning.reason
    assert "elizadb:resources.memory" in warning.fix
    said = _status_warnings(stack.settings)
    assert said.startswith("verify: 1 warning(s):\n  WARN vector.index_cache: the HNSW indexes")


def test_an_index_a_rebuild_would_spill_warns(stack: DeployedStack) -> None:
    _up(stack, _settings({"maintenance_work_mem": "16MB"}))
    results = _run(stack)
    assert _warned(results) == ["vector.index_build"]
    warning = results["vector.index_build"]
    lines = warning.reason.splitlines()
    assert len(lines) == 2, lines  # each index, by name
    for line in lines:
        assert "more than maintenance_work_mem (16 MB): a REINDEX" in line
    assert "maintenance_work_mem" in warning.fix and "resources.memory" in warning.fix


def test_a_pooler_whose_clients_queue_warns(stack: DeployedStack) -> None:
    # One server connection per pool: a client in a transaction holds it, the next one waits.
    _up(stack, _settings(pooler={"poolSize": 1}))
    assert _warned(_run(stack, only=warning_checks())) == []
    pooled = stack.connections["userPooler"]
    holder = psycopg.connect(pooled, prepare_threshold=None)
    holder.execute("SELECT 1")  # BEGIN ... and the transaction stays open
    waited: list[Any] = []

    def wait_for_the_pool() -> None:
        with psycopg.connect(pooled, prepare_threshold=None, autocommit=True) as conn:
            waited.append(conn.execute("SELECT 1").fetchone())

    waiter = threading.Thread(target=wait_for_the_pool)
    try:
        waiter.start()
        with psycopg.connect(
            stack.connections["poolerAdmin"],
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
            row_factory=dict_row,
        ) as admin:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                pools = admin.execute("SHOW POOLS").fetchall()
                if any(p["cl_waiting"] for p in pools if p["user"] == "eliza_user"):
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"no client queued in 60 s: {pools}")
        # The queue is the point, not how long it lasts on a loaded machine: a wait beyond the
        # default 1 s would rightly fail the check instead.
        lenient = Thresholds(connect_timeout_s=20, pooler_max_wait_seconds=600)
        results = _run(stack, only=warning_checks(), thresholds=lenient)
        assert _warned(results) == ["pooler.pools"]
        assert "/eliza_user: 1 client(s) waiting" in results["pooler.pools"].reason
        assert "poolSize" in results["pooler.pools"].fix
    finally:
        holder.rollback()
        waiter.join(timeout=60)
        holder.close()
    assert waited == [(1,)]
    assert _warned(_run(stack, only=warning_checks())) == []
