"""Run the checks against a deployed stack.

    outputs = load_outputs("outputs.json")            # or the dict `elizadb outputs` returns
    results = run_checks(outputs, read_only=True)    # no writes at all
    print(report.render_table(results))

Every check has a stable id (`verify.checks.ALL_CHECKS`), runs on its own, and reports pass, warn
(the stack works, but users will soon feel what it names), fail (with the reason, observed values
included, and what to do) or skip. A skip because a target was
unreachable names the check that reports it; the runner adds that check to the results when
`only` left it out, and turns the skip into a failure if that check does not fail — so a broken
stack can never come out green.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from infra.errors import UsageError
from verify.checks import ALL_CHECKS
from verify.context import Context
from verify.errors import VerifyError
from verify.leader import follow_leader
from verify.model import Check, CheckResult, Outcome, Unreachable, failed
from verify.outputs import Outputs, load_outputs
from verify.thresholds import Thresholds

__all__ = [
    "CheckResult",
    "Outputs",
    "Thresholds",
    "load_outputs",
    "run_checks",
    "select",
    "warning_checks",
]

_BY_ID = {check.id: check for check in ALL_CHECKS}


def warning_checks() -> list[str]:
    """The ids of the checks that may warn: what `elizadb status` runs (read-only) to say
    whether users are about to feel something."""
    return [c.id for c in ALL_CHECKS if c.warns]


def select(only: Sequence[str]) -> list[Check]:
    """The checks whose id starts with one of `only` (all of them when empty), in run order.
    A prefix that matches nothing is a usage error: a typo must not silently run nothing."""
    if not only:
        return list(ALL_CHECKS)
    unknown = [p for p in only if not any(c.id.startswith(p) for c in ALL_CHECKS)]
    if unknown:
        raise UsageError(
            f"--only {', '.join(unknown)}: no check id starts with that; "
            f"checks are {', '.join(_BY_ID)}"
        )
    return [c for c in ALL_CHECKS if any(c.id.startswith(p) for p in only)]


def _run_one(check: Check, ctx: Context) -> tuple[Outcome, float]:
    start = time.perf_counter()
    if check.writes and ctx.read_only:
        outcome = Outcome("skip", f"not run in read-only mode: it writes ({check.writes})")
    else:
        try:
            outcome = check.fn(ctx)
        except Unreachable as err:
            outcome = Outcome(
                "skip",
                f"{err.target} not checked: unreachable (see {err.root})",
                f"{err.target}: {err.message}",
                "",
                (err.root,),
            )
        except VerifyError:
            raise  # the suite itself cannot go on (e.g. a session that would not be read-only)
        except Exception as err:
            outcome = failed(
                f"the check could not complete: {type(err).__name__}",
                f"{type(err).__name__}: {str(err).strip()}",
                f"run it alone (--only {check.id}); if the error persists on a healthy stack it "
                "is a bug in the verify suite",
            )
    return outcome, time.perf_counter() - start


def run_checks(
    outputs: Outputs,
    *,
    read_only: bool = False,
    only: Sequence[str] = (),
    thresholds: Thresholds = Thresholds(),  # noqa: B008 — frozen, so one shared default is safe
) -> list[CheckResult]:
    """Run the selected checks, in order, and return one result per check run."""
    selected = [c for c in select(only) if c.applies_to(outputs)]
    done: dict[str, tuple[Outcome, float]] = {}
    with Context(outputs, read_only=read_only, thresholds=thresholds) as ctx:
        ctx.outputs = follow_leader(outputs, ctx.is_primary)
        queue = list(selected)
        while queue:
            check = queue.pop(0)
            if check.id in done:
                continue
            done[check.id] = _run_one(check, ctx)
            # The root cause of a skip must be in the report, even when `only` left it out.
            queue += [_BY_ID[root] for root in done[check.id][0].depends_on if root not in done]
    results = []
    for check in ALL_CHECKS:
        if check.id not in done:
            continue
        outcome, seconds = done[check.id]
        roots = outcome.depends_on
        if roots and not any(done[r][0].status == "fail" for r in roots if r in done):
            outcome = failed(
                outcome.summary,
                outcome.reason + f"\n(and {', '.join(roots)} did not report it)",
                "the target could not be examined: fix the connection error above",
            )
        results.append(
            CheckResult(
                check.id,
                check.family,
                outcome.status,
                outcome.summary,
                outcome.reason,
                outcome.fix,
                round(seconds, 4),
            )
        )
    return results
