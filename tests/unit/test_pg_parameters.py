"""`postgres.parameters` is checked against the image's PostgreSQL 17 (its own description of
its parameters, committed): what `validate` accepts, a node can run."""

from __future__ import annotations

from pathlib import Path

import pytest

from elizadb.config import load_stack
from elizadb.errors import ConfigError
from infra.pg_parameters import memory_mb, parameter_problems, server_parameters, server_version
from infra.settings import DEFAULT_PG_PARAMETERS, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _problems(parameters: dict[str, object], **values: object) -> str:
    with pytest.raises(ConfigError) as refused:
        load_settings("dev", {"postgres": {"parameters": parameters}, **values}, "Pulumi.dev.yaml")
    assert refused.value.exit_code == 2
    return str(refused.value)


def test_the_table_is_the_image_servers() -> None:
    assert server_version().startswith("17.")
    table = server_parameters()
    assert len(table) > 350
    assert table["shared_buffers"].unit == "8kB" and table["shared_buffers"].context == "postmaster"
    assert "hnsw.ef_search" in table  # pgvector's, loaded when the table was made


def test_an_unknown_parameter_is_refused_with_a_suggestion() -> None:
    message = _problems({"no_such_param": 1, "shared_bufers": "1GB"})
    assert (
        "elizadb:postgres.parameters.no_such_param = 1: is not a parameter of PostgreSQL 17"
        in message
    )
    assert "did you mean shared_buffers" in message


def test_a_size_beyond_what_postgres_or_the_container_allows_is_refused() -> None:
    message = _problems({"shared_buffers": "8TB"})
    assert "shared_buffers = '8TB': is out of range" in message
    assert "more than the container's memory (1024MB)" in message
    fits_not = _problems({"shared_buffers": "900MB"})
    assert "raise resources.memory" in fits_not
    load_settings(
        "dev",
        {"postgres": {"parameters": {"shared_buffers": "900MB"}}, "resources": {"memory": "2g"}},
        "test",
    )


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("work_mem", "8 parsecs", "unit 'parsecs' is not one of B, kB, MB, GB, TB"),
        ("checkpoint_timeout", "5GB", "unit 'GB' is not one of us, ms, s, min, h, d"),
        ("max_connections", 1_000_000, "out of range: PostgreSQL allows 1 to 262143"),
        ("log_statement", "everything", "must be one of none, ddl, mod, all"),
        ("log_connections", "maybe", "must be a boolean"),
        ("block_size", 4096, "cannot be set"),
        ("hnsw.no_such", 1, "is not a parameter"),
        ("random_page_cost", "cheap", "a number is expected"),
    ],
)
def test_types_units_ranges_and_enums(name: str, value: object, expected: str) -> None:
    assert expected in parameter_problems({name: value})[name]  # type: ignore[dict-item]


def test_valid_values_pass() -> None:
    assert (
        parameter_problems(
            {
                "work_mem": "16MB",
                "checkpoint_timeout": "10min",
                "max_connections": 200,
                "log_statement": "MOD",
                "log_connections": True,
                "random_page_cost": 1.1,
                "hnsw.ef_search": 100,
                "myapp.tenant": "x",
                "wal_retrieve_retry_interval": "500ms",
            }
        )
        == {}
    )
    assert memory_mb("shared_buffers", 16384) == 128  # plain numbers are 8kB pages


def test_the_defaults_and_the_shipped_stacks_pass() -> None:
    assert parameter_problems(DEFAULT_PG_PARAMETERS) == {}
    for stack in ("dev", "staging", "prod"):
        load_stack(stack, ROOT)
