"""PostgreSQL memory and parallelism parameters derived from a node's resources, and what a
stack's vector indexes need of them. Pure and deterministic: the same memory and CPUs always give
the same parameters, and nothing here reads the host.

The rules follow pgtune's for a mixed workload, with two changes for agent memories: the HNSW
build keeps its whole graph in maintenance_work_mem (a build whose graph spills is several times
slower), and JIT is off (its compile time exceeds the run time of the short queries an agent
sends). Storage is assumed to be SSD, as on every Docker host this kit targets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# What a node needs besides shared_buffers and maintenance_work_mem: the server's processes and
# the pooler's connections (the same figure the parameter check uses).
from infra.pg_parameters import HEADROOM_MB, memory_mb

# The fractions of the container's memory, stated once. The floors keep a tiny container's
# values valid for PostgreSQL (whether it fits at all is pg_parameters.memory_problem's call).
SHARED_BUFFERS_FRACTION = 0.25
CACHE_FRACTION = 0.75
MAINTENANCE_FRACTION = 0.25
MIN_SHARED_BUFFERS_MB = 16
MIN_MAINTENANCE_MB = 16
MIN_WORK_MEM_MB = 4
# pgtune's divisor: each connection may run about three sorts or hashes at once.
SORTS_PER_CONNECTION = 3
# Background workers besides parallel query (autovacuum launcher, logical replication, pgvector's
# parallel build) need slots of their own: PostgreSQL's default is kept as the floor.
MIN_WORKER_PROCESSES = 8
MAX_WORKERS_PER_GATHER = 4

# pgvector's HNSW layout (0.8): one element tuple (the vector: 4 bytes per dimension plus an
# 8-byte header) and one neighbour tuple (2·m item pointers of 6 bytes at level 0) per vector,
# on 8 kB pages; with the defaults m = 16 and 1536 dimensions that is one vector per page.
PAGE_BYTES = 8192
PAGE_USABLE_BYTES = 8192 - 24 - 16  # page header and special space
HNSW_M = 16
TUPLE_OVERHEAD_BYTES = 32

# The migrations build one HNSW index per operator on memories.embedding (sql/0005_indexes.sql).
BUILT_OPERATORS: tuple[str, ...] = ("cosine", "l2")


@dataclass(frozen=True)
class Resources:
    memory_mb: int
    cpus: float


def _mb(value: float) -> str:
    return f"{int(value)}MB"


def derived_parameters(resources: Resources, max_connections: int) -> dict[str, str]:
    """Memory and parallelism parameters for a node with these resources."""
    memory = resources.memory_mb
    shared = max(MIN_SHARED_BUFFERS_MB, memory * SHARED_BUFFERS_FRACTION)
    cpus = max(1, math.floor(resources.cpus))
    per_gather = max(1, min(MAX_WORKERS_PER_GATHER, math.ceil(cpus / 2)))
    work_mem = (memory - shared) / (max_connections * SORTS_PER_CONNECTION) / per_gather
    return {
        "shared_buffers": _mb(shared),
        # What the planner may assume the kernel caches besides shared_buffers: the container's
        # page cache is charged to the same memory limit.
        "effective_cache_size": _mb(memory * CACHE_FRACTION),
        "maintenance_work_mem": _mb(max(MIN_MAINTENANCE_MB, memory * MAINTENANCE_FRACTION)),
        "work_mem": _mb(max(MIN_WORK_MEM_MB, work_mem)),
        "max_worker_processes": str(max(MIN_WORKER_PROCESSES, cpus)),
        "max_parallel_workers": str(cpus),
        "max_parallel_workers_per_gather": str(per_gather),
        "max_parallel_maintenance_workers": str(per_gather),
        "jit": "off",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
    }


def hnsw_index_mb(rows: int, dimensions: int) -> float:
    """The size of one HNSW index over `rows` vectors. The graph an index build holds in
    maintenance_work_mem is about the same (measured: about 0.8 GB for 100k x 1536)."""
    element = 4 * dimensions + 8 + TUPLE_OVERHEAD_BYTES
    neighbours = 2 * HNSW_M * 6 + TUPLE_OVERHEAD_BYTES
    per_page = max(1, PAGE_USABLE_BYTES // (element + neighbours))
    pages = math.ceil(rows / per_page)
    return pages * PAGE_BYTES / 1024 / 1024


@dataclass(frozen=True)
class VectorNeed:
    """What `rows` vectors with one HNSW index per operator ask of a node's memory."""

    rows: int
    dimensions: int
    operators: tuple[str, ...] = BUILT_OPERATORS

    @property
    def index_mb(self) -> float:
        return hnsw_index_mb(self.rows, self.dimensions)

    @property
    def indexes_mb(self) -> float:
        return self.index_mb * len(self.operators)

    def minimum_memory_mb(self) -> int:
        """The least container memory whose derived cache holds every index, in 256 MB steps."""
        needed = max(self.indexes_mb / CACHE_FRACTION, self.indexes_mb + HEADROOM_MB)
        return math.ceil(needed / 256) * 256


def fit_problems(
    need: VectorNeed, parameters: Mapping[str, str], container_mb: int, shm_mb: int
) -> list[tuple[str, str]]:
    """(key, why) for each way the vector indexes do not fit this node; empty when they do."""
    problems: list[tuple[str, str]] = []
    try:
        cache = memory_mb("effective_cache_size", parameters["effective_cache_size"])
        maintenance = memory_mb("maintenance_work_mem", parameters["maintenance_work_mem"])
    except (KeyError, ValueError):
        return problems  # reported as a parameter problem instead
    if maintenance > shm_mb:
        problems.append(
            (
                "resources.shmSize",
                (
                    f"a parallel index build allocates maintenance_work_mem ({maintenance:.0f}MB) in "
                    f'/dev/shm, which is {shm_mb}MB: it would fail with "could not resize shared '
                    f'memory segment"; raise resources.shmSize to at least '
                    f"{_gigabytes(math.ceil(maintenance / 256) * 256 + 256)}"
                ),
            )
        )
    if need.rows == 0 or not need.operators:
        return problems
    cache = min(cache, container_mb - HEADROOM_MB)
    count, each, total = len(need.operators), need.index_mb, need.indexes_mb
    described = f"{need.rows} × {need.dimensions}-dimension vectors"
    if total > cache:
        problems.append(
            (
                "vector.expectedMemories",
                (
                    f"{count} HNSW index(es) ({', '.join(need.operators)}) over {described} take "
                    f"about {count} × {each:.0f}MB = {total:.0f}MB, more than the {cache:.0f}MB "
                    f"that can cache them (effective_cache_size, at most resources.memory "
                    f"{container_mb}MB less {HEADROOM_MB}MB): raise resources.memory to at least "
                    f"{_gigabytes(need.minimum_memory_mb())} or expect fewer memories"
                ),
            )
        )
    if each > maintenance:
        problems.append(
            (
                "vector.expectedMemories",
                (
                    f"building one HNSW index over {described} holds a graph of about {each:.0f}MB, "
                    f"more than maintenance_work_mem ({maintenance:.0f}MB): the build would spill "
                    f"and take several times longer; raise resources.memory to at least "
                    f"{_gigabytes(math.ceil(each / MAINTENANCE_FRACTION / 256) * 256)} "
                    f"(maintenance_work_mem is a quarter of it) or set "
                    f"postgres.parameters.maintenance_work_mem to at least {math.ceil(each)}MB"
                ),
            )
        )
    return problems


def _gigabytes(mb: int) -> str:
    return f"{mb // 1024}g" if mb % 1024 == 0 else f"{mb}m"
