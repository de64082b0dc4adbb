"""Agent workload on a deployed stack (issue 12, item 4): concurrent agents doing what
@elizaos/adapter-postgres 0.1.9 does on a turn, through the pooler, on N memories; and the
recall/latency curve of hnsw.ef_search for the adapter's search.

    python bench/agent_bench.py [--memories 100000] [--connections 1,4,16,64] [--duration 60]
        [--ef-search 20,40,60,80,100,150,200,300,400] [--queries 200] [--out bench/results/agent]
        [--config Pulumi.dev.yaml] [--label TEXT] [--state DIR [--reuse]]
        [--variant NAME[:setting=value,...] ... [--rounds 2] [--probe-queries 30]
         [--agreement-queries 1000]]

Deploys the stack of --config (the dev stack by default: its replicas, memory and parameters)
under its own name `p12bagent`, on ports 51500-51509 and its own subnet, and removes it at the
end (--keep leaves it). The data: N memories of 8 agents in 100 rooms, clustered unit-length
1536-d embeddings (verify/synthetic.py; never i.i.d. random vectors), each room holding mostly
two topics and some chatter from the others, 85 % `messages`, dates over 30 days. Loaded by the
superuser (RLS binds the owner too) with binary COPY, the HNSW indexes dropped first and built
again afterwards from their own definitions (pg_get_indexdef: exactly the migrations'), then
ANALYZE; the run starts once every replica has replayed the load.

A turn is the adapter's SQL, text for text, sent as eliza_agent through PgBouncer's transaction
pool with the stack's own connection string (verify-full TLS): getMemoryById, createMemory (its
duplicate search: count 1, similarity >= 0.95, then the INSERT with the embedding),
searchMemories (type, agent, room, similarity >= 0.1, 10 rows) and getMemories (32 most recent).
Parameters go over the extended protocol without named statements, as node-postgres sends them,
the vector as the adapter's text literal. Each connection is a thread that runs turns back to
back; the turns that end within --duration seconds after --warmup seconds are counted (a turn
in flight at the end is finished but not counted). Meanwhile a superuser
connection to the primary samples pg_stat_replication every 100 ms (replay_lag and the LSN
distance of each replica).

The curve runs before the turns, on the loaded data: for each query shape and ef_search, the
search inside a transaction with SET LOCAL hnsw.ef_search (a plain SET would leak to other
clients through the transaction pool); exact answers from the same query with index scans off.

Server-settings variants (--variant, repeated; the first is the reference) are compared side
by side in one run on the same data: each setting is applied with SET LOCAL in the transaction
it is for (a plain SET would stay on the pooled server connection). The curve runs each query
under every variant in turn; a probe times createMemory's duplicate search alone in the busiest
room (no duplicate: the HNSW scan runs until hnsw.max_scan_tuples; near duplicates: it must find
them); each shape's search on --agreement-queries more embeddings is compared with the
reference's rows; and the load levels run --rounds times, the variants forward then backward,
each turn one transaction (BEGIN with the SET LOCAL, the calls, COMMIT) in every variant alike.

--state DIR keeps the stack's state there and leaves it running; --reuse then brings it up again
without removing it, and keeps the data when it is this --memories and --seed's load (the turns'
rows of earlier runs stay and are counted).

Writes agent.json, agent.md, agent-load.svg (agent-variants.svg with variants) and
agent-ef-search.svg under --out. A benchmark, not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psycopg
import psycopg.sql
import yaml
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.agent_report import (
    agreement_summary,
    curve_point,
    ef_search_svg,
    first_reaching,
    latency_summary,
    load_svg,
    probe_summary,
    render_markdown,
    scan_rate,
    variants_svg,
)
from bench.engine import engine_description
from infra.settings import DEFAULT_PG_PARAMETERS, config_from_yaml_document
from tests.integration.stacks import DeployedStack, deployed_stack
from verify.synthetic import clustered_vectors, percentile

STACK = "p12bagent"
PORT_BASE = 51500
SUBNET = "10.215.12.0/24"
DIMS = 1536
TOPICS = 200
AGENTS = 8
USERS = 50
ROOMS = 100
CHATTER = 0.2  # the share of a room's memories that are off its topics
TYPES = (("messages", 0.85), ("facts", 0.10), ("documents", 0.05))
# New embeddings for the turns, drawn with the memories from one generator call. A fixed size:
# the draw of every memory depends on the call's total count, so a configurable pool would
# change the data under the same --memories and --seed.
TURN_POOL = 20_000
RECENT = 32  # AgentRuntime's conversationLength: getMemories' count on every turn
SEARCH_COUNT = 10
SEARCH_THRESHOLD = 0.1  # @elizaos/core's defaultMatchThreshold
DEDUPE_THRESHOLD = 0.95  # the adapter's createMemory
# The calls of a turn: createMemory is getMemoryById + the duplicate search + the INSERT.
OPS = ("create", "get_by_id", "dedupe", "insert", "search", "recent")
TARGETS = {"turn_p95_ms_at_16": 20.0, "replay_lag_p95_ms": 100.0}


def progress(message: str) -> None:
    sys.stderr.write(f"  [agent-bench] {time.strftime('%H:%M:%S')} {message}\n")


# ---------------------------------------------------------------------------------------------
# The adapter's SQL (dist/index.js of @elizaos/adapter-postgres 0.1.9), with psycopg's named
# placeholders where the adapter numbers them: a repeated name is one $n, as there.


def search_sql(*, agent: bool, room: bool, threshold: bool, count: bool) -> str:
    """searchMemoriesByEmbedding's query, its clauses added in the adapter's order."""
    sql = (
        "\n                SELECT *,\n"
        f"                1 - (embedding <-> %(q)s::vector({DIMS})) as similarity\n"
        "                FROM memories\n                WHERE type = %(type)s\n            "
    )
    if agent:
        sql += ' AND "agentId" = %(agent)s'
    if room:
        sql += ' AND "roomId" = %(room)s::uuid'
    if threshold:
        sql += " AND 1 - (embedding <-> %(q)s::vector) >= %(threshold)s"
    sql += " ORDER BY embedding <-> %(q)s::vector"
    if count:
        sql += " LIMIT %(count)s"
    return sql


# The exact search the targets name: every memory compared, no filter, no index.
EXACT_OPERATORS = {"l2": "<->", "cosine": "<=>"}
EXACT_QUERIES = 20

GET_BY_ID = "SELECT * FROM memories WHERE id = %s"
INSERT = (
    'INSERT INTO memories (\n                    id, type, content, embedding, "userId", '
    '"roomId", "agentId", "unique", "createdAt"\n                ) VALUES (%s, %s, %s, %s, '
    "%s::uuid, %s::uuid, %s::uuid, %s, to_timestamp(%s/1000.0))"
)
RECENT_SQL = (
    'SELECT * FROM memories WHERE type = %s AND "roomId" = %s AND "agentId" = %s'
    ' ORDER BY "createdAt" DESC LIMIT %s'
)
# createMemory's duplicate check: tableName, roomId, match_threshold 0.95, count 1 (no agent).
DEDUPE_SQL = search_sql(agent=False, room=True, threshold=True, count=True)
# What a turn's searchMemories sends: MemoryManager adds the agent; unique is false.
SEARCH_SQL = search_sql(agent=True, room=True, threshold=True, count=True)
# The curve's shapes: the turn's search; the same without a room (searchMemories when the
# caller gives none); and without agent or room, which the planner always gives to the HNSW
# index, so that its recall shows whatever the planner picks for the filtered shapes.
SHAPES = {
    "room": SEARCH_SQL,
    "agent": search_sql(agent=True, room=False, threshold=True, count=True),
    "type": search_sql(agent=False, room=False, threshold=True, count=True),
}


# ---------------------------------------------------------------------------------------------
# Server-settings variants: compared side by side in one run, each applied with SET LOCAL inside
# the transaction it is for (a plain SET would stay on the pooled server connection and reach
# other clients).

_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")
_SETTING_VALUE = re.compile(r"^[A-Za-z0-9_.+-]+$")
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
T = TypeVar("T")


@dataclass(frozen=True)
class Variant:
    """A name and the settings a transaction gets under it (none: the stack's own defaults)."""

    name: str
    settings: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Variant:
        """NAME or NAME:setting=value[,setting=value...], e.g. mst2000:hnsw.max_scan_tuples=2000.
        Names and values are checked here, as they are written into SET LOCAL statements."""
        name, _, rest = spec.partition(":")
        if not _VARIANT_NAME.match(name):
            raise ValueError(f"variant name {name!r}: letters, digits, '_', '.', '-' only")
        settings = []
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if not eq or not _SETTING_NAME.match(key) or not _SETTING_VALUE.match(value):
                raise ValueError(f"variant {name}: {item!r} is not setting=value")
            settings.append((key, value))
        return cls(name, tuple(settings))

    def set_local(self) -> str:
        """One simple-protocol message: each setting for the current transaction only."""
        return "; ".join(f"SET LOCAL {k} = '{v}'" for k, v in self.settings)

    def begin(self) -> str:
        """BEGIN and the settings in one round trip."""
        return "; ".join(["BEGIN", *([self.set_local()] if self.settings else [])])

    def describe(self) -> dict[str, str]:
        return dict(self.settings)


def rotated(items: Sequence[T], k: int) -> list[T]:
    """items starting at the k-th (cyclically): the order of variants for the k-th query."""
    if not items:
        return []
    k %= len(items)
    return [*items[k:], *items[:k]]


def round_order(items: Sequence[T], round_index: int) -> list[T]:
    """The variants' order in a round of load levels: forward, then backward (A B C, C B A,
    ...), so that a drift of the machine's load or of the data's size over the run falls
    evenly on every variant."""
    return list(items) if round_index % 2 == 0 else list(reversed(items))


def vector_text(vector: np.ndarray) -> str:
    """The adapter's literal: each component as JavaScript prints Number(x.toFixed(6)) (no
    trailing zeros, no "-0"), joined by commas, in brackets."""

    def js(x: float) -> str:
        text = f"{x:.6f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text

    return "[" + ",".join(js(x) for x in vector.tolist()) + "]"


def memory_id(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def account_id(kind: int, i: int) -> str:
    return f"{kind:08x}-0000-4000-8000-{i:012d}"


def room_id(i: int) -> str:
    return f"0000000f-0000-4000-8000-{i:012d}"


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class Dataset:
    vectors: np.ndarray  # memories then the turns' new embeddings
    rooms: np.ndarray  # the room of each row of vectors
    memories: int
    rooms_count: int
    agents: int

    def agent_of_room(self, room: int) -> int:
        return room % self.agents


def make_dataset(memories: int, extra: int, rooms: int, agents: int, seed: int) -> Dataset:
    """Embeddings with topic structure, and rooms that talk about a few topics each: a room's
    memories are mostly of its own two topics (topic t lives in room t % rooms), the rest is
    chatter spread over rooms by a Zipf weight (some rooms are much busier than others)."""
    vectors = clustered_vectors(memories + extra, DIMS, seed=seed, topics=TOPICS, latent_dims=48)
    rng = np.random.default_rng(seed + 1)
    # The generator does not return its topic labels; the nearest of TOPICS sample points
    # recovers a topic-like label, which is all the room assignment needs.
    anchors = vectors[rng.choice(len(vectors), TOPICS, replace=False)]
    labels = np.concatenate(
        [np.argmax(chunk @ anchors.T, axis=1) for chunk in np.array_split(vectors, 64)]
    )
    weights = 1.0 / np.arange(1, rooms + 1)
    chatter = rng.random(len(vectors)) < CHATTER
    room = np.where(chatter, rng.choice(rooms, len(vectors), p=weights / weights.sum()), labels)
    return Dataset(vectors, room % rooms, memories, rooms, agents)


def load(su: psycopg.Connection[Any], data: Dataset, seed: int) -> dict[str, Any]:
    """Accounts, rooms and N memories by binary COPY, the HNSW indexes built after the rows."""
    rng = np.random.default_rng(seed + 2)
    started = time.perf_counter()
    with su.transaction():
        su.execute("TRUNCATE memories, rooms, accounts CASCADE")
        with su.cursor().copy("COPY accounts (id, name, username, email) FROM STDIN") as copy:
            for i in range(data.agents):
                copy.write_row((account_id(0xA, i), f"agent {i}", f"agent{i}", f"a{i}@bench"))
            for i in range(USERS):
                copy.write_row((account_id(0xB, i), f"user {i}", f"user{i}", f"u{i}@bench"))
        with su.cursor().copy("COPY rooms (id) FROM STDIN") as copy:
            for i in range(data.rooms_count):
                copy.write_row((room_id(i),))
    hnsw = su.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam"
        " WHERE i.indrelid = 'public.memories'::regclass AND a.amname = 'hnsw' ORDER BY 1"
    ).fetchall()
    for name, _ in hnsw:
        su.execute(f'DROP INDEX public."{name}"')
    names = [t for t, _ in TYPES]
    types = rng.choice(len(names), data.memories, p=[p for _, p in TYPES])
    users = rng.integers(0, USERS, data.memories)
    now = datetime.now(UTC)
    ages = rng.uniform(0, 30 * 86400, data.memories)
    copy_started = time.perf_counter()
    with (
        su.transaction(),
        su.cursor().copy(
            'COPY memories (id, type, "createdAt", content, embedding, "userId", "agentId",'
            ' "roomId") FROM STDIN WITH (FORMAT BINARY)'
        ) as copy,
    ):
        copy.set_types(["uuid", "text", "timestamptz", "jsonb", "vector", "uuid", "uuid", "uuid"])
        for i in range(data.memories):
            room = int(data.rooms[i])
            copy.write_row(
                (
                    uuid.UUID(memory_id(i)),
                    names[types[i]],
                    now - timedelta(seconds=float(ages[i])),
                    Jsonb({"text": f"memory {i}", "source": "bench"}),
                    data.vectors[i],
                    uuid.UUID(account_id(0xB, int(users[i]))),
                    uuid.UUID(account_id(0xA, data.agent_of_room(room))),
                    uuid.UUID(room_id(room)),
                )
            )
    copy_s = time.perf_counter() - copy_started
    builds = {}
    for name, definition in hnsw:
        began = time.perf_counter()
        su.execute(definition)
        builds[name] = round(time.perf_counter() - began, 1)
        progress(f"built {name} in {builds[name]} s")
    su.execute("ANALYZE memories")
    su.execute("ANALYZE accounts")
    su.execute("ANALYZE rooms")
    sizes = su.execute(
        "SELECT pg_relation_size('memories'), pg_total_relation_size('memories')"
    ).fetchone()
    assert sizes is not None
    loaded = {
        "load_s": round(time.perf_counter() - started, 1),
        "copy_s": round(copy_s, 1),
        "index_build_s": builds,
        "table_mb": round(sizes[0] / 2**20),
        "total_mb": round(sizes[1] / 2**20),
    }
    # What --reuse finds: which data this is and what loading it took.
    marker = json.dumps({"memories": data.memories, "seed": seed, **loaded})
    su.execute(psycopg.sql.SQL("COMMENT ON TABLE memories IS {}").format(LOAD_MARK + marker))
    return loaded


LOAD_MARK = "agent_bench load "


def earlier_load(su: psycopg.Connection[Any], memories: int, seed: int) -> dict[str, Any] | None:
    """What an earlier run of this benchmark loaded into the stack (--reuse), if it is the data
    that --memories and --seed ask for."""
    row = su.execute("SELECT obj_description('memories'::regclass, 'pg_class')").fetchone()
    text = row[0] if row else None
    if not text or not text.startswith(LOAD_MARK):
        return None
    mark: dict[str, Any] = json.loads(text.removeprefix(LOAD_MARK))
    if (mark.pop("memories"), mark.pop("seed")) != (memories, seed):
        return None
    return mark


def wait_for_replicas(su: psycopg.Connection[Any], replicas: int, timeout: float = 900) -> float:
    """Until every replica has replayed the primary's WAL as of now; the seconds it took."""
    started = time.monotonic()
    target = su.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    while time.monotonic() - started < timeout:
        behind = su.execute(
            "SELECT count(*) FILTER (WHERE replay_lsn >= %s::pg_lsn), count(*)"
            " FROM pg_stat_replication",
            (target,),
        ).fetchone()
        assert behind is not None
        if behind[1] >= replicas and behind[0] == behind[1]:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"replicas did not replay the load within {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------
# The ef_search curve


def hnsw_indexes(conn: psycopg.Connection[Any]) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'memories'"
            " AND indexdef LIKE '%%USING hnsw%%'"
        )
    }


def _plan_uses(plan: dict[str, Any], indexes: set[str]) -> bool:
    if plan.get("Index Name") in indexes:
        return True
    return any(_plan_uses(child, indexes) for child in plan.get("Plans", []))


def search_params(data: Dataset, row: int) -> dict[str, Any]:
    """The search's parameters for the embedding of one row of data (a turn's), as a turn
    would send them: its room and the room's agent."""
    return {
        "q": vector_text(data.vectors[row]),
        "type": "messages",
        "agent": account_id(0xA, data.agent_of_room(int(data.rooms[row]))),
        "room": room_id(int(data.rooms[row])),
        "threshold": SEARCH_THRESHOLD,
        "count": SEARCH_COUNT,
    }


def reference_agreement(
    url: str, data: Dataset, variants: Sequence[Variant], queries: int, seed: int
) -> dict[str, Any]:
    """Each curve shape's search at the stack's ef_search, on `queries` other turns'
    embeddings, under every variant in turn: which of the first variant's rows each variant
    returns too. A search that the scan's bound cuts short can lose all its rows, yet be one
    query in hundreds, which the curve's sample and mean recall do not show; recall against
    exact answers would need an exact scan per query, and the reference's own recall is the
    curve's."""
    rng = np.random.default_rng(seed + 6)
    picks = rng.choice(np.arange(data.memories, len(data.vectors)), queries, replace=False)
    reference = variants[0].name
    out: dict[str, Any] = {"queries": queries, "reference": reference, "shapes": {}}
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        for name, sql in SHAPES.items():
            found: dict[str, list[list[Any]]] = {v.name: [] for v in variants}
            times: dict[str, list[float]] = {v.name: [] for v in variants}
            for k, row in enumerate(picks):
                params = search_params(data, int(row))
                for v in rotated(variants, k):
                    with conn.transaction():
                        if v.settings:
                            conn.execute(v.set_local())
                        began = time.perf_counter()
                        found[v.name].append([r[0] for r in conn.execute(sql, params)])
                        times[v.name].append((time.perf_counter() - began) * 1000)
            out["shapes"][name] = {
                v.name: agreement_summary(found[v.name], found[reference], times[v.name])
                for v in variants
            }
            progress(f"agreement {name}: {out['shapes'][name]}")
    return out


def ef_search_curve(
    url: str,
    data: Dataset,
    ef_values: Sequence[int],
    queries: int,
    seed: int,
    variants: Sequence[Variant] = (),
) -> dict[str, Any]:
    """Recall@10 and latency of each shape at each ef_search. With variants, every query runs
    under each variant in turn (the order rotated from one query to the next), so that the
    machine's load falls on all of them alike; the shape's own curve is the first variant's."""
    rng = np.random.default_rng(seed + 3)
    picks = rng.choice(np.arange(data.memories, len(data.vectors)), queries, replace=False)
    runs = list(variants) or [Variant("")]
    shapes: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        hnsw = hnsw_indexes(conn)
        for name, sql in SHAPES.items():
            params = [search_params(data, int(i)) for i in picks]
            exact = []
            for p in params:
                with conn.transaction():
                    conn.execute("SET LOCAL enable_indexscan = off")
                    exact.append([r[0] for r in conn.execute(sql, p).fetchall()])
            curves: dict[str, list[dict[str, Any]]] = {v.name: [] for v in runs}
            for ef in ef_values:
                seen: dict[str, tuple[list[list[Any]], list[float], list[bool]]] = {
                    v.name: ([], [], []) for v in runs
                }
                for k, p in enumerate(params):
                    for v in rotated(runs, k):
                        found, times, served = seen[v.name]
                        with conn.transaction():
                            conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
                            if v.settings:
                                conn.execute(v.set_local())
                            began = time.perf_counter()
                            rows = conn.execute(sql, p).fetchall()
                            times.append((time.perf_counter() - began) * 1000)
                            plan = conn.execute("EXPLAIN (FORMAT JSON) " + sql, p).fetchone()
                        assert plan is not None
                        served.append(_plan_uses(plan[0][0]["Plan"], hnsw))
                        found.append([r[0] for r in rows])
                for v in runs:
                    point = curve_point(int(ef), *seen[v.name], exact)
                    curves[v.name].append(point)
                    progress(
                        f"ef_search {ef} {name}{f' {v.name}' if v.name else ''}: recall "
                        f"{point['recall']}, p95 {point['latency_ms'].get('p95')} ms"
                    )
            curve = curves[runs[0].name]
            shapes[name] = {
                "where": " ".join(sql.split("WHERE", 1)[1].split(" ORDER")[0].split()),
                "exact_mean_rows": round(sum(map(len, exact)) / len(exact), 2),
                "curve": curve,
                "first_reaching_0_99": first_reaching(curve, 0.99),
            }
            if variants:
                shapes[name]["variants"] = {
                    v.name: {
                        "curve": curves[v.name],
                        "first_reaching_0_99": first_reaching(curves[v.name], 0.99),
                    }
                    for v in variants
                }
    return {
        "queries": queries,
        "default": DEFAULT_PG_PARAMETERS["hnsw.ef_search"],
        "shapes": shapes,
    }


def exact_scan(url: str, data: Dataset, queries: int, seed: int) -> dict[str, Any]:
    """Exact top-10 over every memory with each operator, as the agent through the pooler: the
    index scans off in the query's transaction, one query first to warm up (not counted)."""
    rng = np.random.default_rng(seed + 5)
    picks = rng.choice(np.arange(data.memories, len(data.vectors)), queries + 1, replace=False)
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        rows = conn.execute("SELECT count(*) FROM memories").fetchone()[0]  # type: ignore[index]
        for name, operator in EXACT_OPERATORS.items():
            sql = f"SELECT id FROM memories ORDER BY embedding {operator} %s::vector LIMIT 10"
            times: list[float] = []
            for k, row in enumerate(picks):
                with conn.transaction():
                    conn.execute("SET LOCAL enable_indexscan = off")
                    began = time.perf_counter()
                    conn.execute(sql, (vector_text(data.vectors[row]),)).fetchall()
                    if k:
                        times.append((time.perf_counter() - began) * 1000)
            with conn.transaction():
                conn.execute("SET LOCAL enable_indexscan = off")
                plan = conn.execute(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, (vector_text(data.vectors[picks[0]]),)
                ).fetchone()
            assert plan is not None
            out[name] = {
                "operator": operator,
                **scan_rate(int(rows), times),
                "workers": _plan_sum(plan[0][0]["Plan"], "Workers Launched"),
            }
            progress(f"exact scan {name}: {out[name]['vectors_per_s']:,} vectors/s")
    return out


# ---------------------------------------------------------------------------------------------
# Turns


class TurnSource:
    """The next turn's embedding, room, agent and user, shared by the workers. The turns' pool
    of embeddings is reused from the start when a run outlasts it (the duplicate search then
    finds the earlier copy, as it would for a repeated message)."""

    def __init__(self, data: Dataset, seed: int) -> None:
        self.data = data
        self.lock = threading.Lock()
        self.next = 0
        self.rng = np.random.default_rng(seed + 4)
        self.size = len(data.vectors) - data.memories
        # Formatted when first used (formatting the whole pool up front took 42 s on a loaded
        # machine); a race formats one twice, harmlessly.
        self.texts: dict[int, str] = {}

    def take(self) -> tuple[str, int, int]:
        with self.lock:
            k = self.next % self.size
            self.next += 1
            user = int(self.rng.integers(0, USERS))
        row = self.data.memories + k
        if k not in self.texts:
            self.texts[k] = vector_text(self.data.vectors[row])
        return self.texts[k], int(self.data.rooms[row]), user


def turn(
    conn: psycopg.Connection[Any], source: TurnSource, begin: str | None = None
) -> dict[str, float]:
    """One agent turn; milliseconds per adapter call. With begin (a variant's BEGIN and SET
    LOCAL), the turn is one transaction: begin, the calls, COMMIT; their two round trips are
    `txn` and count in the turn, and the INSERT's commit is in COMMIT rather than in `insert`."""
    text, room, user = source.take()
    agent = account_id(0xA, source.data.agent_of_room(room))
    new_id = str(uuid.uuid4())
    times: dict[str, float] = {}
    started = time.perf_counter()
    if begin is not None:
        conn.execute(begin)
    t0 = time.perf_counter()
    conn.execute(GET_BY_ID, (new_id,)).fetchall()
    ta = time.perf_counter()
    similar = conn.execute(
        DEDUPE_SQL,
        {
            "q": text,
            "type": "messages",
            "room": room_id(room),
            "threshold": DEDUPE_THRESHOLD,
            "count": 1,
        },
    ).fetchall()
    tb = time.perf_counter()
    conn.execute(
        INSERT,
        (
            new_id,
            "messages",
            json.dumps({"text": "a turn", "source": "bench"}),
            text,
            account_id(0xB, user),
            room_id(room),
            agent,
            not similar,
            int(time.time() * 1000),
        ),
    )
    t1 = time.perf_counter()
    conn.execute(
        SEARCH_SQL,
        {
            "q": text,
            "type": "messages",
            "agent": agent,
            "room": room_id(room),
            "threshold": SEARCH_THRESHOLD,
            "count": SEARCH_COUNT,
        },
    ).fetchall()
    t2 = time.perf_counter()
    conn.execute(RECENT_SQL, ("messages", room_id(room), agent, RECENT)).fetchall()
    t3 = time.perf_counter()
    if begin is not None:
        conn.execute("COMMIT")
    ended = time.perf_counter()
    times["create"] = (t1 - t0) * 1000
    times["get_by_id"] = (ta - t0) * 1000
    times["dedupe"] = (tb - ta) * 1000
    times["insert"] = (t1 - tb) * 1000
    times["search"] = (t2 - t1) * 1000
    times["recent"] = (t3 - t2) * 1000
    if begin is not None:
        times["txn"] = ((t0 - started) + (ended - t3)) * 1000
    times["turn"] = (ended - started) * 1000
    return times


def _plan_nodes(node: dict[str, Any]) -> list[str]:
    name = node["Node Type"] + (f" using {node['Index Name']}" if "Index Name" in node else "")
    return [name] + [n for child in node.get("Plans", []) for n in _plan_nodes(child)]


def busiest_room(data: Dataset) -> int:
    """The room with the most loaded memories."""
    return int(np.bincount(data.rooms[: data.memories]).argmax())


def turn_plans(
    url: str,
    source: TurnSource,
    variant: Variant | None = None,
    pick: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """EXPLAIN ANALYZE of a turn's reads, for one turn's parameters (pick: embedding and room,
    the next turn's by default): which index served each, under the variant's settings."""
    text, room = pick or source.take()[:2]
    agent = account_id(0xA, source.data.agent_of_room(room))
    reads: dict[str, tuple[str, Any]] = {
        "dedupe": (
            DEDUPE_SQL,
            {"q": text, "type": "messages", "room": room_id(room), "threshold": DEDUPE_THRESHOLD}
            | {"count": 1},
        ),
        "search": (
            SEARCH_SQL,
            {"q": text, "type": "messages", "agent": agent, "room": room_id(room)}
            | {"threshold": SEARCH_THRESHOLD, "count": SEARCH_COUNT},
        ),
        "recent": (
            RECENT_SQL,
            ("messages", room_id(room), agent, RECENT),
        ),
    }
    # The duplicate search has no agent filter, so the busiest room is where the planner is most
    # likely to give it to HNSW, whose iterative scan finds nothing within 0.95 and keeps going.
    busiest = busiest_room(source.data)
    reads["dedupe_busiest_room"] = (DEDUPE_SQL, {**reads["dedupe"][1], "room": room_id(busiest)})
    plans: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        hnsw = hnsw_indexes(conn)
        for name, (sql, params) in reads.items():
            plans[name] = explained(conn, sql, params, hnsw, variant)
    return plans


def explained(
    conn: psycopg.Connection[Any],
    sql: str,
    params: Any,
    hnsw: set[str],
    variant: Variant | None = None,
) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of one query, in a transaction with the variant's settings:
    the plan's nodes, its execution time, the buffers it touched and how many rows the filter
    removed (for an HNSW scan: the candidates it handed up and the filter refused)."""
    with conn.transaction():
        if variant is not None and variant.settings:
            conn.execute(variant.set_local())
        row = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()
    assert row is not None
    plan = row[0][0]
    return {
        "nodes": _plan_nodes(plan["Plan"]),
        "hnsw": _plan_uses(plan["Plan"], hnsw),
        "execution_ms": round(plan["Execution Time"], 2),
        "shared_buffers_read": plan["Plan"].get("Shared Read Blocks"),
        "shared_buffers_hit": plan["Plan"].get("Shared Hit Blocks"),
        "rows": plan["Plan"].get("Actual Rows"),
        "rows_removed_by_filter": _plan_sum(plan["Plan"], "Rows Removed by Filter"),
    }


def _plan_sum(node: dict[str, Any], key: str) -> int:
    return int(node.get(key, 0)) + sum(_plan_sum(child, key) for child in node.get("Plans", []))


NEAR_DUPLICATE_DISTANCE = 0.02  # well inside the duplicate search's 0.05


def near_duplicate(vector: np.ndarray, distance: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector about `distance` (L2) from the unit vector given: the same message again,
    embedded a little differently."""
    step = rng.standard_normal(vector.shape)
    step -= (step @ vector) * vector  # orthogonal, so that the distance is what is asked
    moved = vector + distance * step / np.linalg.norm(step)
    return np.asarray(moved / np.linalg.norm(moved))


def dedupe_probe(
    url: str,
    su_url: str,
    data: Dataset,
    variants: Sequence[Variant],
    queries: int,
    seed: int,
) -> dict[str, Any]:
    """createMemory's duplicate search in the busiest room, alone (no other load than the
    machine's), under each variant in turn query by query, by EXPLAIN ANALYZE: `fresh` are new
    messages of that room (the turns' embeddings whose room it is), which have no duplicate,
    so that an HNSW scan runs on until it stops; `near_duplicates` are stored messages of the
    room moved by 0.02, which the search must find (its recall)."""
    rng = np.random.default_rng(seed + 5)
    busiest = busiest_room(data)
    pool = np.flatnonzero(data.rooms[data.memories :] == busiest) + data.memories
    fresh = [data.vectors[i] for i in rng.choice(pool, min(queries, len(pool)), replace=False)]
    stored = np.flatnonzero(data.rooms[: data.memories] == busiest)
    candidates = rng.choice(stored, min(len(stored), 3 * queries), replace=False)
    with psycopg.connect(su_url, autocommit=True) as su:
        register_vector(su)
        rows = su.execute(
            "SELECT id::text, embedding FROM memories WHERE type = 'messages'"
            " AND id = ANY(%s::uuid[])",
            ([memory_id(int(i)) for i in candidates],),
        ).fetchall()
        in_room = su.execute(
            "SELECT count(*) FROM memories WHERE type = 'messages' AND \"roomId\" = %s",
            (room_id(busiest),),
        ).fetchone()
    originals = sorted(rows)[:queries]
    near = [
        near_duplicate(np.asarray(v.to_numpy()), NEAR_DUPLICATE_DISTANCE, rng) for _, v in originals
    ]
    kinds = {"fresh": fresh, "near_duplicates": near}
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {
        (kind, v.name): [] for kind in kinds for v in variants
    }
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        hnsw = hnsw_indexes(conn)
        for kind, vectors in kinds.items():
            for k, vector in enumerate(vectors):
                params = {
                    "q": vector_text(vector),
                    "type": "messages",
                    "room": room_id(busiest),
                    "threshold": DEDUPE_THRESHOLD,
                    "count": 1,
                }
                for v in rotated(variants, k):
                    seen[kind, v.name].append(explained(conn, DEDUPE_SQL, params, hnsw, v))
    out: dict[str, Any] = {
        "room": room_id(busiest),
        "messages_in_room": in_room[0] if in_room else None,
        "near_duplicate_distance": NEAR_DUPLICATE_DISTANCE,
        "variants": {},
    }
    for v in variants:
        out["variants"][v.name] = {kind: probe_summary(seen[kind, v.name]) for kind in kinds}
        progress(f"dedupe probe {v.name}: {out['variants'][v.name]}")
    return out


def sample_lag(
    url: str, stop: threading.Event, out: list[tuple[float, str, float | None, float | None]]
) -> None:
    """pg_stat_replication every 100 ms: (time, replica, replay_lag ms, bytes behind)."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            now = time.monotonic()
            for name, lag_ms, behind in conn.execute(
                "SELECT application_name, EXTRACT(epoch FROM replay_lag) * 1000,"
                " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication"
            ):
                out.append(
                    (
                        now,
                        name,
                        None if lag_ms is None else float(lag_ms),
                        None if behind is None else float(behind),
                    )
                )
            stop.wait(0.1)


def run_level(
    url: str,
    su_url: str,
    source: TurnSource,
    connections: int,
    duration: float,
    warmup: float,
    variant: Variant | None = None,
) -> dict[str, Any]:
    """Turns back to back on `connections` connections; with a variant, each turn is one
    transaction under its settings (turn()), and the counted turns' and duplicate searches'
    latencies are kept whole (`samples_ms`) so that rounds can be pooled."""
    begin = variant.begin() if variant is not None else None
    load_before = os.getloadavg()[0]
    taken_before = source.next
    conns = [
        psycopg.connect(url, autocommit=True, prepare_threshold=None) for _ in range(connections)
    ]
    records: list[tuple[float, dict[str, float]]] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(connections + 1)
    start_box: list[float] = []

    def worker(conn: psycopg.Connection[Any]) -> None:
        barrier.wait()
        end = start_box[0] + warmup + duration
        mine: list[tuple[float, dict[str, float]]] = []
        while time.monotonic() < end:
            try:
                times = turn(conn, source, begin)
                mine.append((time.monotonic(), times))
            except psycopg.Error as exc:  # counted and shown, never hidden
                with lock:
                    errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                if begin is not None and not conn.closed:
                    conn.execute("ROLLBACK")
        with lock:
            records.extend(mine)

    lag: list[tuple[float, str, float | None, float | None]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_lag, args=(su_url, stop, lag), daemon=True)
    threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    sampler.start()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start_box.append(time.monotonic())
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.monotonic() - start_box[0]
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    sampler.join()
    for c in conns:
        c.close()
    # Turns that ended inside the counted window: those in flight at its end are finished (a
    # turn is never cut) but not counted, so that slow turns cannot stretch the window.
    counted_from = start_box[0] + warmup
    counted_to = counted_from + duration
    kept = [r for t, r in records if counted_from <= t <= counted_to]
    window = [s for s in lag if counted_from <= s[0] <= counted_to]
    per_replica: dict[str, dict[str, Any]] = {}
    for name in sorted({s[1] for s in window}):
        ms = [s[2] for s in window if s[1] == name and s[2] is not None]
        by = [s[3] for s in window if s[1] == name and s[3] is not None]
        per_replica[name] = {
            "samples": len([s for s in window if s[1] == name]),
            "replay_lag_ms": latency_summary(ms),
            "bytes": latency_summary(by),
        }
    worst_ms = [max(v) for v in _by_time(window, 2).values() if v]
    worst_bytes = [max(v) for v in _by_time(window, 3).values() if v]
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    ops = [*OPS, *(["txn"] if begin is not None else [])]
    level: dict[str, Any] = {
        "connections": connections,
        "duration_s": duration,
        "turns": len(kept),
        "turns_per_s": round(len(kept) / duration, 1),
        "turn_ms": latency_summary([r["turn"] for r in kept]),
        "ops_ms": {op: latency_summary([r[op] for r in kept if op in r]) for op in ops},
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "replay_lag_ms": _pcts(worst_ms),
        "replay_lag_bytes": _pcts(worst_bytes),
        "replicas": per_replica,
        # The client's own CPU, in cores: it shares the machine with the server it measures.
        "client_cpu": round(cpu / wall, 2),
        # The machine's 1-minute load average as the level started and ended.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        # Rows the turns had inserted before this level (the data grows as a run goes on).
        "turns_inserted_before": taken_before,
    }
    if variant is not None:
        level["variant"] = variant.name
        level["samples_ms"] = {k: [round(r[k], 2) for r in kept] for k in ("turn", "dedupe")}
    return level


def _by_time(
    samples: Sequence[tuple[float, str, float | None, float | None]], field: int
) -> dict[float, list[float]]:
    """The samples of one sampling instant together, so that each instant counts its worst
    replica once."""
    grouped: dict[float, list[float]] = {}
    for s in samples:
        value = s[field]
        grouped.setdefault(s[0], [])
        if value is not None:
            grouped[s[0]].append(value)  # type: ignore[arg-type]
    return grouped


def _pcts(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"samples": 0, "p50": None, "p95": None}
    return {
        "samples": len(values),
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "max": round(max(values), 1),
    }


# ---------------------------------------------------------------------------------------------


def stack_values(config: Path) -> dict[str, Any]:
    """The stack file's settings with this benchmark's own ports and subnet."""
    values = config_from_yaml_document(yaml.safe_load(config.read_text()), config.name)
    values.pop("network", None)
    values.setdefault("postgres", {"parameters": {}})
    values.setdefault("resources", {})
    values["network"] = {"subnet": SUBNET}
    return values


def measure(stack: DeployedStack, args: argparse.Namespace, result: dict[str, Any]) -> None:
    conns = stack.connections
    agent_url = conns["agentPooler"]
    dbname = psycopg.conninfo.conninfo_to_dict(agent_url)["dbname"]
    su_url = psycopg.conninfo.make_conninfo(conns["superuser"], dbname=dbname)
    progress(f"making {args.memories:,} memories")
    data = make_dataset(args.memories, TURN_POOL, ROOMS, AGENTS, args.seed)
    with psycopg.connect(su_url, autocommit=True) as su:
        register_vector(su)
        result["postgresql"] = su.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        result["pgvector"] = su.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()[0]  # type: ignore[index]
        su.execute("SELECT '[1]'::vector")  # loads pgvector, so that its settings are listed
        result["server_settings"] = dict(
            su.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN"
                " ('shared_buffers', 'maintenance_work_mem', 'work_mem', 'effective_cache_size',"
                " 'max_parallel_workers_per_gather', 'max_parallel_maintenance_workers', 'jit',"
                " 'synchronous_commit', 'synchronous_standby_names', 'hnsw.ef_search',"
                " 'hnsw.iterative_scan', 'hnsw.max_scan_tuples', 'hnsw.scan_mem_multiplier')"
            ).fetchall()
        )
        earlier = earlier_load(su, args.memories, args.seed) if args.reuse else None
        if earlier is None:
            progress("loading")
            loaded = load(su, data, args.seed)
        else:
            # Rows that earlier runs' turns inserted stay: they are counted here.
            added = su.execute(
                "SELECT count(*) FROM memories WHERE content->>'text' = 'a turn'"
            ).fetchone()
            loaded = {**earlier, "reused": True, "turn_rows_from_earlier_runs": added[0]}  # type: ignore[index]
        progress(f"loaded: {loaded}")
        caught_up = wait_for_replicas(su, stack.settings.replicas)
        progress(f"replicas replayed the load in {caught_up:.1f} s")
        sizes = dict(
            su.execute(
                "SELECT roomsize, count(*) FROM (SELECT count(*) AS roomsize FROM memories"
                " WHERE type = 'messages' GROUP BY \"roomId\") s GROUP BY 1"
            ).fetchall()
        )
    room_sizes = sorted(k for k, v in sizes.items() for _ in range(v))
    result["data"] = {
        "memories": args.memories,
        "dims": DIMS,
        "topics": TOPICS,
        "rooms": ROOMS,
        "agents": AGENTS,
        "users": USERS,
        "chatter": CHATTER,
        "messages_per_room": {
            "min": room_sizes[0],
            "median": room_sizes[len(room_sizes) // 2],
            "max": room_sizes[-1],
        },
        "replicas_replayed_load_s": round(caught_up, 1),
        **loaded,
    }
    variants: list[Variant] = args.variant
    if variants:
        result["variants"] = {
            "order": [v.name for v in variants],
            "settings": {v.name: v.describe() for v in variants},
            "rounds": args.rounds,
        }
    progress("ef_search curve")
    result["ef_search"] = ef_search_curve(
        agent_url, data, args.ef_search, args.queries, args.seed, variants
    )
    progress("exact scan")
    result["exact_scan"] = exact_scan(agent_url, data, EXACT_QUERIES, args.seed)
    source = TurnSource(data, args.seed)
    if variants:
        # The same turn's reads under every variant.
        pick = source.take()[:2]
        plans = {v.name: turn_plans(agent_url, source, v, pick) for v in variants}
        result["turn_plans"] = plans[variants[0].name]
        result["variants"]["turn_plans"] = plans
        if args.agreement_queries:
            progress(f"agreement with {variants[0].name} on {args.agreement_queries} queries")
            result["agreement"] = reference_agreement(
                agent_url, data, variants, args.agreement_queries, args.seed
            )
        progress("duplicate-search probe in the busiest room")
        result["dedupe_probe"] = dedupe_probe(
            agent_url, su_url, data, variants, args.probe_queries, args.seed
        )
    else:
        result["turn_plans"] = turn_plans(agent_url, source)
    progress(f"turn plans: {result['turn_plans']}")
    result["levels"] = []
    for r in range(args.rounds if variants else 1):
        runs: list[Variant | None] = [*round_order(variants, r)] or [None]
        for variant in runs:
            for n in args.connections:
                name = f" {variant.name}, round {r + 1}" if variant else ""
                progress(f"{n} connections{name} for {args.warmup + args.duration:.0f} s")
                level = run_level(agent_url, su_url, source, n, args.duration, args.warmup, variant)
                if variant is not None:
                    level["round"] = r + 1
                progress(
                    f"{n}{name}: {level['turns_per_s']} turns/s, p95 "
                    f"{level['turn_ms'].get('p95')} ms, dedupe p95 "
                    f"{level['ops_ms']['dedupe'].get('p95')} ms, lag p95 "
                    f"{level['replay_lag_ms'].get('p95')} ms, errors {level['errors']}"
                )
                result["levels"].append(level)
    result["turns_pool"] = {"size": source.size, "used": source.next}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--connections", type=_ints, default=[1, 4, 16, 64])
    parser.add_argument("--duration", type=float, default=60, help="seconds counted per level")
    parser.add_argument("--warmup", type=float, default=5, help="seconds not counted per level")
    parser.add_argument(
        "--ef-search", type=_ints, default=[20, 40, 60, 80, 100, 150, 200, 300, 400]
    )
    parser.add_argument("--queries", type=int, default=200, help="queries per curve point")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--config", type=Path, default=ROOT / "Pulumi.dev.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "agent")
    parser.add_argument("--label", default="", help="printed at the top of the results")
    parser.add_argument(
        "--variant",
        type=Variant.parse,
        action="append",
        default=[],
        help="NAME[:setting=value,...]: server settings to compare, each applied with SET LOCAL "
        "to the curve's queries and the turns (one transaction each); repeat for each, the "
        "first is the reference. Levels then run --rounds times, the variants interleaved",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of levels with --variant")
    parser.add_argument(
        "--probe-queries",
        type=int,
        default=30,
        help="with --variant: duplicate searches per kind in the busiest room, per variant",
    )
    parser.add_argument(
        "--agreement-queries",
        type=int,
        default=1000,
        help="with --variant: searches per shape whose rows each variant is compared with the "
        "first variant's (0: none)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument(
        "--state",
        type=Path,
        help="keep the stack's state (certificates, outputs) in this folder and leave the stack "
        "running, for --reuse",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --state: bring up the stack that folder describes without removing it first, "
        "and keep its data when it holds this --memories and --seed's load",
    )
    args = parser.parse_args(argv)

    values = stack_values(args.config)
    result: dict[str, Any] = {
        "label": args.label,
        "command": " ".join(["python", "bench/agent_bench.py", *(argv or sys.argv[1:])]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "engine": engine_description(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_start": [round(x, 2) for x in os.getloadavg()],
        },
        "targets": TARGETS,
    }
    if args.reuse and args.state is None:
        parser.error("--reuse needs --state")
    if len({v.name for v in args.variant}) != len(args.variant):
        parser.error("each --variant needs its own name")
    with contextlib.ExitStack() as scope:
        if args.state is None:
            folder = Path(scope.enter_context(tempfile.TemporaryDirectory(prefix="elizadb-p12b-")))
        else:
            folder = args.state.resolve()
            folder.mkdir(parents=True, exist_ok=True)
        keep = args.keep or args.state is not None
        stack = scope.enter_context(
            deployed_stack(folder, STACK, PORT_BASE, keep=keep, reuse=args.reuse, **values)
        )
        s = stack.settings
        result["stack"] = {
            "config": args.config.name,
            "replicas": s.replicas,
            "memory": s.resources.memory,
            "pool_size": s.pooler.pool_size,
            "pool_mode": s.pooler.pool_mode,
        }
        measure(stack, args, result)
    result["machine"]["load_end"] = [round(x, 2) for x in os.getloadavg()]
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    write(result, args.out)


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "agent.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "agent.md").write_text(render_markdown(result))
    if "variants" in result:
        (out / "agent-variants.svg").write_text(variants_svg(result))
    else:
        (out / "agent-load.svg").write_text(load_svg(result))
    (out / "agent-ef-search.svg").write_text(ef_search_svg(result))
    print(render_markdown(result))


def render_again(out: Path) -> None:
    """The markdown and plots again from a committed agent.json."""
    write(json.loads((out / "agent.json").read_text()), out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--render"]:
        render_again(Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "bench/results/agent")
    else:
        main()
