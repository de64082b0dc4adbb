"""Reports: the table for people, JSON for machines, JUnit XML for CI, and the exit code."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

from verify.report import exit_code, render_json, render_junit, render_table, totals
from verify.suite import CheckResult

PASS = CheckResult("schema.tables", "schema", "pass", "9 tables present", seconds=0.02)
FAIL = CheckResult(
    "security.rls",
    "security",
    "fail",
    "memories: row level security is disabled",
    "memories: row level security is disabled\naccounts: no policy for eliza_user",
    "ALTER TABLE ... ENABLE ROW LEVEL SECURITY",
    0.01,
)
SKIP = CheckResult("vector.recall", "vector", "skip", "not run in read-only mode", seconds=0.0)


def test_exit_code_is_0_unless_a_check_failed() -> None:
    assert exit_code([]) == 0
    assert exit_code([PASS, SKIP]) == 0
    assert exit_code([PASS, FAIL, SKIP]) == 1


def test_totals_count_every_status_and_add_the_seconds() -> None:
    assert totals([PASS, FAIL, SKIP]) == {
        "checks": 3,
        "passed": 1,
        "warned": 0,
        "failed": 1,
        "skipped": 1,
        "seconds": 0.03,
    }


def test_table_has_a_line_per_check_and_the_reason_and_fix_under_a_failure() -> None:
    lines = render_table([PASS, FAIL, SKIP]).splitlines()
    assert lines[0].split() == ["STATUS", "CHECK", "SECONDS", "SUMMARY"]
    assert lines[1].startswith("PASS    schema.tables ")
    assert lines[1].endswith("0.02  9 tables present")
    assert lines[2].startswith("FAIL    security.rls ")
    assert lines[3].strip() == "- memories: row level security is disabled"
    assert lines[4].strip() == "- accounts: no policy for eliza_user"
    assert lines[5].strip() == "fix: ALTER TABLE ... ENABLE ROW LEVEL SECURITY"
    assert lines[6].startswith("SKIP    vector.recall ")
    assert lines[-1] == "1 passed, 1 failed, 1 skipped in 0.0 s"
    # Details line up under the summary column.
    assert lines[3].index("-") == lines[2].index("memories")


def test_json_carries_every_field_the_totals_and_the_exit_code() -> None:
    report = json.loads(render_json([PASS, FAIL]))
    assert report["results"][1] == {
        "id": "security.rls",
        "family": "security",
        "status": "fail",
        "summary": FAIL.summary,
        "reason": FAIL.reason,
        "fix": FAIL.fix,
        "seconds": 0.01,
    }
    assert report["totals"]["failed"] == 1 and report["exitCode"] == 1


def test_junit_has_a_testcase_per_check_with_failures_and_skips() -> None:
    xml = render_junit([PASS, FAIL, SKIP])
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    suite = ET.fromstring(xml.split("\n", 1)[1])
    assert suite.tag == "testsuite" and suite.get("name") == "elizadb-verify"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["schema.tables"].get("classname") == "verify.schema"
    failure = cases["security.rls"].find("failure")
    assert failure is not None and failure.get("message") == FAIL.summary
    assert "accounts: no policy" in (failure.text or "") and "fix: ALTER TABLE" in (
        failure.text or ""
    )
    skipped = cases["vector.recall"].find("skipped")
    assert skipped is not None and skipped.get("message") == SKIP.summary


def test_junit_escapes_markup_in_messages() -> None:
    odd = CheckResult("tls.hba_auth", "tls", "fail", 'uses "trust" <&>', "a < b & c", "fix")
    suite = ET.fromstring(render_junit([odd]).split("\n", 1)[1])
    failure = suite.find("testcase/failure")
    assert failure is not None and failure.get("message") == 'uses "trust" <&>'
    assert (failure.text or "").startswith("a < b & c")
