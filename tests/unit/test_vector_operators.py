"""elizadb:vector.operators: validated with key, value and what is allowed; rendered into the
job's vector_indexes.sql (build concurrently what is configured, drop what is not, rebuild an
INVALID leftover); declared as an upload of the job and a `vectorOperators` output; read by
verify, with outputs of older stacks meaning both operators."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from elizadb.local.capture import declare
from elizadb.local.state import StateFile
from infra.errors import ConfigError
from infra.render.bootstrap import VECTOR_INDEXES, VECTOR_INDEXES_SQL, render_vector_indexes_sql
from infra.settings import StackSettings, load_settings
from tests.unit.test_verify_outputs import sample_outputs
from verify.errors import OutputsError
from verify.outputs import load_outputs


def _settings(**values: Any) -> StackSettings:
    return load_settings("dev", values, "Pulumi.dev.yaml")


def _problems(**values: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _settings(**values)
    return caught.value.problems


# ---- validation -------------------------------------------------------------------------------
def test_both_operators_by_default_as_the_guide_and_the_adapter_need() -> None:
    assert _settings().vector_operators == ("cosine", "l2")


def test_a_subset_is_kept_in_a_fixed_order() -> None:
    assert _settings(vector={"operators": ["l2"]}).vector_operators == ("l2",)
    assert _settings(vector={"operators": ["l2", "cosine"]}).vector_operators == ("cosine", "l2")


def test_an_empty_list_is_refused_with_the_reason() -> None:
    [problem] = _problems(vector={"operators": []})
    assert problem.startswith("elizadb:vector.operators = []: ")
    assert "every search would read every embedding" in problem
    assert "cosine, l2" in problem


def test_an_unknown_operator_is_refused_naming_key_value_and_what_is_allowed() -> None:
    [problem] = _problems(vector={"operators": ["l2", "ip"]})
    assert problem.startswith("elizadb:vector.operators = ['l2', 'ip']: 'ip' is not an operator")
    assert "use cosine, l2" in problem


def test_an_operator_listed_twice_is_refused() -> None:
    [problem] = _problems(vector={"operators": ["l2", "l2"]})
    assert "lists an operator twice" in problem


def test_eliza1_stacks_build_no_vector_index_and_refuse_the_key() -> None:
    assert _settings(schema={"profile": "eliza-1"}).vector_operators == ()
    [problem] = _problems(schema={"profile": "eliza-1"}, vector={"operators": ["l2"]})
    assert problem.startswith("elizadb:vector.operators = ['l2']: eliza-1 stacks build no")
    assert "remove the key" in problem


def test_the_memory_fit_counts_only_the_configured_indexes() -> None:
    # 100k x 1536 vectors: an index of about 0.8 GB each; two do not fit a 1200 MB cache, one does.
    values: dict[str, Any] = {
        "resources": {"memory": "4g", "shmSize": "2g"},
        "postgres": {"parameters": {"effective_cache_size": "1200MB"}},
        "vector": {"expectedMemories": 100_000},
    }
    problems = _problems(**values)
    assert any("2 HNSW index(es) (cosine, l2)" in p for p in problems), problems
    values["vector"]["operators"] = ["l2"]
    assert _settings(**values).vector_operators == ("l2",)


# ---- the rendered job step --------------------------------------------------------------------
def _steps(sql: str, index: str) -> str:
    """The lines of the script that concern one index (they name it)."""
    return "\n".join(line for line in sql.splitlines() if index in line)


def test_the_configured_index_is_built_concurrently_and_an_invalid_one_dropped_first() -> None:
    sql = render_vector_indexes_sql(_settings(vector={"operators": ["l2"]}))
    assert sql is not None
    l2 = _steps(sql, "idx_memories_embedding_l2")
    assert (
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS "idx_memories_embedding_l2" ON public.memories'
        " USING hnsw (embedding public.vector_l2_ops);"
    ) in l2
    assert "NOT indisvalid" in l2 and "pg_stat_progress_create_index" in l2
    # The INVALID leftover goes before the build, or IF NOT EXISTS would keep it.
    assert l2.index('DROP INDEX CONCURRENTLY IF EXISTS public."idx_memories_embedding_l2"') < (
        l2.index("CREATE INDEX CONCURRENTLY")
    )
    cosine = "\n".join(
        line
        for line in sql.splitlines()
        if "idx_memories_embedding " in line or '"idx_memories_embedding"' in line
    )
    assert 'DROP INDEX CONCURRENTLY IF EXISTS public."idx_memories_embedding";' in cosine
    assert "CREATE INDEX" not in cosine
    assert "not in vector.operators: dropping it" in cosine


def test_every_step_says_what_it_did_and_nothing_runs_in_a_transaction() -> None:
    sql = render_vector_indexes_sql(_settings())
    assert sql is not None
    assert not re.search(r"\bBEGIN\b|START TRANSACTION", sql)
    assert "\\set ON_ERROR_STOP on" in sql
    for statement in re.findall(r"^(?:CREATE|DROP) INDEX.*$", sql, flags=re.M):
        assert "CONCURRENTLY" in statement
    for index in VECTOR_INDEXES:
        said = _steps(sql, index.name)
        for outcome in ("present and valid", "built in", "INVALID", "missing: building"):
            assert outcome in said, (index.name, outcome)
    assert sql == render_vector_indexes_sql(_settings()), "the renderer must be deterministic"


def test_the_index_definitions_are_the_migrations() -> None:
    migration = (Path(__file__).resolve().parents[2] / "sql/0005_indexes.sql").read_text()
    for index in VECTOR_INDEXES:
        assert (
            f"CREATE INDEX IF NOT EXISTS {index.name}\n"
            f'    ON public.memories USING hnsw ("embedding" public.{index.opclass});'
        ) in migration


def test_eliza1_stacks_get_no_vector_index_step() -> None:
    assert render_vector_indexes_sql(_settings(schema={"profile": "eliza-1"})) is None


# ---- the program -------------------------------------------------------------------------------
def _job_uploads(tmp_path: Path, **values: Any) -> tuple[dict[str, str], dict[str, Any]]:
    settings = _settings(**values)
    declared = declare(settings, StateFile(settings.stack, tmp_path))
    job = next(
        c for c in declared.of_type("docker:index/container:Container") if c.name == "bootstrap"
    )
    uploads = {u["file"]: u.get("content", "") for u in job.inputs["uploads"]}
    return uploads, declared.outputs


def test_the_job_carries_the_step_and_the_outputs_name_the_operators(tmp_path: Path) -> None:
    uploads, outputs = _job_uploads(tmp_path, vector={"operators": ["l2"]})
    assert (
        'DROP INDEX CONCURRENTLY IF EXISTS public."idx_memories_embedding";'
        in (uploads[VECTOR_INDEXES_SQL])
    )
    assert outputs["vectorOperators"] == ["l2"]
    uploads, outputs = _job_uploads(tmp_path / "1", schema={"profile": "eliza-1"})
    assert VECTOR_INDEXES_SQL not in uploads
    assert outputs["vectorOperators"] == []


# ---- verify's side ------------------------------------------------------------------------------
def test_outputs_without_the_key_mean_both_operators() -> None:
    raw = sample_outputs()
    raw.pop("vectorOperators", None)
    assert load_outputs(raw).vector_operators == ("cosine", "l2")
    raw["vectorOperators"] = ["l2"]
    assert load_outputs(raw).vector_operators == ("l2",)


def test_outputs_with_an_unknown_operator_are_refused() -> None:
    raw = copy.deepcopy(sample_outputs())
    raw["vectorOperators"] = ["l2", "hamming"]
    with pytest.raises(OutputsError, match=r"vectorOperators: \['l2', 'hamming'\]"):
        load_outputs(raw)
