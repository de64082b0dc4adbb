"""Benchmark of ElizaOS 1.x on the stack (issue 8): @elizaos/plugin-sql's migration time, and its
vector search at 10k and 100k memories of one agent.

    python bench/plugin_search_bench.py [--sizes 10000,100000] [--queries 30]

Deploys a `schema.profile: eliza-1` stack (p8bench, ports 47300-47309; removed afterwards), runs
the pinned plugin's migrations with tests/plugin-sql/drive.mjs (first run on the empty database,
then no-op runs), lets one agent create its agent, entity, world and room rows through the
plugin, and loads N memories with clustered unit-length 1536-d embeddings (verify/synthetic.py;
never i.i.d. random vectors) into the plugin's tables.

The search is the plugin's own query (MemoryStore.searchByEmbedding: 1 - (dim_1536 <=> $1),
filtered by type and agent, joined to memories, ORDER BY the expression, LIMIT 10), sent as
eliza_agent through PgBouncer's transaction pool. It is measured twice on the same rows: in the
plugin's table as the stack tunes it (dim_1536 stored PLAIN by sql/eliza-1/1003) and in a copy
with the vector type's default storage (out of line, TOAST), which is what the plugin gets on a
server without the kit. Writes bench/results/plugin_search.json and .md. A benchmark, not a
test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.stacks import deployed_stack
from verify.synthetic import clustered_vectors, percentile

RESULTS = ROOT / "bench" / "results"
DRIVER = ROOT / "tests" / "plugin-sql" / "drive.mjs"
DIMS = 1536
# The plugin's query, as drizzle renders MemoryStore.searchByEmbedding (the embedding column is
# selected too); {table} is the embeddings table measured.
SEARCH = (
    "SELECT m.id, m.type, m.created_at, m.content, m.entity_id, m.agent_id, m.room_id,"
    ' m.world_id, m."unique", m.metadata, 1 - (e.dim_1536 <=> %s::vector) AS similarity,'
    " e.dim_1536 FROM {table} e INNER JOIN memories m ON m.id = e.memory_id"
    " WHERE (m.type = %s AND m.agent_id = %s) ORDER BY similarity DESC LIMIT 10"
)
# Outside schema public, where the stack's event trigger (sql/eliza-1/1003) would tune it too.
BASELINE = "bench_default.embeddings"


def drive(mode: str, url: str, **env: str) -> dict[str, Any]:
    out = subprocess.run(
        ["node", str(DRIVER), mode],
        cwd=tempfile.gettempdir(),
        env={**os.environ, "POSTGRES_URL": url, "LOG_LEVEL": "warn", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    records = {}
    for line in out.splitlines():
        if line.startswith("{") and '"op"' in line:
            record = json.loads(line)
            records[record["op"]] = record
    return records


def load(su: psycopg.Connection[Any], ids: dict[str, Any], count: int, seed: int) -> float:
    """N memories of the driver's agent, room and user, with their embeddings, by COPY."""
    vectors = clustered_vectors(count, DIMS, seed=seed, topics=200, latent_dims=48)
    started = time.perf_counter()
    with su.transaction():
        su.execute("DELETE FROM memories WHERE agent_id = %s", (ids["agentId"],))
        with su.cursor().copy(
            "COPY memories (id, type, content, entity_id, agent_id, room_id, world_id) FROM STDIN"
        ) as copy:
            for i in range(count):
                copy.write_row(
                    (
                        f"00000000-0000-4000-8000-{i:012d}",
                        "messages",
                        json.dumps({"text": f"memory {i}"}),
                        ids["userId"],
                        ids["agentId"],
                        ids["roomId"],
                        ids["worldId"],
                    )
                )
        with su.cursor().copy(
            "COPY embeddings (memory_id, dim_1536) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "vector"])
            for i in range(count):
                copy.write_row((uuid.UUID(f"00000000-0000-4000-8000-{i:012d}"), vectors[i]))
    su.execute("VACUUM ANALYZE memories")
    su.execute("VACUUM ANALYZE embeddings")
    su.execute("DROP SCHEMA IF EXISTS bench_default CASCADE")
    su.execute("CREATE SCHEMA bench_default")
    su.execute("GRANT USAGE ON SCHEMA bench_default TO eliza_agent")
    # The same rows under the vector type's default storage.
    su.execute(f"CREATE TABLE {BASELINE} (LIKE embeddings INCLUDING DEFAULTS)")
    su.execute(f"ALTER TABLE {BASELINE} ALTER COLUMN dim_1536 SET STORAGE DEFAULT")
    su.execute(f"INSERT INTO {BASELINE} SELECT * FROM embeddings")
    su.execute(f"CREATE INDEX ON {BASELINE} (memory_id)")
    su.execute(f"GRANT SELECT ON {BASELINE} TO eliza_agent")
    su.execute(f"VACUUM ANALYZE {BASELINE}")
    return time.perf_counter() - started


def measure(
    agent_url: str, su: psycopg.Connection[Any], table: str, ids: dict[str, Any], queries: int
) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    probes = clustered_vectors(queries, DIMS, seed=99, topics=200, latent_dims=48)
    latencies = []
    with psycopg.connect(agent_url, autocommit=True, prepare_threshold=None) as agent:
        register_vector(agent)
        query = SEARCH.format(table=table)
        agent.execute(query, (probes[0], "messages", ids["agentId"])).fetchall()  # warm
        for probe in probes:
            probe = probe + 0.01 * rng.standard_normal(DIMS).astype(np.float32)
            started = time.perf_counter()
            rows = agent.execute(query, (probe, "messages", ids["agentId"])).fetchall()
            latencies.append((time.perf_counter() - started) * 1000)
            assert len(rows) == 10
    register_vector(su)
    plan = su.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + SEARCH.format(table=table),
        (probes[0], "messages", ids["agentId"]),
    ).fetchone()[0][0]
    size = su.execute("SELECT pg_total_relation_size(%s::regclass)", (table,)).fetchone()[0]
    nodes: list[str] = []
    workers = [0]

    def walk(node: dict[str, Any]) -> None:
        relation = f" on {node['Relation Name']}" if "Relation Name" in node else ""
        nodes.append(node["Node Type"] + relation)
        workers.append(node.get("Workers Launched", 0))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return {
        "table": table,
        "storage": su.execute(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attname = 'dim_1536'",
            (table,),
        ).fetchone()[0],
        "size_mb": round(size / 2**20, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "min_ms": round(min(latencies), 1),
        "max_ms": round(max(latencies), 1),
        "plan": nodes,
        "workers": max(workers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()[0]
    settings = {
        "resources": {"memory": "2g", "shmSize": "512m"},
        "postgres": {"parameters": {"shared_buffers": "768MB", "effective_cache_size": "1536MB"}},
    }
    result: dict[str, Any] = {"sizes": {}, "settings": settings}
    with (
        tempfile.TemporaryDirectory() as tmp,
        deployed_stack(
            Path(tmp),
            "p8bench",
            47300,
            replicas=0,
            schema={"profile": "eliza-1"},
            network={"subnet": "10.213.47.0/24"},
            **settings,
        ) as stack,
    ):
        urls = stack.outputs["nodeConnections"]
        first = drive("migrate", urls["migrator"])["migrate"]["detail"]["ms"]
        again = [drive("migrate", urls["migrator"])["migrate"]["detail"]["ms"] for _ in range(3)]
        result["migration_ms"] = {"first": first, "no_op": again}
        ids = drive("agent", urls["agentPooler"])["summary"]["detail"]
        with psycopg.connect(stack.connections["superuser"], dbname="eliza", autocommit=True) as su:
            register_vector(su)
            result["postgresql"] = su.execute("SHOW server_version").fetchone()[0]
            result["pgvector"] = su.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()[0]
            for size in sizes:
                loaded = load(su, ids, size, seed=size)
                print(f"{size} memories loaded in {loaded:.1f}s", file=sys.stderr)
                runs = [
                    measure(urls["agentPooler"], su, table, ids, args.queries)
                    for table in ("embeddings", BASELINE)
                ]
                result["sizes"][str(size)] = {"load_s": round(loaded, 1), "runs": runs}
                print(json.dumps(runs), file=sys.stderr)
    result["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_before": round(load_before, 1),
        "load_after": round(os.getloadavg()[0], 1),
        "queries": args.queries,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "plugin_search.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "plugin_search.md").write_text(render(result))
    print(render(result))


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# ElizaOS 1.x (@elizaos/plugin-sql 1.7.2) on the stack",
        "",
        (
            f"One agent's memories, clustered unit-length 1536-d embeddings; the plugin's own search "
            f"query (ORDER BY 1 - (dim_1536 <=> q) LIMIT 10, no index can serve it) as eliza_agent "
            f"through PgBouncer's transaction pool, {m['queries']} queries per row. PostgreSQL "
            f"{result.get('postgresql')}, pgvector {result.get('pgvector')}, {m['cpus']} CPUs, "
            f"container memory {result['settings']['resources']['memory']}, shared_buffers "
            f"{result['settings']['postgres']['parameters']['shared_buffers']}; load average "
            f"{m['load_before']} before, {m['load_after']} after."
        ),
        "",
        "| memories | dim_1536 storage | table MB | min ms | p50 ms | p95 ms | plan |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, data in result["sizes"].items():
        for run in data["runs"]:
            label = (
                "PLAIN (the stack)" if run["storage"] == "p" else "default, TOAST (plugin alone)"
            )
            lines.append(
                f"| {int(size):,} | {label} | {run['size_mb']} | {run['min_ms']} | {run['p50_ms']} | "
                f"{run['p95_ms']} | {' → '.join(run['plan'][:4])}, {run['workers']} workers |"
            )
    mig = result["migration_ms"]
    lines += [
        "",
        (
            f"Migrations (the plugin's runtime migrations through the session pool, as the "
            f"migration role): first start {mig['first']} ms; later starts (nothing to do) "
            f"{', '.join(str(x) for x in mig['no_op'])} ms."
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--render"]:  # the markdown again from the committed JSON
        saved = json.loads((RESULTS / "plugin_search.json").read_text())
        (RESULTS / "plugin_search.md").write_text(render(saved))
    else:
        main()
