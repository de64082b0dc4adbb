"""PostgreSQL's memory and parallelism are derived from the node's resources, the user's
parameters win, and a stack whose vector indexes cannot fit its memory is refused with the
arithmetic and what to raise."""

from __future__ import annotations

from pathlib import Path

import pytest

from elizadb.config import load_stack
from elizadb.errors import ConfigError
from infra.pg_parameters import memory_mb, parameter_problems
from infra.render.postgres import render_postgresql_conf
from infra.settings import load_settings
from infra.sizing import Resources, VectorNeed, derived_parameters, hnsw_index_mb
from infra.topology import topology

ROOT = Path(__file__).resolve().parents[2]


def _refused(values: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as refused:
        load_settings("dev", values, "Pulumi.dev.yaml")
    assert refused.value.exit_code == 2
    return str(refused.value)


@pytest.mark.parametrize(
    ("memory_mb_", "shared", "cache", "maintenance"),
    [(512, 128, 384, 128), (1024, 256, 768, 256), (4096, 1024, 3072, 1024)],
)
def test_memory_follows_the_container(
    memory_mb_: int, shared: int, cache: int, maintenance: int
) -> None:
    params = derived_parameters(Resources(memory_mb_, 2), max_connections=100)
    assert memory_mb("shared_buffers", params["shared_buffers"]) == shared
    assert memory_mb("effective_cache_size", params["effective_cache_size"]) == cache
    assert memory_mb("maintenance_work_mem", params["maintenance_work_mem"]) == maintenance
    # Every sort of every connection together stays within what shared_buffers leaves.
    work_mem = memory_mb("work_mem", params["work_mem"])
    assert work_mem >= 4
    assert work_mem <= max(4, (memory_mb_ - shared) / 100)


def test_parallelism_follows_the_cpus_and_the_rest_is_fixed() -> None:
    two = derived_parameters(Resources(1024, 2), 100)
    sixteen = derived_parameters(Resources(1024, 16), 100)
    assert (two["max_parallel_workers"], two["max_parallel_workers_per_gather"]) == ("2", "1")
    assert two["max_parallel_maintenance_workers"] == "1"
    assert two["max_worker_processes"] == "8"  # PostgreSQL's default stays the floor
    assert sixteen["max_worker_processes"] == "16" and sixteen["max_parallel_workers"] == "16"
    assert sixteen["max_parallel_workers_per_gather"] == "4"  # capped
    assert (two["jit"], two["random_page_cost"], two["effective_io_concurrency"]) == (
        "off",
        "1.1",
        "200",
    )
    # More connections leave less work_mem each.
    few = derived_parameters(Resources(8192, 2), 20)["work_mem"]
    many = derived_parameters(Resources(8192, 2), 400)["work_mem"]
    assert memory_mb("work_mem", few) > memory_mb("work_mem", many)


@pytest.mark.parametrize("memory", ["320m", "1g", "4g", "64g"])
@pytest.mark.parametrize("cpus", [1, 2, 3.5, 64])
def test_every_derived_value_is_one_postgresql_accepts(memory: str, cpus: float) -> None:
    resources = {"memory": memory, "cpus": cpus, "shmSize": memory}
    settings = load_settings("dev", {"resources": resources}, "t")
    assert parameter_problems(settings.pg_parameters()) == {}


def test_a_container_too_small_for_any_server_is_refused_not_derived_into_nonsense() -> None:
    message = _refused({"resources": {"memory": "100m"}})
    assert "more than the container's memory (100MB)" in message


def test_the_rendered_configuration_carries_the_derived_values_and_user_values_win() -> None:
    derived = load_settings("dev", {"resources": {"memory": "4g", "shmSize": "2g"}}, "t")
    conf = render_postgresql_conf(derived, topology(derived), topology(derived).nodes[0])
    assert "shared_buffers = '1024MB'" in conf and "jit = off" in conf
    user = load_settings(
        "dev",
        {
            "resources": {"memory": "4g", "shmSize": "2g"},
            "postgres": {"parameters": {"shared_buffers": "512MB", "jit": True}},
        },
        "t",
    )
    params = user.pg_parameters()
    assert params["shared_buffers"] == "512MB" and params["jit"] == "on"
    assert params["effective_cache_size"] == "3072MB"  # the rest is still derived
    assert user.pg_parameters() == user.pg_parameters()  # deterministic


def test_cpus_is_validated() -> None:
    message = _refused({"resources": {"cpus": 0}})
    assert "elizadb:resources.cpus = 0: Input should be greater than or equal to 1" in message
    assert "elizadb:resources.cpus = 'many'" in _refused({"resources": {"cpus": "many"}})


def test_the_index_size_is_pgvectors_page_layout() -> None:
    # One 1536-dimension vector per 8 kB page: the 0.8 GB measured for 100k (trip-wires).
    assert hnsw_index_mb(100_000, 1536) == pytest.approx(781.25)
    # Small vectors share pages.
    assert hnsw_index_mb(100_000, 384) < hnsw_index_mb(100_000, 1536) / 3
    assert VectorNeed(100_000, 1536).indexes_mb == pytest.approx(1562.5)


def test_indexes_the_memory_cannot_cache_or_build_are_refused_with_the_arithmetic() -> None:
    message = _refused({"vector": {"expectedMemories": 100_000}})
    assert "invalid configuration in Pulumi.dev.yaml (2 problems)" in message
    assert (
        "elizadb:vector.expectedMemories = 100000: 2 HNSW index(es) (cosine, l2) over 100000 × "
        "1536-dimension vectors take about 2 × 781MB = 1562MB, more than the 768MB that can "
        "cache them" in message
    )
    assert "raise resources.memory to at least 2304m" in message
    assert "holds a graph of about 781MB, more than maintenance_work_mem (256MB)" in message
    assert "raise resources.memory to at least 3328m" in message
    assert "maintenance_work_mem to at least 782MB" in message


def test_every_fit_problem_is_reported_with_the_others() -> None:
    message = _refused(
        {
            "vector": {"expectedMemories": 100_000},
            "resources": {"memory": "4g", "shmSize": "512m"},
            "replicas": 99,
        }
    )
    assert "elizadb:replicas = 99" in message
    assert "elizadb:resources.shmSize = '512m': a parallel index build allocates" in message
    assert "raise resources.shmSize to at least 1280m" in message
    assert "expectedMemories" not in message  # 4g holds both indexes and the build


def test_fewer_memories_or_smaller_vectors_fit_a_small_node() -> None:
    load_settings("dev", {"vector": {"expectedMemories": 20_000}}, "t")
    load_settings("dev", {"vector": {"expectedMemories": 100_000}, "embeddingDimensions": 384}, "t")
    # A user's maintenance_work_mem large enough for the graph is what the check reads.
    load_settings(
        "dev",
        {
            "vector": {"expectedMemories": 60_000},
            "postgres": {"parameters": {"maintenance_work_mem": "600MB"}},
            "resources": {"memory": "2g", "shmSize": "1g"},
        },
        "t",
    )


def test_the_dev_stack_holds_100k_memories() -> None:
    dev = load_stack("dev", ROOT)
    assert dev.vector.expected_memories == 100_000
    params = dev.pg_parameters()
    assert memory_mb("maintenance_work_mem", params["maintenance_work_mem"]) >= hnsw_index_mb(
        100_000, 1536
    )
    assert memory_mb("effective_cache_size", params["effective_cache_size"]) >= 2 * hnsw_index_mb(
        100_000, 1536
    )
