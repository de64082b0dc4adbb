"""vector: HNSW search works on the live memories table, for each distance operator the stack
keeps an index for (the `vectorOperators` output: cosine <=>, L2 <->), and the HNSW indexes fit
the memory that caches them and builds them.

The probe writes `vector_rows` synthetic memories (clustered, low-rank: see verify/synthetic.py)
into a scratch room as eliza_agent, inside one transaction that is always rolled back (then
vacuums the dead rows away, see `_vacuum`), and runs `vector_queries` nearest-neighbour queries
per ordering against them:

* the plan must be an HNSW index scan (seq scans are disabled for these queries: on a table this
  small the planner may rightly prefer one, and the question is whether an index *can* serve the
  ordering — an HNSW index serves only its operator class's operator);
* recall@k of the index against exact search (index scans disabled) must reach recall_min;
* the p95 latency of the indexed queries, as a client sees it, must stay under a threshold.

Two checks only read the catalog and warn before users feel it: HNSW indexes (together) larger
than effective_cache_size, whose searches go to disk, and an HNSW index larger than
maintenance_work_mem, whose rebuild (REINDEX, a new index) would spill and take many times as
long. Both compare with what the server reports, not with what was configured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from verify.context import Context, row, scalar
from verify.model import Check, Findings, Outcome, Unreachable, failed
from verify.synthetic import clustered_vectors, percentile, recall_at_k

PROBE_TYPE = "elizadb_verify_probe"
# Each elizadb:vector.operators value: how results name it, and the SQL operator it serves.
ORDERINGS = {"cosine": ("cosine", "<=>"), "l2": ("L2", "<->")}
SEED = 20240611
PROBE_WRITES = "synthetic memories in a scratch room, rolled back"


@dataclass(frozen=True)
class Probe:
    rows: int
    vacuumed: bool  # the probe's dead rows and index entries were vacuumed away
    seconds: dict[str, float]  # insert, queries, vacuum: where the probe's time goes
    # ordering (its label: cosine, L2) -> HNSW index in the plan, None if none; only the
    # operators of the stack's vectorOperators are probed
    index_used: dict[str, str | None]
    plan_nodes: dict[str, str]  # ordering -> the plan's scan node, for messages
    recall: dict[str, float]
    p95_ms: dict[str, float]


def _top_k(ordering: str) -> sql.Composed:
    return sql.SQL("SELECT id FROM public.memories ORDER BY embedding {} %s LIMIT %s").format(
        sql.SQL(ORDERINGS[ordering][1])
    )


def _scan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _scan_nodes(child)
    return nodes


def _insert_rows(conn: psycopg.Connection[Any], vectors: Any) -> None:
    room = scalar(conn, "INSERT INTO public.rooms DEFAULT VALUES RETURNING id")
    with conn.cursor(binary=True) as cur:
        # COPY is refused on tables with row level security; a pipelined executemany is not.
        cur.executemany(
            'INSERT INTO public.memories (type, content, embedding, "roomId")'
            " VALUES (%s, %s, %s, %s)",
            [(PROBE_TYPE, Jsonb({"elizadbVerify": i}), v, room) for i, v in enumerate(vectors)],
        )


def _search(
    conn: psycopg.Connection[Any], ordering: str, queries: Any, k: int
) -> tuple[list[list[Any]], list[float]]:
    """The top-k ids of every query, and each query's latency in ms as the client sees it."""
    found, latencies = [], []
    for q in queries:
        start = time.perf_counter()
        found.append([r[0] for r in conn.execute(_top_k(ordering), (q, k)).fetchall()])
        latencies.append((time.perf_counter() - start) * 1000)
    return found, latencies


def _plan(conn: psycopg.Connection[Any], ordering: str, query: Any, k: int) -> list[dict[str, Any]]:
    """The nodes of the query's plan, outermost first."""
    explain = sql.SQL("EXPLAIN (FORMAT JSON) {}").format(_top_k(ordering))
    return _scan_nodes(scalar(conn, explain, (query, k))[0]["Plan"])


def _run_probe(ctx: Context) -> Probe:
    t = ctx.thresholds
    conn = ctx.agent()
    register_vector(conn)
    dims = ctx.outputs.embedding_dimensions
    orderings = [op for op in ORDERINGS if op in ctx.outputs.vector_operators]
    vectors = clustered_vectors(t.vector_rows + t.vector_queries, dims, seed=SEED)
    data, queries = vectors[: t.vector_rows], vectors[t.vector_rows :]
    hnsw = {
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_am am ON am.oid = c.relam"
            " WHERE am.amname = 'hnsw' AND c.relnamespace = 'public'::regnamespace"
        ).fetchall()
    }
    index_used: dict[str, str | None] = {}
    plan_nodes: dict[str, str] = {}
    approximate: dict[str, list[list[Any]]] = {}
    latencies: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    with conn.transaction(force_rollback=True):
        _insert_rows(conn, data)
        seconds["insert"] = time.perf_counter() - clock
        conn.execute("SET LOCAL enable_seqscan = off")
        for op in orderings:
            name = ORDERINGS[op][0]
            nodes = _plan(conn, op, queries[0], t.vector_k)
            used = [n["Index Name"] for n in nodes if n.get("Index Name") in hnsw]
            index_used[name] = used[0] if used else None
            plan_nodes[name] = " > ".join(
                n["Node Type"] + (f" using {n['Index Name']}" if n.get("Index Name") else "")
                for n in nodes
            )
            approximate[name], latencies[name] = _search(conn, op, queries, t.vector_k)
        # Exact search: a sequential scan that computes every distance.
        for setting in (
            "enable_seqscan = on",
            "enable_indexscan = off",
            "enable_bitmapscan = off",
            "max_parallel_workers_per_gather = 0",
        ):
            conn.execute(f"SET LOCAL {setting}")
        exact = {ORDERINGS[op][0]: _search(conn, op, queries, t.vector_k)[0] for op in orderings}
    seconds["queries"] = time.perf_counter() - clock - seconds["insert"]
    clock = time.perf_counter()
    vacuumed = _vacuum(ctx)
    seconds["vacuum"] = time.perf_counter() - clock
    return Probe(
        rows=len(data),
        vacuumed=vacuumed,
        seconds=seconds,
        index_used=index_used,
        plan_nodes=plan_nodes,
        recall={n: recall_at_k(approximate[n], exact[n], t.vector_k) for n in exact},
        p95_ms={n: percentile(latencies[n], 95) for n in exact},
    )


def _vacuum(ctx: Context) -> bool:
    """Vacuum memories after the probe, as the superuser, when the table is small enough.

    The rolled-back rows stay in the table and in both HNSW graphs as dead entries until a
    vacuum: left there, run after run, they crowd the graph near the probe's clusters and the
    next probe measures its own debris. On a large table the vacuum would cost more than the
    whole suite, so it is left to autovacuum (which the dead rows trigger anyway)."""
    conn = ctx.app_db(ctx.outputs.primary)
    size = scalar(conn, "SELECT pg_total_relation_size('public.memories')")
    if size > ctx.thresholds.probe_vacuum_max_mb * 2**20:
        return False
    try:
        conn.execute("VACUUM public.memories")
    except psycopg.errors.QueryCanceled:
        # Repairing the HNSW graphs around the dead entries takes time on a populated table
        # and a busy host: what the vacuum did not finish in the statement timeout, autovacuum
        # will. The probe's measurements are complete either way.
        return False
    return True


def _probe(ctx: Context) -> Probe | Outcome:
    """The probe, or the outcome every probe-based check reports when it could not run."""
    try:
        return ctx.memo("vector.probe", lambda: _run_probe(ctx))
    except Unreachable as err:
        seen = Findings()
        seen.unreachable(err)
        return seen.outcome("", "")
    except psycopg.Error as err:
        dims = ctx.outputs.embedding_dimensions
        return failed(
            f"the probe could not store and search {dims}-dimensional memories",
            f"as eliza_agent on the primary: {type(err).__name__}: {str(err).strip()}",
            "agents cannot store their embeddings either: see schema.vector_dimension and "
            "schema.columns, and the grants of eliza_agent on memories and rooms",
        )


def check_settings(ctx: Context) -> Outcome:
    """Sessions of the Eliza database get hnsw.iterative_scan (migration 0006), so that filtered
    vector searches return k rows."""
    seen = Findings()
    try:
        conn = ctx.agent()
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    value = scalar(conn, "SELECT current_setting('hnsw.iterative_scan', true)")
    if value not in ("relaxed_order", "strict_order"):
        seen.problem(
            f"hnsw.iterative_scan is {value or 'unset'} for eliza_agent's sessions: "
            "filtered searches (type, room) may return fewer rows than asked for"
        )
    return seen.outcome(
        f"hnsw.iterative_scan = {value}",
        "ALTER DATABASE <db> SET hnsw.iterative_scan = relaxed_order (migration 0006); it "
        "applies to sessions opened afterwards",
    )


def check_hnsw_plan(ctx: Context) -> Outcome:
    """Nearest-neighbour queries ordered by each distance of the stack's vectorOperators
    (cosine <=>, L2 <->) are served by an HNSW index."""
    probe = _probe(ctx)
    if isinstance(probe, Outcome):
        return probe
    seen = Findings()
    for name, op in (ORDERINGS[o] for o in ORDERINGS if o in ctx.outputs.vector_operators):
        if probe.index_used[name] is None:
            seen.problem(
                f"ORDER BY embedding {op} ({name}) is not served by an HNSW index: "
                f"the plan is {probe.plan_nodes[name]}"
            )
    return seen.outcome(
        ", ".join(f"{n} via {i}" for n, i in probe.index_used.items()),
        "run the bootstrap job again (`elizadb migrate`): it builds the HNSW index of every "
        "operator in elizadb:vector.operators (vector_cosine_ops for <=>, vector_l2_ops for <->)",
    )


def check_recall(ctx: Context) -> Outcome:
    """recall@k of the indexed search against exact search reaches recall_min, for every
    ordering of the stack's vectorOperators, on clustered synthetic embeddings."""
    probe = _probe(ctx)
    if isinstance(probe, Outcome):
        return probe
    seen = Findings()
    t = ctx.thresholds
    for name, recall in probe.recall.items():
        if recall < t.recall_min:
            seen.problem(
                f"{name} recall@{t.vector_k} is {recall:.3f} over {t.vector_queries} "
                f"queries on {probe.rows} vectors, under {t.recall_min:g}"
            )
    shown = ", ".join(f"{n} {r:.3f}" for n, r in probe.recall.items())
    took = probe.seconds
    cleanup = f"vacuumed in {took['vacuum']:.1f} s" if probe.vacuumed else "left to autovacuum"
    return seen.outcome(
        f"recall@{t.vector_k} {shown} ({probe.rows} vectors inserted in {took['insert']:.1f} s, "
        f"queried in {took['queries']:.1f} s, rolled back, {cleanup})",
        "raise hnsw.ef_search (elizadb:postgres.parameters), or rebuild the index with a larger "
        "m / ef_construction; check that the index is valid (schema.indexes)",
    )


def check_latency(ctx: Context) -> Outcome:
    """The p95 latency of indexed top-k queries stays under vector_p95_max_ms for every
    ordering of the stack's vectorOperators."""
    probe = _probe(ctx)
    if isinstance(probe, Outcome):
        return probe
    # An ordering that no HNSW index serves is vector.hnsw_plan's failure; timing its sequential
    # scan would report the same fault again, or not, depending on the machine's load.
    timed = {n: v for n, v in probe.p95_ms.items() if probe.index_used[n]}
    untimed = [n for n in probe.p95_ms if n not in timed]
    if not timed:
        return Outcome(
            "skip",
            f"not timed: no HNSW index serves {', '.join(untimed)}",
            depends_on=("vector.hnsw_plan",),
        )
    seen = Findings()
    t = ctx.thresholds
    for name, p95 in timed.items():
        if p95 > t.vector_p95_max_ms:
            seen.problem(
                f"{name} top-{t.vector_k} p95 is {p95:.1f} ms over {t.vector_queries} "
                f"queries, above {t.vector_p95_max_ms:g} ms"
            )
    shown = ", ".join(f"{n} {v:.1f} ms" for n, v in timed.items())
    if untimed:
        shown += f" ({', '.join(untimed)} not timed: no HNSW index serves it, see vector.hnsw_plan)"
    return seen.outcome(
        f"p95 {shown}",
        "look for CPU saturation and for an index that does not fit in memory "
        "(shared_buffers, effective_cache_size); lower hnsw.ef_search trades recall for speed",
    )


# Every HNSW index of the application database, largest first, with what the server reports
# for the memory that caches and builds them (the superuser's session: a role's own SETs are not
# what a REINDEX by the maintenance job or autovacuum would get).
HNSW_SIZES = (
    "SELECT format('%I.%I', n.nspname, c.relname), pg_relation_size(c.oid)"
    "  FROM pg_class c JOIN pg_am am ON am.oid = c.relam"
    "  JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE am.amname = 'hnsw' ORDER BY 2 DESC, 1"
)
MEMORY_SETTINGS = (
    "SELECT pg_size_bytes(current_setting('shared_buffers')),"
    "       pg_size_bytes(current_setting('effective_cache_size')),"
    "       pg_size_bytes(current_setting('maintenance_work_mem'))"
)


@dataclass(frozen=True)
class IndexMemory:
    indexes: list[tuple[str, int]]  # (schema.name, bytes), largest first
    shared_buffers: int
    effective_cache_size: int
    maintenance_work_mem: int


def _mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{size / 1024:.0f} kB"


def _index_memory(ctx: Context) -> IndexMemory:
    def read() -> IndexMemory:
        conn = ctx.app_db(ctx.outputs.primary)
        indexes = [(str(name), int(size)) for name, size in conn.execute(HNSW_SIZES).fetchall()]
        shared, cache, maintenance = row(conn, MEMORY_SETTINGS)
        return IndexMemory(indexes, int(shared), int(cache), int(maintenance))

    return ctx.memo("vector.index_memory", read)


RAISE_MEMORY = (
    "raise elizadb:resources.memory (shared_buffers, effective_cache_size and "
    "maintenance_work_mem are derived from it; `elizadb validate` with elizadb:vector."
    "expectedMemories says how much is enough), or the parameter named, in "
    "elizadb:postgres.parameters, if the node has the memory"
)


def check_index_cache(ctx: Context) -> Outcome:
    """The HNSW indexes together fit in the memory the server says it caches
    (effective_cache_size): searches that must read the graph from disk are many times slower.
    Warns otherwise."""
    seen = Findings()
    try:
        found = _index_memory(ctx)
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    total = sum(size for _, size in found.indexes)
    shown = ", ".join(f"{name} {_mb(size)}" for name, size in found.indexes)
    if total > found.effective_cache_size:
        seen.warn(
            f"the HNSW indexes take {_mb(total)} ({shown}), more than the server can cache "
            f"(effective_cache_size {_mb(found.effective_cache_size)}, of which shared_buffers "
            f"{_mb(found.shared_buffers)}): vector searches will read their graph from disk"
        )
    return seen.outcome(
        f"{len(found.indexes)} HNSW index(es), {_mb(total)}, within effective_cache_size "
        f"{_mb(found.effective_cache_size)} (shared_buffers {_mb(found.shared_buffers)})",
        "",
        f"{RAISE_MEMORY} (effective_cache_size, shared_buffers); or drop an operator no client "
        "orders by from elizadb:vector.operators",
    )


def check_index_build(ctx: Context) -> Outcome:
    """Every HNSW index fits in maintenance_work_mem, so that rebuilding it (REINDEX, `elizadb
    maintenance`, a new index of the same size) keeps its graph in memory. Warns otherwise: a
    build that spills takes many times as long."""
    seen = Findings()
    try:
        found = _index_memory(ctx)
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    limit = found.maintenance_work_mem
    for name, size in found.indexes:
        if size > limit:
            seen.warn(
                f"{name} takes {_mb(size)}, more than maintenance_work_mem ({_mb(limit)}): "
                "a REINDEX or a new index of its size would spill its graph and build many "
                "times slower"
            )
    largest = f", the largest {_mb(found.indexes[0][1])}" if found.indexes else ""
    return seen.outcome(
        f"{len(found.indexes)} HNSW index(es){largest}, within maintenance_work_mem {_mb(limit)}",
        "",
        f"{RAISE_MEMORY} (maintenance_work_mem; a parallel build also needs it in "
        "elizadb:resources.shmSize)",
    )


CHECKS = (
    Check("vector.settings", check_settings, profiles=("eliza-0.1",)),
    # Catalog only, before the probe adds its rows: they run on every profile (an HNSW index
    # anyone made counts) and in read-only mode, and `elizadb status` runs them.
    Check("vector.index_cache", check_index_cache, warns=True),
    Check("vector.index_build", check_index_build, warns=True),
    # The probe writes public.memories.embedding rows of the 0.1 schema.
    Check("vector.hnsw_plan", check_hnsw_plan, writes=PROBE_WRITES, profiles=("eliza-0.1",)),
    Check("vector.recall", check_recall, writes=PROBE_WRITES, profiles=("eliza-0.1",)),
    Check("vector.latency", check_latency, writes=PROBE_WRITES, profiles=("eliza-0.1",)),
)
