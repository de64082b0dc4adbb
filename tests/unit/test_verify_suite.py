"""The runner's rules, with stand-in checks: order, read-only skips, a broken check, and skips
for unreachable targets that can never hide a failure. Also the run's connection strings."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg.conninfo
import pytest

from elizadb.errors import UsageError
from tests.unit.test_verify_outputs import sample_outputs
from verify import suite
from verify.context import Context
from verify.errors import VerifyError
from verify.model import Check, Findings, Outcome, Unreachable, failed, passed
from verify.outputs import load_outputs
from verify.thresholds import Thresholds

OUTPUTS = load_outputs(sample_outputs())
calls: list[str] = []


def _pass(ctx: Context) -> Outcome:
    calls.append("pass")
    return passed("fine")


def _fail(ctx: Context) -> Outcome:
    return failed("broken", "observed 3, expected 1", "repair it")


def _writes(ctx: Context) -> Outcome:
    calls.append("writes")
    return passed("wrote and cleaned up")


def _crash(ctx: Context) -> Outcome:
    raise KeyError("surprise")


def _needs_replica(ctx: Context) -> Outcome:
    seen = Findings()
    seen.unreachable(Unreachable("replica-1", "health.reachable", "Connection refused"))
    return seen.outcome("never", "never")


def _raises_unreachable(ctx: Context) -> Outcome:
    raise Unreachable("pooler", "pooler.reachable", "Connection refused")


def _not_read_only(ctx: Context) -> Outcome:
    raise VerifyError("the session would not be read-only")


def use(monkeypatch: pytest.MonkeyPatch, *checks: Check) -> None:
    monkeypatch.setattr(suite, "ALL_CHECKS", checks)
    monkeypatch.setattr(suite, "_BY_ID", {c.id: c for c in checks})
    calls.clear()


def test_results_come_in_run_order_with_family_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, Check("health.a", _pass), Check("schema.b", _fail))
    results = suite.run_checks(OUTPUTS)
    assert [(r.id, r.family, r.status) for r in results] == [
        ("health.a", "health", "pass"),
        ("schema.b", "schema", "fail"),
    ]
    assert results[1].reason == "observed 3, expected 1" and results[1].fix == "repair it"
    assert all(r.seconds >= 0 for r in results)


def test_read_only_mode_skips_writing_checks_without_running_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use(monkeypatch, Check("health.a", _pass), Check("backups.w", _writes, writes="a probe file"))
    results = suite.run_checks(OUTPUTS, read_only=True)
    assert calls == ["pass"]
    assert results[1].status == "skip"
    assert results[1].summary == "not run in read-only mode: it writes (a probe file)"
    assert [r.status for r in suite.run_checks(OUTPUTS)] == ["pass", "pass"]


def test_a_check_that_crashes_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, Check("health.a", _crash), Check("health.b", _pass))
    crashed, fine = suite.run_checks(OUTPUTS)
    assert crashed.status == "fail" and "KeyError" in crashed.summary
    assert "surprise" in crashed.reason and "--only health.a" in crashed.fix
    assert fine.status == "pass"


def test_a_suite_level_error_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, Check("health.a", _not_read_only))
    with pytest.raises(VerifyError):
        suite.run_checks(OUTPUTS, read_only=True)


def test_a_skip_for_an_unreachable_target_brings_its_root_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `only` selects the dependent check; the check that reports the cause is run too.
    use(monkeypatch, Check("health.reachable", _fail), Check("tls.x", _needs_replica))
    results = suite.run_checks(OUTPUTS, only=["tls"])
    assert [(r.id, r.status) for r in results] == [("health.reachable", "fail"), ("tls.x", "skip")]
    assert results[1].summary == "replica-1 not checked — see health.reachable"
    assert "Connection refused" in results[1].reason


def test_a_skip_whose_root_check_passes_becomes_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # If the cause is not reported anywhere, a skip would let a broken stack exit 0.
    use(monkeypatch, Check("health.reachable", _pass), Check("tls.x", _needs_replica))
    results = suite.run_checks(OUTPUTS)
    assert results[1].status == "fail"
    assert "health.reachable did not report it" in results[1].reason


def test_unreachable_raised_by_a_check_is_a_skip_on_its_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use(monkeypatch, Check("pooler.reachable", _fail), Check("pooler.pools", _raises_unreachable))
    results = suite.run_checks(OUTPUTS, only=["pooler.pools"])
    assert [(r.id, r.status) for r in results] == [
        ("pooler.reachable", "fail"),
        ("pooler.pools", "skip"),
    ]


def test_only_selects_by_prefix_and_refuses_a_prefix_that_matches_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use(
        monkeypatch,
        Check("tls.certificate", _pass),
        Check("tls.expiry", _pass),
        Check("schema.tables", _pass),
    )
    assert [c.id for c in suite.select(["tls"])] == ["tls.certificate", "tls.expiry"]
    assert [c.id for c in suite.select(["schema.tables", "tls.exp"])] == [
        "tls.expiry",
        "schema.tables",
    ]
    assert len(suite.select([])) == 3
    with pytest.raises(UsageError) as caught:
        suite.select(["tls", "tsl"])
    assert caught.value.exit_code == 2 and "tsl" in str(caught.value)


def test_the_real_checks_have_unique_dotted_ids_of_known_families() -> None:
    from verify.checks import ALL_CHECKS
    from verify.model import FAMILIES

    ids = [c.id for c in ALL_CHECKS]
    assert len(ids) == len(set(ids))
    assert {c.family for c in ALL_CHECKS} == set(FAMILIES)
    assert all(c.doc for c in ALL_CHECKS), "every check documents what a pass proves"


def test_findings_decide_fail_then_skip_then_pass() -> None:
    seen = Findings()
    seen.note("2 extra")
    assert seen.outcome("all good", "fix") == Outcome("pass", "all good (2 extra)")
    seen.not_checked("table cache", "schema.tables", "missing")
    skip = seen.outcome("all good", "fix")
    assert (skip.status, skip.depends_on) == ("skip", ("schema.tables",))
    assert skip.summary == "table cache not checked — see schema.tables"
    seen.problem("a is wrong")
    seen.problem("b is wrong")
    fail = seen.outcome("all good", "fix it")
    assert (fail.status, fail.summary, fail.fix) == ("fail", "a is wrong (+1 more)", "fix it")
    assert fail.reason.splitlines() == [
        "a is wrong",
        "b is wrong",
        "table cache not checked: missing (see schema.tables)",
    ]


def test_the_ca_goes_to_a_private_file_that_the_run_removes() -> None:
    with Context(OUTPUTS, read_only=False, thresholds=Thresholds()) as ctx:
        path = Path(ctx.ca_path)
        assert path.read_text() == OUTPUTS.ca_cert
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not path.exists()


def test_connection_strings_use_the_runs_ca_timeouts_and_read_only_sessions() -> None:
    thresholds = Thresholds(connect_timeout_s=4, statement_timeout_ms=1234)
    with Context(OUTPUTS, read_only=True, thresholds=thresholds) as ctx:
        info = psycopg.conninfo.conninfo_to_dict(ctx.conninfo(OUTPUTS.connections.superuser))
        assert info["sslrootcert"] == ctx.ca_path and info["sslmode"] == "verify-full"
        assert info["connect_timeout"] == "4"
        assert info["options"] == (
            "-c statement_timeout=1234 -c lock_timeout=5000 -c default_transaction_read_only=on"
        )
        pooled = psycopg.conninfo.conninfo_to_dict(
            ctx.conninfo(OUTPUTS.connections.agent_pooler, server_options=False)
        )
        assert "options" not in pooled  # PgBouncer ignores it; pooled sessions use BEGIN READ ONLY
    with Context(OUTPUTS, read_only=False, thresholds=thresholds) as ctx:
        info = psycopg.conninfo.conninfo_to_dict(ctx.conninfo(OUTPUTS.connections.superuser))
        assert "default_transaction_read_only" not in str(info["options"])
