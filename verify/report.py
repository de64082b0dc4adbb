"""Reports of a run: a table for people, JSON for machines, JUnit XML for CI, the exit code.

A warning (status warn) is shown as distinctly as a failure — its reason and advice under it,
its own count in the totals, the ids listed in the JSON — but does not fail the run."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from xml.etree import ElementTree as ET

from verify.model import CheckResult

_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 when no check failed (skips and warnings allowed), 1 when any did."""
    return 1 if any(r.status == "fail" for r in results) else 0


def totals(results: Sequence[CheckResult]) -> dict[str, float]:
    counts = Counter(r.status for r in results)
    return {
        "checks": len(results),
        "passed": counts["pass"],
        "warned": counts["warn"],
        "failed": counts["fail"],
        "skipped": counts["skip"],
        "seconds": round(sum(r.seconds for r in results), 3),
    }


def warnings(results: Sequence[CheckResult]) -> list[str]:
    """The ids of the checks that warned, in run order."""
    return [r.id for r in results if r.status == "warn"]


def render_table(results: Sequence[CheckResult]) -> str:
    """One line per check (status, id, seconds, summary); under each failure and warning its
    reason and fix, indented; a totals line last."""
    width = max((len(r.id) for r in results), default=5)
    lines = [f"{'STATUS':<6}  {'CHECK':<{width}}  {'SECONDS':>7}  SUMMARY"]
    for r in results:
        lines.append(f"{_MARK[r.status]:<6}  {r.id:<{width}}  {r.seconds:>7.2f}  {r.summary}")
        if r.status in ("fail", "warn"):
            for line in r.reason.splitlines():
                lines.append(f"{'':<6}  {'':<{width}}  {'':>7}  - {line}")
            if r.fix:
                lines.append(f"{'':<6}  {'':<{width}}  {'':>7}  fix: {r.fix}")
    t = totals(results)
    warned = f"{t['warned']} warned, " if t["warned"] else ""
    lines.append(
        f"{t['passed']} passed, {warned}{t['failed']} failed, {t['skipped']} skipped "
        f"in {t['seconds']:.1f} s"
    )
    return "\n".join(lines)


def render_json(results: Sequence[CheckResult]) -> str:
    return json.dumps(
        {
            "results": [asdict(r) for r in results],
            "totals": totals(results),
            "warnings": warnings(results),
            "exitCode": exit_code(results),
        },
        indent=2,
    )


def render_junit(results: Sequence[CheckResult]) -> str:
    """JUnit XML: one testsuite, one testcase per check (classname = family)."""
    t = totals(results)
    suite = ET.Element(
        "testsuite",
        name="elizadb-verify",
        tests=str(t["checks"]),
        failures=str(t["failed"]),
        skipped=str(t["skipped"]),
        errors="0",
        time=f"{t['seconds']:.3f}",
    )
    for r in results:
        case = ET.SubElement(
            suite, "testcase", classname=f"verify.{r.family}", name=r.id, time=f"{r.seconds:.3f}"
        )
        if r.status == "fail":
            node = ET.SubElement(case, "failure", message=r.summary, type="CheckFailed")
            node.text = r.reason + (f"\nfix: {r.fix}" if r.fix else "")
        elif r.status == "skip":
            ET.SubElement(case, "skipped", message=r.summary)
        elif r.status == "warn":
            # JUnit has no warning: the case passes, and says so where CI shows a case's output.
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="status", value="warn")
            ET.SubElement(case, "system-out").text = f"WARNING: {r.summary}\n{r.reason}" + (
                f"\nfix: {r.fix}" if r.fix else ""
            )
        else:
            ET.SubElement(case, "system-out").text = r.summary
    ET.indent(suite)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
    )
