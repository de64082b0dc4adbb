"""verify's warn status: a check notes a warning in its Findings; the run reports it as WARN
with its reason and advice, counts it apart, lists it in the JSON and the JUnit XML, and still
exits 0. The warnings themselves: HNSW indexes beyond effective_cache_size or
maintenance_work_mem, and a pooler whose clients queue within the thresholds."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast
from xml.etree import ElementTree as ET

from verify.checks import ALL_CHECKS
from verify.checks.pooler import pool_problems, pool_warnings
from verify.checks.vector import IndexMemory, check_index_build, check_index_cache
from verify.context import Context
from verify.model import Findings
from verify.report import exit_code, render_json, render_junit, render_table, totals
from verify.suite import CheckResult, warning_checks
from verify.thresholds import Thresholds

MB = 2**20
WARN = CheckResult(
    "vector.index_cache",
    "vector",
    "warn",
    "the HNSW indexes take 48 MB",
    "the HNSW indexes take 48 MB (public.a 24 MB, public.b 24 MB)",
    "raise elizadb:resources.memory",
    0.01,
)
PASS = CheckResult("schema.tables", "schema", "pass", "9 tables present", seconds=0.02)


def test_a_warning_makes_a_warn_outcome_with_its_advice() -> None:
    seen = Findings()
    assert seen.outcome("fine", "the fix").status == "pass"
    seen.warn("first")
    seen.warn("second")
    outcome = seen.outcome("fine", "the fix", "the advice")
    assert (outcome.status, outcome.summary) == ("warn", "first (+1 more)")
    assert outcome.reason == "first\nsecond" and outcome.fix == "the advice"
    assert Findings(warnings=["w"]).outcome("fine", "the fix").fix == "the fix"


def test_a_problem_outweighs_a_warning_which_stays_in_the_reason() -> None:
    seen = Findings()
    seen.warn("queueing")
    seen.problem("broken")
    outcome = seen.outcome("fine", "the fix")
    assert outcome.status == "fail"
    assert outcome.reason == "broken\nwarning: queueing"


def test_warnings_do_not_fail_the_run_and_are_shown_apart() -> None:
    assert exit_code([PASS, WARN]) == 0
    assert totals([PASS, WARN])["warned"] == 1
    lines = render_table([PASS, WARN]).splitlines()
    assert lines[2].startswith("WARN    vector.index_cache ")
    assert lines[3].strip() == "- the HNSW indexes take 48 MB (public.a 24 MB, public.b 24 MB)"
    assert lines[4].strip() == "fix: raise elizadb:resources.memory"
    assert lines[-1] == "1 passed, 1 warned, 0 failed, 0 skipped in 0.0 s"
    report = json.loads(render_json([PASS, WARN]))
    assert report["warnings"] == ["vector.index_cache"] and report["exitCode"] == 0
    assert report["results"][1]["status"] == "warn"
    suite = ET.fromstring(render_junit([PASS, WARN]).split("\n", 1)[1])
    case = next(c for c in suite.iter("testcase") if c.get("name") == "vector.index_cache")
    assert case.find("failure") is None and case.find("skipped") is None
    assert case.find("properties/property[@name='status']").get("value") == "warn"  # type: ignore[union-attr]
    assert (case.findtext("system-out") or "").startswith("WARNING: the HNSW indexes take")


def test_the_checks_that_warn_are_the_ones_status_runs() -> None:
    assert warning_checks() == ["pooler.pools", "vector.index_cache", "vector.index_build"]
    assert all(not c.writes for c in ALL_CHECKS if c.id in warning_checks())


# ---- the pooler -------------------------------------------------------------------------------
def _pool(waiting: int, maxwait: int, maxwait_us: int = 0, database: str = "eliza") -> dict:
    return {
        "database": database,
        "user": "eliza_agent",
        "cl_active": 2,
        "cl_waiting": waiting,
        "sv_active": 2,
        "maxwait": maxwait,
        "maxwait_us": maxwait_us,
    }


def test_a_pool_that_queues_within_the_thresholds_warns_beyond_them_fails() -> None:
    t = Thresholds()
    assert pool_warnings([_pool(0, 0)], t) == []
    assert pool_warnings([_pool(1, 0, 20_000)], t) == [
        (
            "pool eliza/eliza_agent: 1 client(s) waiting, the oldest for 20 ms (2 active, 2 "
            "server connections busy; thresholds 10 clients, 1 s)"
        )
    ]
    # maxwait above 0 is a queue too, whatever cl_waiting said a moment earlier.
    assert len(pool_warnings([_pool(0, 0, 300_000)], t)) == 1
    assert pool_warnings([_pool(11, 0)], t) == [] and len(pool_problems([_pool(11, 0)], t)) == 1
    assert pool_warnings([_pool(5, 9, database="pgbouncer")], t) == []


# ---- the vector indexes' memory ---------------------------------------------------------------
@dataclass
class _Outputs:
    vector_operators: tuple[str, ...] = ("cosine", "l2")


@dataclass
class _Ctx:
    """What the two catalog checks use of a Context: memoised reads."""

    found: IndexMemory
    outputs: _Outputs = field(default_factory=_Outputs)

    def memo(self, key: str, compute: Any) -> IndexMemory:
        return self.found


def _ctx(sizes_mb: list[int], shared: int, cache: int, maintenance: int) -> Context:
    indexes = [(f"public.idx_{i}", s * MB) for i, s in enumerate(sizes_mb)]
    return cast(Context, _Ctx(IndexMemory(indexes, shared * MB, cache * MB, maintenance * MB)))


def test_indexes_beyond_the_cache_warn_naming_each_and_the_sizes() -> None:
    assert check_index_cache(_ctx([24, 24], 64, 384, 128)).status == "pass"
    outcome = check_index_cache(_ctx([24, 24], 8, 32, 128))
    assert outcome.status == "warn"
    assert outcome.summary.startswith(
        "the HNSW indexes take 48 MB (public.idx_0 24 MB, public.idx_1 24 MB), more than the "
        "server can cache (effective_cache_size 32 MB, of which shared_buffers 8 MB)"
    )
    assert "elizadb:resources.memory" in outcome.fix
    assert check_index_cache(_ctx([], 8, 32, 128)).status == "pass"


def test_an_index_beyond_maintenance_work_mem_warns_that_a_rebuild_would_spill() -> None:
    assert check_index_build(_ctx([24, 24], 64, 384, 128)).status == "pass"
    outcome = check_index_build(_ctx([40, 24], 64, 384, 32))
    assert outcome.status == "warn"
    assert outcome.reason == (
        "public.idx_0 takes 40 MB, more than maintenance_work_mem (32 MB): a REINDEX or a new "
        "index of its size would spill its graph and build many times slower"
    )
    assert "maintenance_work_mem" in outcome.fix and "resources.memory" in outcome.fix
