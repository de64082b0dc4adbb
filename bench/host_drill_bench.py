"""Benchmark: host-loss, partition and planned switchover drills on a Patroni stack spread over
Docker hosts, as `elizadb drill host-loss|partition|switchover --runs N` run them.

    python bench/host_drill_bench.py [--runs 10] [--kinds host-loss,partition,switchover]

Four test hosts on this machine (tests/integration/hosts.py): a PostgreSQL node and an etcd
member on each of a, b and c, and the pooler and the router on d, as a load balancer host would
be. The stack is production (synchronous replication, three etcd members), deployed with
`elizadb up` from a stack file that names the hosts. Each host drill faults the leader's host;
each switchover hands the leadership to the synchronous standby, so consecutive runs move it
round the hosts. Writes bench/results/hosts/<kind>/drill.json, drill.md and drill.svg.

Targets (issue 11): host loss, synchronous mode: RPO 0 every run, write-unavailability p95
<= 15 s; partition: two writable primaries observed 0 times, RPO 0; planned switchover on
several hosts: write-unavailability p95 <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import engine_description
from tests.integration.hosts import HostCluster

OUT = ROOT / "bench" / "results" / "hosts"
STACK = "benchhosts"
HOSTS = ("a", "b", "c", "d")


def stack_file(cluster: HostCluster) -> str:
    lines = [
        "config:",
        "  elizadb:environment: production",
        "  elizadb:ha:",
        "    engine: patroni",
        "  elizadb:network:",
        "    primaryPort: 44700",
        "    replicaPortBase: 44701",
        "    poolerPort: 44709",
        "  elizadb:hosts:",
    ]
    for h in HOSTS:
        lines += [
            f"    {h}:",
            f"      url: {cluster[h].docker_host}",
            f"      address: {cluster[h].address}",
        ]
    lines += [
        "  elizadb:placement:",
        "    primary: a",
        "    replica-1: b",
        "    replica-2: c",
        "    etcd-1: a",
        "    etcd-2: b",
        "    etcd-3: c",
        "    pooler: d",
    ]
    if os.environ.get("ELIZADB_BASE_IMAGE"):
        lines += ["  elizadb:image:", f"    base: {os.environ['ELIZADB_BASE_IMAGE']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--kinds", default="host-loss,partition,switchover")
    parser.add_argument("--hold-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="elizadb-bench-"))
    (project / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    env = {
        **os.environ,
        "ELIZADB_PROJECT_DIR": str(project),
        "ELIZADB_STATE_DIR": str(project / "state"),
    }

    def elizadb(*argv: str) -> int:
        return subprocess.run(
            [sys.executable, "-m", "elizadb", *argv, "--stack", STACK], env=env, check=False
        ).returncode

    # The hosts see this machine's images: `elizadb up` finds the stack image built on it
    # (build it with any local `elizadb up` first, e.g. scripts/setup's dev stack).
    with HostCluster("benchhosts", list(HOSTS), share_images=True) as cluster:
        (project / f"Pulumi.{STACK}.yaml").write_text(stack_file(cluster))
        if elizadb("up") != 0:
            raise SystemExit("elizadb up failed")
        try:
            for kind in [k for k in args.kinds.split(",") if k]:
                out = args.out / kind
                started = time.time()
                load = os.getloadavg()
                code = elizadb(
                    "drill",
                    kind,
                    "--runs",
                    str(args.runs),
                    "--hold-seconds",
                    str(args.hold_seconds),
                    "--out",
                    str(out),
                )
                data = json.loads((out / "drill.json").read_text())
                data["bench"] = {
                    "kind": kind,
                    "exit_code": code,
                    "seconds": round(time.time() - started, 1),
                    "load_average_start": [round(v, 2) for v in load],
                    "load_average_end": [round(v, 2) for v in os.getloadavg()],
                    "engine": engine_description(),
                    "hosts": {h: cluster[h].address for h in HOSTS},
                }
                (out / "drill.json").write_text(json.dumps(data, indent=2) + "\n")
                print(json.dumps(data["summary"]))
        finally:
            elizadb("down", "--delete-volumes")


if __name__ == "__main__":
    main()
