"""What PgBouncer costs: pgbench against the primary directly and through the pooler, side by side
in one run, with the same TLS (verify-full), as the agent role, 8 clients.

    python bench/pooler_bench.py [--rounds 3] [--seconds 15] [--variants base,reuseport2,...]
                                 [--pin] [--name NAME]

Deploys its own stack (`p12pool`, ports 40100-40109, no replicas: the two CPUs are left to the
measured path), loads pgbench's tables at scale 10 and runs pgbench 17 from a client container
on the stack's network (the image's pgbench; the host's is 15). Every configuration of the
pooler under test is a PgBouncer process (or several sharing a port with so_reuseport) started
inside the deployed pooler container, on a port of its own, from the deployed pgbouncer.ini with
the variant's changes: the paths differ only by the pooler. Each round runs every path once, in
turn, so that the machine's load (it is shared) falls on every path alike.

With --pin the server gets a CPU of its own (every process of the primary's container on CPU 0)
and pgbench and the pooler share the other (CPU 1): the server is then what limits both paths,
as when the pooler runs beside the clients or on a host of its own, and the loss is what the
pooled path costs the server.

Writes bench/results/pooler.json and bench/results/pooler.md (NAME.json and NAME.md with --name).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import statistics
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.engine import engine_description
from elizadb.config import BASE_IMAGE_ENV
from elizadb.local import deploy
from elizadb.local.apply import Applier
from infra.render import paths
from infra.render.connections import render_pgpass
from infra.roles import AGENT, SUPERUSER
from infra.settings import StackSettings, load_settings
from infra.topology import PG_PORT, POOLER_PORT, topology

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STACK = "p12pool"
PORT_BASE = 40100
CLIENTS = 8
SCALE = 10
CLIENT_CA = "/tmp/bench/ca.crt"
CLIENT_PGPASS = "/tmp/bench/pgpass"


@dataclass(frozen=True)
class Variant:
    """A pooler configuration under test: changes to the deployed [pgbouncer] section, and how
    many processes share the port. A diagnostic one breaks the "same TLS" rule on purpose (to
    show what TLS costs in the pooler) and is never a candidate to keep."""

    changes: dict[str, str] = field(default_factory=dict)
    processes: int = 1
    client_sslmode: str = "verify-full"
    diagnostic: bool = False


VARIANTS: dict[str, Variant] = {
    "deployed": Variant(),
    "reuseport2": Variant({"so_reuseport": "1"}, 2),
    "pktbuf16k": Variant({"pkt_buf": "16384"}),
    "tls12": Variant({"client_tls_protocols": "tlsv1.2", "server_tls_protocols": "tlsv1.2"}),
    "diag_plain_client": Variant(
        {"client_tls_sslmode": "disable"}, client_sslmode="disable", diagnostic=True
    ),
}


@dataclass
class Path_:
    name: str
    host: str
    port: int
    processes: list[str] = field(default_factory=list)
    sslmode: str = "verify-full"


def progress(message: str) -> None:
    sys.stderr.write(f"  [bench] {message}\n")


def settings_for(base_image: str | None) -> StackSettings:
    values: dict[str, Any] = {
        "replicas": 0,
        "network": {
            "primaryPort": PORT_BASE,
            "replicaPortBase": PORT_BASE + 1,
            "poolerPort": PORT_BASE + 9,
        },
        "resources": {"memory": "1g", "shmSize": "512m"},
    }
    if base_image:
        values["image"] = {"base": base_image}
    return load_settings(STACK, values, f"bench:{STACK}")


def _tar(files: dict[str, tuple[bytes, int]], uid: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode, info.uid, info.gid = len(data), mode, uid, uid
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _password(uri: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(uri)["password"]  # type: ignore[return-value]


def variant_ini(ini: str, changes: dict[str, str], port: int) -> str:
    """The deployed pgbouncer.ini with the [pgbouncer] keys changed and a port of its own."""
    changes = {**changes, "listen_port": str(port)}
    lines, seen = [], set()
    for line in ini.splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and key in changes:
            lines.append(f"{key} = {changes[key]}")
            seen.add(key)
        else:
            lines.append(line)
    lines += [f"{k} = {v}" for k, v in changes.items() if k not in seen]
    return "\n".join(lines) + "\n"


def _exec(
    container: Any, cmd: list[str], user: str = "postgres", env: dict[str, str] | None = None
) -> str:
    code, out = container.exec_run(cmd, user=user, environment=env or {})
    text = out.decode(errors="replace")
    if code != 0:
        raise RuntimeError(f"{cmd[0]} exited {code}: {text[-2000:]}")
    return text


_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")
_LAT = re.compile(r"latency average = ([0-9.]+) ms")
_TXS = re.compile(r"number of transactions actually processed: (\d+)")
_CLIENT_CPU = re.compile(r"^client cpu ticks: (\d+) (\d+)$", re.M)
# pgbench under a shell that prints, once pgbench has exited and been waited for, its children's
# CPU time (cutime and cstime of /proc/<shell>/stat, in clock ticks): pgbench's own.
WITH_CLIENT_CPU = (
    'pgbench "$@"; rc=$?; echo "client cpu ticks: $(cut -d" " -f16,17 /proc/$$/stat)"; exit $rc'
)
TICK = os.sysconf("SC_CLK_TCK")


def pgbench(
    client: Any, conninfo: str, mode: str, protocol: str, seconds: int, cpus: str | None = None
) -> dict[str, float]:
    cmd = ["-n", "-c", str(CLIENTS), "-j", "2", "-T", str(seconds), "-M", protocol]
    if mode == "select-only":
        cmd.append("-S")
    pinned = ["taskset", "-c", cpus] if cpus else []
    out = _exec(
        client,
        [*pinned, "bash", "-c", WITH_CLIENT_CPU, "pgbench", *cmd, conninfo],
        env={"PGPASSFILE": CLIENT_PGPASS},
    )
    tps, lat, cpu = _TPS.search(out), _LAT.search(out), _CLIENT_CPU.search(out)
    txs = _TXS.search(out)
    if not tps or not lat or not cpu or not txs:
        raise RuntimeError(f"pgbench printed no tps: {out[-2000:]}")
    return {
        "tps": float(tps.group(1)),
        "transactions": int(txs.group(1)),
        "latency_ms": float(lat.group(1)),
        "client_cpu_s": (int(cpu.group(1)) + int(cpu.group(2))) / TICK,
    }


def container_cpu_seconds(container: Any) -> float:
    """CPU time of every process in the container, those it has waited for included (utime,
    stime, cutime and cstime of each live process count each process once): the server's
    backends that exit during a run stay counted in the postmaster's cutime. (A process that
    exits while the files are read is skipped: the shell and cat of this very call.)"""
    script = "cat /proc/[0-9]*/stat 2>/dev/null | awk '{t += $14 + $15 + $16 + $17} END {print t}'"
    return int(_exec(container, ["bash", "-c", script], user="root").strip()) / TICK


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent on anything but idling and waiting for I/O."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


def cpu_seconds(container: Any, pids: list[str]) -> float:
    """CPU time (user + system) the pooler processes have used, from /proc."""
    total = 0.0
    for pid in pids:
        fields = _exec(container, ["cat", f"/proc/{pid}/stat"], user="root").rsplit(")", 1)[1]
        parts = fields.split()
        total += (int(parts[11]) + int(parts[12])) / TICK
    return total


def pooler_pids(container: Any, conf: str) -> list[str]:
    """The pgbouncer processes started with this configuration file (the image has no pgrep)."""
    script = (
        'for d in /proc/[0-9]*; do c=$(tr "\\0" " " < "$d/cmdline" 2>/dev/null); '
        'case "$c" in "pgbouncer $1 "*) echo "${d#/proc/}";; esac; done'
    )
    return _exec(container, ["bash", "-c", script, "_", conf], user="root").split()


def start_variant(pooler: Any, name: str, ini: str, port: int, processes: int) -> list[str]:
    conf = f"/tmp/pgbouncer-{name}.ini"
    pooler.put_archive("/", _tar({conf: (ini.encode(), 0o644)}))
    for _ in range(processes):
        pooler.exec_run(["pgbouncer", conf], user="postgres", detach=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = pooler_pids(pooler, conf)
        if len(pids) == processes:
            return pids
        time.sleep(0.3)
    raise RuntimeError(f"variant {name}: {processes} pgbouncer processes did not start")


# Every process of a container that this user may move (the container has no CAP_SYS_NICE),
# onto the CPUs in $1: those it forks later inherit them, the server's new backends included.
PIN = 'for d in /proc/[0-9]*; do taskset -a -p -c "$1" "${d#/proc/}" >/dev/null 2>&1; done; true'
SERVER_CPUS, REST_CPUS = "0", "1"


def pin(container: Any, cpus: str, user: str = "postgres") -> None:
    _exec(container, ["bash", "-c", PIN, "_", cpus], user=user)


def allowed_cpus(container: Any, pid: str) -> str:
    status = _exec(container, ["cat", f"/proc/{pid}/status"], user="root")
    return re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M).group(1)  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--protocols", default="simple,prepared")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument("--name", default="pooler", help="results as bench/results/NAME.json, .md")
    parser.add_argument(
        "--pin", action="store_true", help="the server on CPU 0, pgbench and the pooler on CPU 1"
    )
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    protocols = [p for p in args.protocols.split(",") if p]

    client_api = docker.from_env()
    project = Path(tempfile.mkdtemp(prefix="elizadb-p12pool-"))
    os.environ["ELIZADB_STATE_DIR"] = str(project / "state")
    settings = settings_for(os.environ.get(BASE_IMAGE_ENV))
    topo = topology(settings)
    applier = Applier(client_api, STACK, progress)
    applier.down(delete_volumes=True)
    client = None
    try:
        deploy.up(settings, progress, project)
        outputs = deploy.outputs(settings, show_secrets=True)
        conns = outputs["connections"]
        ca = (project / outputs["caCertPath"]).read_bytes()
        superuser = conns["superuser"].replace(
            f"sslrootcert={outputs['caCertPath']}", f"sslrootcert={project / outputs['caCertPath']}"
        )
        with psycopg.connect(superuser, autocommit=True) as conn:
            image = conn.execute("SELECT version()").fetchone()
        # The client: the stack image, on the stack network, its secrets in a 0600 pgpass.
        primary = client_api.containers.get(topo.current_primary.name)
        network = next(iter(primary.attrs["NetworkSettings"]["Networks"]))
        client = client_api.containers.run(
            primary.image.id,
            entrypoint=["sleep", "infinity"],
            name=f"elizadb-{STACK}-pgbench",
            network=network,
            detach=True,
            labels={"elizadb.stack": STACK},
        )
        pgpass = render_pgpass(
            [
                ("*", SUPERUSER, _password(conns["superuser"])),
                ("*", AGENT.name, _password(conns["agentPrimary"])),
            ]
        ).encode()
        uid = int(_exec(client, ["id", "-u", "postgres"], user="root"))
        client.put_archive(
            "/", _tar({CLIENT_CA: (ca, 0o644), CLIENT_PGPASS: (pgpass, 0o600)}, uid=uid)
        )
        _exec(client, ["chown", "-R", "postgres:postgres", "/tmp/bench"], user="root")

        def conninfo(host: str, port: int, user: str, sslmode: str = "verify-full") -> str:
            return (
                f"host={host} port={port} dbname={settings.database} user={user} "
                f"sslmode={sslmode} sslrootcert={CLIENT_CA}"
            )

        progress(f"pgbench -i -s {SCALE} as {SUPERUSER}")
        _exec(
            client,
            [
                "pgbench",
                "-i",
                "-q",
                "-s",
                str(SCALE),
                conninfo(topo.current_primary.name, PG_PORT, SUPERUSER),
            ],
            env={"PGPASSFILE": CLIENT_PGPASS},
        )
        with psycopg.connect(superuser, dbname=settings.database, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL(
                    "GRANT SELECT, INSERT, UPDATE ON pgbench_accounts, pgbench_branches,"
                    " pgbench_tellers, pgbench_history TO {}"
                ).format(psycopg.sql.Identifier(AGENT.name))
            )

        pooler = client_api.containers.get(topo.pooler_name)
        deployed_ini = _exec(pooler, ["cat", paths.PGBOUNCER_INI], user="root")
        targets = [Path_("direct", topo.current_primary.name, PG_PORT)]
        for i, name in enumerate(variants):
            variant = VARIANTS[name]
            if name == "deployed":
                pids = pooler_pids(pooler, paths.PGBOUNCER_INI)
                targets.append(Path_("deployed", topo.pooler_name, POOLER_PORT, pids))
                continue
            port = POOLER_PORT + 10 + i
            ini = variant_ini(deployed_ini, variant.changes, port)
            pids = start_variant(pooler, name, ini, port, variant.processes)
            targets.append(Path_(name, topo.pooler_name, port, pids, variant.client_sslmode))

        pinned: dict[str, str] = {}
        if args.pin:
            pin(primary, SERVER_CPUS)
            pin(pooler, REST_CPUS)
            postmaster = _exec(
                primary,
                ["bash", "-c", 'head -1 "$(psql -XAtq -c "SHOW data_directory")/postmaster.pid"'],
            )
            pinned = {
                "server (postmaster)": allowed_cpus(primary, postmaster.strip()),
                **{
                    f"pooler {t.name} ({pid})": allowed_cpus(pooler, pid)
                    for t in targets
                    for pid in t.processes
                },
            }
            progress(f"pinned: {pinned}")
        runs: list[dict[str, Any]] = []
        for rnd in range(args.rounds):
            for mode in ("select-only", "tpcb-like"):
                for protocol in protocols:
                    for target in targets:
                        before = (
                            cpu_seconds(pooler, target.processes),
                            container_cpu_seconds(primary),
                            machine_busy_seconds(),
                        )
                        started = time.monotonic()
                        result = pgbench(
                            client,
                            conninfo(target.host, target.port, AGENT.name, target.sslmode),
                            mode,
                            protocol,
                            args.seconds,
                            REST_CPUS if args.pin else None,
                        )
                        wall = time.monotonic() - started
                        used = {
                            "client": result.pop("client_cpu_s"),
                            "server": container_cpu_seconds(primary) - before[1],
                            "pooler": cpu_seconds(pooler, target.processes) - before[0],
                            "machine": machine_busy_seconds() - before[2],
                        }
                        txs = result["transactions"]
                        runs.append(
                            {
                                "round": rnd + 1,
                                "mode": mode,
                                "protocol": protocol,
                                "path": target.name,
                                **result,
                                "cpus_busy": round(used["machine"] / wall, 2),
                                # CPU time per transaction, in microseconds, by whom.
                                "cpu_us_per_tx": {
                                    k: round(v / txs * 1e6, 1) for k, v in used.items()
                                },
                                "load_average": os.getloadavg()[0],
                            }
                        )
                        progress(
                            f"round {rnd + 1} {mode:11} {protocol:8} {target.name:12} "
                            f"{result['tps']:9.0f} tps  cpus busy {runs[-1]['cpus_busy']}  "
                            f"cpu us/tx {runs[-1]['cpu_us_per_tx']}"
                        )
        write_results(runs, targets, args, image[0] if image else "?", pinned)
    finally:
        if client is not None:
            client.remove(force=True)
        if not args.keep:
            applier.down(delete_volumes=True)


def _median(numbers: list[float], digits: int) -> float | None:
    return round(statistics.median(numbers), digits) if numbers else None


def summarize(
    runs: list[dict[str, Any]], paths: list[str], limit: str = "machine"
) -> dict[str, Any]:
    """Per mode, protocol and path: the medians over rounds, and the loss against the direct
    run of each round, measured and as the CPU time of `limit` predicts it ("machine" when the
    CPUs are shared by all, "server" when the server has CPUs of its own)."""
    summary: dict[str, Any] = {}
    protocols = list(dict.fromkeys(r["protocol"] for r in runs))
    for mode in ("select-only", "tpcb-like"):
        for protocol in protocols:
            direct = [
                r
                for r in runs
                if (r["mode"], r["protocol"], r["path"]) == (mode, protocol, "direct")
            ]
            for name in paths:
                mine = [
                    r
                    for r in runs
                    if (r["mode"], r["protocol"], r["path"]) == (mode, protocol, name)
                ]
                # Per round against the direct run of the same round, then the median: the loss
                # measured, and the loss the CPU time predicts when the CPUs are the limit
                # (throughput = busy CPUs / CPU time per transaction).
                pairs = list(zip(mine, direct, strict=True))
                losses = [1 - m["tps"] / d["tps"] for m, d in pairs]
                predicted = [
                    1 - d["cpu_us_per_tx"][limit] / m["cpu_us_per_tx"][limit] for m, d in pairs
                ]
                summary[f"{mode}/{protocol}/{name}"] = {
                    "median_tps": _median([r["tps"] for r in mine], 1),
                    "tps": [r["tps"] for r in mine],
                    "median_loss_vs_direct": _median(losses, 3),
                    "median_loss_predicted_by_cpu": _median(predicted, 3),
                    "median_cpus_busy": _median([r["cpus_busy"] for r in mine], 2),
                    "median_cpu_us_per_tx": {
                        who: _median([r["cpu_us_per_tx"][who] for r in mine], 1)
                        for who in ("client", "server", "pooler", "machine")
                    },
                }
    return summary


def write_results(
    runs: list[dict[str, Any]],
    targets: list[Path_],
    args: Any,
    version: str,
    pinned: dict[str, str],
) -> None:
    limit = "server" if pinned else "machine"
    summary = summarize(runs, [t.name for t in targets], limit)
    result = {
        "benchmark": "pgbench direct vs through PgBouncer, same TLS (verify-full), agent role",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "server": version,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "engine": engine_description(),
        },
        "clients": CLIENTS,
        "threads": 2,
        "scale": SCALE,
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "variants": {
            t.name: {
                "changes": VARIANTS[t.name].changes,
                "processes": VARIANTS[t.name].processes,
                "client_sslmode": VARIANTS[t.name].client_sslmode,
                "diagnostic": VARIANTS[t.name].diagnostic,
            }
            for t in targets
            if t.name != "direct"
        },
        "cpus_allowed": pinned or "all, shared",
        "loss_predicted_by": f"CPU time per transaction of: {limit}",
        "summary": summary,
        "runs": runs,
        "target": "loss <= 10 % against direct, select-only and TPC-B-like",
    }
    where = (
        f"the server alone on CPU {SERVER_CPUS}, pgbench and the pooler on CPU {REST_CPUS} (--pin)"
        if pinned
        else f"{os.cpu_count()} CPUs shared by the server, the pooler and pgbench"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines: list[str] = [
        "# PgBouncer's cost: pgbench direct vs through the pooler",
        "",
        (
            f"{result['date']}, {version.split(' on ')[0]}, {CLIENTS} clients, 2 threads, scale {SCALE}, "
            f"{args.seconds} s per run, {args.rounds} rounds (every path once per round, in turn), "
            f"{where}, "
            f"{result['machine']['engine']['name']} {result['machine']['engine']['version']}. "
            "Loss is the median over rounds of 1 − pooler/direct within the round. "
            "CPU time per transaction is measured for pgbench (its process), the server (every "
            "process of the primary's container), the pooler (its processes) and the whole "
            "machine (/proc/stat, everything but idle); the predicted loss is 1 − direct ÷ "
            f"this path's CPU time per transaction of the {limit}, per round: what the loss is "
            f"when {'the server' if pinned else 'the CPUs'} limit both paths."
        ),
        "",
        (
            "| mode | protocol | path | median TPS | loss vs direct | loss the CPU time predicts |"
            " CPUs busy | CPU µs/tx: pgbench | server | pooler | whole machine |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in summary.items():
        mode, protocol, path = key.split("/")
        label = f"{path} (diagnostic: no TLS to the pooler)" if "diag" in path else path
        is_direct = path == "direct"
        loss = "—" if is_direct else f"{row['median_loss_vs_direct'] * 100:.1f} %"
        predicted_loss = "—" if is_direct else f"{row['median_loss_predicted_by_cpu'] * 100:.1f} %"
        cpu = row["median_cpu_us_per_tx"]
        lines.append(
            f"| {mode} | {protocol} | {label} | {row['median_tps']:.0f} | {loss} | {predicted_loss} | "
            f"{row['median_cpus_busy']:.2f} | {cpu['client']} | {cpu['server']} | "
            f"{'—' if is_direct else cpu['pooler']} | {cpu['machine']} |"
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
