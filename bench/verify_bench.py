"""Benchmark of the verify suite: its wall time on a deployed stack (the dev stack by default),
every check, write mode (vector probe included), 5 runs; plus one `elizadb verify` run as a user
starts it (interpreter, outputs, report included).

    python bench/verify_bench.py [--stack dev] [--runs 5]

Reuses the stack when every node and the pooler are ready, deploys it with `elizadb up`
otherwise. Writes bench/results/verify.json (per-check and total seconds of every run, statuses,
machine) and bench/results/verify.md. Target: the whole suite in <= 30 s on the dev stack. A
benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from elizadb.config import load_stack
from elizadb.local import deploy
from verify.context import Context, scalar
from verify.model import CheckResult
from verify.suite import load_outputs, run_checks
from verify.thresholds import Thresholds

RESULTS = ROOT / "bench" / "results"
TARGET_S = 30.0


def ensure_stack(stack: str) -> None:
    """Reuse a ready stack; deploy it otherwise, as a user would."""
    if all(row.ready for row in deploy.status(load_stack(stack))):
        return
    print(f"stack {stack} is not ready: elizadb up --stack {stack}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "elizadb", "up", "--stack", stack], cwd=ROOT, check=True)


def machine(outputs: Any) -> dict[str, Any]:
    with Context(outputs, read_only=True, thresholds=Thresholds()) as ctx:
        conn = ctx.app_db(outputs.primary)
        server = scalar(conn, "SHOW server_version")
        vector = scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gib": round(int(meminfo) / 2**20, 1),
        "engine": os.environ.get("DOCKER_HOST", "default socket"),
        "postgresql": server,
        "pgvector": vector,
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def cli_run(stack: str) -> tuple[float, int]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "elizadb", "verify", "--stack", stack, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return time.monotonic() - started, done.returncode


def render_md(report: dict[str, Any]) -> str:
    total = report["total_seconds"]
    m = report["machine"]
    lines = [
        "# Verify suite benchmark",
        "",
        (
            f"Stack `{report['stack']}` (primary + {report['replicas']} replicas + PgBouncer), every "
            f"check in write mode, {report['runs']} runs; vector probe of "
            f"{report['thresholds']['vector_rows']} × {report['embedding_dimensions']}-dimension "
            f"memories. {m['cpus']} CPUs, PostgreSQL {m['postgresql']}, pgvector {m['pgvector']}; "
            f"load average {report['load_before'][0]:.1f} before, {report['load_after'][0]:.1f} after."
        ),
        "",
        "| measure | median s | min s | max s | target s |",
        "|---|---|---|---|---|",
        (
            f"| whole suite (`run_checks`) | {total['median']} | {total['min']} | {total['max']} | "
            f"≤ {TARGET_S:g} |"
        ),
        (
            f"| `elizadb verify --stack {report['stack']}` (one run, process start to exit) | "
            f"{report['cli_seconds']:.3f} | | | |"
        ),
    ]
    slowest = sorted(report["checks"].items(), key=lambda kv: -kv[1]["median"])[:5]
    lines += [
        "",
        (
            "Slowest checks (median of the runs; the vector probe is timed in the first "
            "vector check that uses it):"
        ),
        "",
        "| check | median s | max s |",
        "|---|---|---|",
    ]
    lines += [f"| {cid} | {s['median']} | {s['max']} |" for cid, s in slowest]
    probe = next((r["summary"] for r in report["statuses"][-1] if r["id"] == "vector.recall"), "")
    lines += ["", f"Vector probe, last run: {probe}."]
    failing = sorted({r["id"] for run in report["statuses"] for r in run if r["status"] != "pass"})
    lines += ["", "Checks that did not pass in some run: " + (", ".join(failing) or "none") + "."]
    lines += [
        f"- {r['id']} ({r['status']}, last run): {r['summary']}"
        for r in report["statuses"][-1]
        if r["status"] != "pass"
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    ensure_stack(args.stack)
    outputs = load_outputs(deploy.outputs(load_stack(args.stack), show_secrets=True))
    thresholds = Thresholds()
    load_before = os.getloadavg()
    runs: list[list[CheckResult]] = []
    totals: list[float] = []
    for i in range(args.runs):
        started = time.perf_counter()
        results = run_checks(outputs, thresholds=thresholds)
        totals.append(time.perf_counter() - started)
        runs.append(results)
        failed = [r.id for r in results if r.status != "pass"]
        print(f"run {i + 1}: {totals[-1]:.2f} s; not passed: {failed or 'none'}", file=sys.stderr)
    cli_seconds, cli_code = cli_run(args.stack)
    load_after = os.getloadavg()

    ids = [r.id for r in runs[0]]
    report = {
        "stack": args.stack,
        "replicas": len(outputs.replicas),
        "embedding_dimensions": outputs.embedding_dimensions,
        "runs": args.runs,
        "thresholds": {
            "vector_rows": thresholds.vector_rows,
            "vector_queries": thresholds.vector_queries,
        },
        "total_seconds": summary(totals),
        "total_seconds_per_run": [round(t, 3) for t in totals],
        "checks": {
            cid: summary([next(r.seconds for r in run if r.id == cid) for run in runs])
            for cid in ids
        },
        "statuses": [
            [{"id": r.id, "status": r.status, "summary": r.summary} for r in run] for run in runs
        ],
        "cli_seconds": round(cli_seconds, 3),
        "cli_exit_code": cli_code,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "machine": machine(outputs),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "verify.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "verify.md").write_text(render_md(report))
    print(render_md(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
