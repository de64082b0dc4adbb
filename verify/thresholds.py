"""Every number a check compares against, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Thresholds:
    # Connections: a node that does not answer in connect_timeout_s counts as unreachable.
    connect_timeout_s: int = 3
    statement_timeout_ms: int = 20_000
    lock_timeout_ms: int = 5_000  # a check waits this long for a lock, then fails
    # health
    select1_samples: int = 5
    select1_max_ms: float = 50.0  # median SELECT 1 round trip per node
    connections_max_used: float = 0.80  # fraction of the client connection slots in use
    disk_min_free: float = 0.10  # fraction of the data volume that must stay free
    # replication
    lag_max_bytes: int = 64 * 1024 * 1024
    lag_max_seconds: float = 10.0
    # ha: one request to a Patroni REST API. A member answers from memory in milliseconds; one
    # whose etcd read fails keeps the request for its read timeout (about 6 s) and then drops it.
    patroni_api_timeout_s: float = 5.0
    # tls
    cert_min_days: int = 30
    # pooler: a client may wait briefly under load; a queue that stays is a problem.
    pooler_max_waiting_clients: int = 10
    pooler_max_wait_seconds: float = 1.0
    # A session idle this long while holding an advisory lock has lost it (a lock taken through
    # the transaction pool and released on another server connection); a migration between its
    # statements is idle for milliseconds.
    advisory_lock_idle_seconds: float = 60.0
    # vector: small enough to keep the suite well under 30 s, large enough that the HNSW graph
    # has several layers.
    vector_rows: int = 2000
    vector_queries: int = 40
    vector_k: int = 10
    recall_min: float = 0.95
    vector_p95_max_ms: float = 50.0
    # Above this size of memories (table and indexes), the probe's dead rows are left to
    # autovacuum instead of being vacuumed right away (see verify/checks/vector.py).
    probe_vacuum_max_mb: int = 512

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"{f.name} = {value!r}: must be a number")
            elif value < 0:
                problems.append(f"{f.name} = {value!r}: must not be negative")
        for name in ("connections_max_used", "disk_min_free", "recall_min"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not 0 <= value <= 1:
                problems.append(f"{name} = {value!r}: must be a fraction from 0 to 1")
        if self.vector_rows < self.vector_k or self.vector_queries < 1:
            problems.append("vector_rows must be at least vector_k, and vector_queries at least 1")
        if problems:
            raise ValueError("invalid thresholds: " + "; ".join(problems))
