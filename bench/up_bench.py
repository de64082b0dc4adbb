"""Benchmark of the local deploy: time from `up` (image already built) to a healthy stack of a
primary, 2 replicas and the pooler, on fresh volumes; and the time of a no-op `up`.

    python bench/up_bench.py [--runs 5]

Writes bench/results/up.json and bench/results/up.md. Targets on a 2-core machine: cold up
<= 20 s, no-op up <= 3 s. A subprocess runs each `up`, as a user would (`elizadb up`), so
interpreter and Pulumi start-up are counted too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STACK = "bench"
STACK_FILE = """config:
  elizadb:replicas: 2
  elizadb:network:
    primaryPort: 44500
    replicaPortBase: 44501
    poolerPort: 44509
"""


LOGS: list[str] = []


def elizadb(*args: str, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "elizadb", *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    LOGS.append(f"$ elizadb {' '.join(args)}\n{done.stderr}")
    return time.monotonic() - started


def healthy(env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "elizadb", "outputs", "--json", "--show-secrets", "--stack", STACK],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    outputs = json.loads(out.stdout)
    root = str(Path(env["ELIZADB_PROJECT_DIR"]) / outputs["caCertPath"])
    fix = lambda uri: uri.replace(f"sslrootcert={outputs['caCertPath']}", f"sslrootcert={root}")  # noqa: E731
    conns = outputs["connections"]
    with psycopg.connect(fix(conns["superuser"])) as conn:
        streaming = conn.execute(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        ).fetchone()
    assert streaming == (2,), streaming
    with psycopg.connect(fix(conns["agentPooler"])) as conn:
        conn.execute("SELECT 1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="elizadb-bench-"))
    for item in ("Pulumi.yaml",):
        (project / item).write_text((ROOT / item).read_text())
    (project / f"Pulumi.{STACK}.yaml").write_text(STACK_FILE)
    env = {
        **os.environ,
        "ELIZADB_PROJECT_DIR": str(project),
        "ELIZADB_STATE_DIR": str(project / "state"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    cold: list[float] = []
    noop: list[float] = []
    elizadb("down", "--delete-volumes", "--stack", STACK, env=env)
    elizadb("up", "--stack", STACK, env=env)  # builds the image if it is missing; not timed
    for run in range(args.runs):
        elizadb("down", "--delete-volumes", "--stack", STACK, env=env)
        cold.append(elizadb("up", "--stack", STACK, env=env))
        healthy(env)
        noop.append(elizadb("up", "--stack", STACK, env=env))
        print(f"run {run + 1}: cold up {cold[-1]:.2f}s, no-op up {noop[-1]:.2f}s", file=sys.stderr)
    elizadb("down", "--delete-volumes", "--stack", STACK, env=env)
    # The progress log of every command, to explain an outlier.
    (RESULTS / "up.log").write_text("\n".join(LOGS))

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "median": round(statistics.median(values), 2),
            "max": round(max(values), 2),
            "min": round(min(values), 2),
        }

    result = {
        "benchmark": "local deploy: cold up (fresh volumes, image built) and no-op up",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "engine": os.environ.get("DOCKER_HOST", "default"),
        },
        "topology": "primary + 2 replicas + pgbouncer + bootstrap job + backup agent",
        "runs": args.runs,
        "cold_up_seconds": [round(v, 2) for v in cold],
        "noop_up_seconds": [round(v, 2) for v in noop],
        "cold_up": summary(cold),
        "noop_up": summary(noop),
        "targets": {"cold_up_seconds": 20, "noop_up_seconds": 3},
    }
    (RESULTS / "up.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "up.md").write_text(
        "# Local deploy benchmark\n\n"
        f"{result['topology']}, {args.runs} runs, {os.cpu_count()} CPUs, {result['machine']['engine']}. "
        '"Cold" is fresh volumes and containers; the image was built before the first run and '
        "its build is not timed.\n\n"
        "| measure | median s | min s | max s | target s |\n|---|---|---|---|---|\n"
        f"| cold `up` to healthy stack | {result['cold_up']['median']} | {result['cold_up']['min']} | "
        f"{result['cold_up']['max']} | ≤ 20 |\n"
        f"| no-op `up` | {result['noop_up']['median']} | {result['noop_up']['min']} | "
        f"{result['noop_up']['max']} | ≤ 3 |\n"
    )
    print((RESULTS / "up.md").read_text())


if __name__ == "__main__":
    main()
