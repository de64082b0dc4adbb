"""Benchmark: 10 consecutive failover drills on a stack with synchronous replication (primary +
2 replicas + PgBouncer), as `elizadb drill failover --runs 10` runs them.

    python bench/failover_bench.py [--runs 10]

Writes bench/results/failover/drill.json, drill.md and drill.svg (the timeline of every run).
Before every fault one standby is cut off from the primary so that it is behind; the election
must pass it over. Targets: RPO 0 every run, the most advanced standby promoted every run, p95
RTO <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import engine_description

OUT = ROOT / "bench" / "results" / "failover"
STACK = "benchfo"
STACK_FILE = """config:
  elizadb:replicas: 2
  elizadb:replication:
    synchronous: true
  elizadb:network:
    primaryPort: 44600
    replicaPortBase: 44601
    poolerPort: 44609
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=OUT, help="folder for drill.json/.md/.svg")
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="elizadb-bench-"))
    (project / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    (project / f"Pulumi.{STACK}.yaml").write_text(STACK_FILE)
    env = {
        **os.environ,
        "ELIZADB_PROJECT_DIR": str(project),
        "ELIZADB_STATE_DIR": str(project / "state"),
    }

    def elizadb(*argv: str) -> int:
        return subprocess.run(
            [sys.executable, "-m", "elizadb", *argv, "--stack", STACK], env=env, check=False
        ).returncode

    elizadb("down", "--delete-volumes")
    try:
        if elizadb("up") != 0:
            raise SystemExit("deploy failed")
        # --lag: before every fault one standby is cut off and falls behind, so "the most
        # advanced standby is promoted" is tested, not a tie.
        code = elizadb(
            "drill", "failover", "--runs", str(args.runs), "--lag", "--out", str(args.out)
        )
        engine = engine_description()
        (args.out / "engine.json").write_text(json.dumps(engine, indent=2) + "\n")
    finally:
        elizadb("down", "--delete-volumes")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
