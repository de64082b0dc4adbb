"""Each limit stated once: what `elizadb validate` accepts is what a deploy can deploy, and the
forced PostgreSQL parameters the validator refuses are the ones the renderer sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.errors import ConfigError
from infra.render.postgres import render_postgresql_conf
from infra.settings import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    FORCED_PG_PARAMETERS,
    MAX_EMBEDDING_DIMENSIONS,
    load_settings,
)
from infra.topology import topology

REPO = Path(__file__).resolve().parents[2]

# Forced parameters that postgresql.conf does not carry, and why.
FORCED_ELSEWHERE = {
    "config_file": "the entrypoint's command line (-c config_file=...)",
    "data_directory": "the entrypoint's command line (-D)",
    "ident_file": "left at its default inside the data directory; no ident auth is used",
}


def test_embedding_dimensions_up_to_the_hnsw_limit_are_accepted() -> None:
    assert MAX_EMBEDDING_DIMENSIONS == 2000
    assert load_settings("dev", {}, "Pulumi.dev.yaml").embedding_dimensions == (
        DEFAULT_EMBEDDING_DIMENSIONS
    )
    settings = load_settings("dev", {"embeddingDimensions": 2000}, "Pulumi.dev.yaml")
    assert settings.embedding_dimensions == 2000


@pytest.mark.parametrize("value", [2001, 3072])
def test_embedding_dimensions_over_the_hnsw_limit_are_refused(value: int) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings("dev", {"embeddingDimensions": value}, "Pulumi.dev.yaml")
    [problem] = caught.value.problems
    assert problem.startswith(f"elizadb:embeddingDimensions = {value}: at most 2000"), problem
    assert "HNSW" in problem and "vector" in problem


def test_the_bootstrap_script_takes_its_limits_from_the_rendered_job() -> None:
    script = (REPO / "image" / "migrate.sh").read_text()
    assert "ELIZADB_EMBEDDING_MAX_DIMS" in script
    for literal in ("2000", "1536"):
        assert literal not in script, f"migrate.sh states {literal} itself"
    component = (REPO / "infra" / "components" / "bootstrap.py").read_text()
    assert "ELIZADB_EMBEDDING_MAX_DIMS={MAX_EMBEDDING_DIMENSIONS}" in component
    assert "ELIZADB_EMBEDDING_DIMS={settings.embedding_dimensions}" in component


def _forced_section(conf: str) -> dict[str, str]:
    lines = conf.split("# set by eliza-db\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return dict(line.split(" = ", 1) for line in lines)


@pytest.mark.parametrize(
    "values",
    [{}, {"tls": {"enabled": False}}, {"replicas": 0}, {"replication": {"synchronous": True}}],
)
def test_forced_parameter_names_are_the_rendered_ones(values: dict[str, object]) -> None:
    settings = load_settings("dev", values, "Pulumi.dev.yaml")
    topo = topology(settings)
    for node in topo.nodes:
        forced = _forced_section(render_postgresql_conf(settings, topo, node))
        # Every parameter the renderer forces is refused from the user...
        assert set(forced) <= FORCED_PG_PARAMETERS, set(forced) - FORCED_PG_PARAMETERS
        # ...and every refused one is rendered, or set elsewhere for a stated reason.
        assert FORCED_PG_PARAMETERS - set(forced) == set(FORCED_ELSEWHERE)
        # A user value never reaches the forced section.
        tunables = conf_tunables(render_postgresql_conf(settings, topo, node))
        assert not set(tunables) & FORCED_PG_PARAMETERS


def conf_tunables(conf: str) -> dict[str, str]:
    section = conf.split("elizadb:postgres.parameters\n", 1)[1]
    return dict(line.split(" = ", 1) for line in section.splitlines() if " = " in line)


@pytest.mark.parametrize("name", sorted(FORCED_PG_PARAMETERS))
def test_a_forced_parameter_is_refused(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings("dev", {"postgres": {"parameters": {name: "x"}}}, "Pulumi.dev.yaml")
    assert any(f"postgres.parameters.{name}" in p for p in caught.value.problems)
