"""Benchmark of backups and restores on a realistic dataset: memories with 1536-dimension
embeddings of the structure real ones have (topic clusters in a low-dimensional space, never
i.i.d. random: verify/synthetic.py), JSON content with message text, spread over rooms, users and
90 days, both HNSW indexes built.

    python bench/backup_bench.py [--rows 30000] [--runs 3]

Measures, through the `elizadb` command as a user runs it: full and incremental backups
(pgBackRest's own start-to-stop time, and the command's wall time), `pg_dump -Fc`, a
point-in-time restore into a new stack, and an in-place restore to the latest WAL, with the time
of each restore step. Throughput is the database size divided by the time. Writes
bench/results/backup.json and bench/results/backup.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import yaml
from pgvector.psycopg import register_vector

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import engine_description
from verify.synthetic import clustered_vectors

RESULTS = ROOT / "bench" / "results"
# Names and ports of its own, so that it never meets test_backup.py's stacks.
STACK, TARGET = "benchbak", "benchbakr"
MB = 1024 * 1024
MESSAGE_TEXT = (
    "agent remembers the user asked about deployment schedules vector search latency replicas "
    "backup window pricing onboarding discord thread summary follow up tomorrow morning the "
    "release notes mention a regression in the embedding pipeline please check the logs"
)
WORDS = MESSAGE_TEXT.split()


def stack_file(project: Path, stack: str, port_base: int) -> None:
    config: dict[str, Any] = {
        "elizadb:replicas": 1,
        "elizadb:network": {
            "primaryPort": port_base,
            "replicaPortBase": port_base + 1,
            "poolerPort": port_base + 9,
        },
        "elizadb:resources": {"memory": "2g", "shmSize": "1g"},
        "elizadb:postgres": {"parameters": {"maintenance_work_mem": "512MB"}},
        # The schedule stays out of the way: one full at start (an empty database), then none.
        "elizadb:backup": {"retentionFull": 4, "fullEvery": "7d", "incrEvery": "1d"},
    }
    (project / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))


class Cli:
    def __init__(self, project: Path) -> None:
        self.env = {
            **os.environ,
            "ELIZADB_PROJECT_DIR": str(project),
            "ELIZADB_STATE_DIR": str(project / "state"),
        }
        self.project = project

    def run(self, *args: str) -> tuple[str, float]:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "elizadb", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - started
        sys.stderr.write(f"$ elizadb {' '.join(args)}  ({seconds:.1f}s, exit {done.returncode})\n")
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"elizadb {' '.join(args)} failed")
        return done.stdout, seconds

    def superuser(self, stack: str, database: str = "eliza") -> str:
        out, _ = self.run("outputs", "--json", "--show-secrets", "--stack", stack)
        outputs = json.loads(out)
        rel = outputs["caCertPath"]
        uri = outputs["connections"]["superuser"].replace(
            f"sslrootcert={rel}", f"sslrootcert={self.project / rel}"
        )
        return uri.replace("/postgres?", f"/{database}?")


def load(uri: str, rows: int) -> dict[str, Any]:
    """`rows` memories by binary COPY, indexes rebuilt afterwards (as a bulk load would)."""
    started = time.monotonic()
    with psycopg.connect(uri, autocommit=True) as conn:
        register_vector(conn)
        users = [uuid.uuid4() for _ in range(40)]
        agents = users[:4]
        rooms = [uuid.uuid4() for _ in range(120)]
        with conn.cursor() as cur:
            for u in users:
                cur.execute(
                    'INSERT INTO accounts ("id", "name", "email") VALUES (%s, %s, %s)',
                    (u, f"user {u.hex[:6]}", f"{u.hex[:8]}@bench.test"),
                )
            for r in rooms:
                cur.execute('INSERT INTO rooms ("id") VALUES (%s)', (r,))
        conn.execute("DROP INDEX IF EXISTS idx_memories_embedding, idx_memories_embedding_l2")
        vectors = clustered_vectors(rows, 1536, seed=20261126, topics=200, latent_dims=48)
        now = dt.datetime.now(dt.UTC)
        with (
            conn.cursor() as cur,
            cur.copy(
                'COPY memories ("id", "type", "createdAt", "content", "embedding", "userId",'
                ' "agentId", "roomId") FROM STDIN WITH (FORMAT BINARY)'
            ) as copy,
        ):
            copy.set_types(
                ["uuid", "text", "timestamptz", "jsonb", "vector", "uuid", "uuid", "uuid"]
            )
            for i, vector in enumerate(vectors):
                words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(12 + i % 30))
                content = json.dumps(
                    {
                        "text": words,
                        "source": "discord",
                        "action": None,
                        "inReplyTo": str(uuid.uuid4()),
                    }
                )
                copy.write_row(
                    (
                        uuid.uuid4(),
                        "messages" if i % 5 else "facts",
                        now - dt.timedelta(minutes=(rows - i) * 90 * 24 * 60 // rows),
                        content,
                        vector,
                        users[i % len(users)],
                        agents[i % len(agents)],
                        rooms[(i // 25) % len(rooms)],
                    )
                )
        loaded = time.monotonic() - started
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(
            "CREATE INDEX idx_memories_embedding ON public.memories"
            ' USING hnsw ("embedding" public.vector_cosine_ops)'
        )
        conn.execute(
            "CREATE INDEX idx_memories_embedding_l2 ON public.memories"
            ' USING hnsw ("embedding" public.vector_l2_ops)'
        )
        conn.execute("VACUUM ANALYZE memories")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        table = conn.execute("SELECT pg_total_relation_size('memories')").fetchone()[0]
    return {
        "rows": rows,
        "load_seconds": round(loaded, 1),
        "index_seconds": round(time.monotonic() - started - loaded, 1),
        "database_bytes": int(size),
        "memories_bytes": int(table),
    }


def change(uri: str, rows: int) -> int:
    """About 5% of the rows: new memories and edited content (an incremental's worth)."""
    with psycopg.connect(uri, autocommit=True) as conn:
        register_vector(conn)
        vectors = clustered_vectors(rows // 40, 1536, seed=7, topics=200, latent_dims=48)
        with conn.cursor() as cur:
            cur.executemany(
                'INSERT INTO memories ("type", "content", "embedding") VALUES (%s, %s, %s)',
                [("messages", json.dumps({"text": f"new {i}"}), v) for i, v in enumerate(vectors)],
            )
        conn.execute(
            "UPDATE memories SET content = content || '{\"edited\": true}'"
            ' WHERE "id" IN (SELECT "id" FROM memories TABLESAMPLE SYSTEM (2))'
        )
        return int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])


def checksum(uri: str) -> tuple[int, str]:
    with psycopg.connect(uri) as conn:
        row = conn.execute(
            "SELECT count(*), md5(string_agg(id::text || content::text, ',' ORDER BY id)) FROM memories"
        ).fetchone()
    return int(row[0]), str(row[1])


def backup(cli: Cli, kind: str) -> dict[str, Any]:
    label, wall = cli.run("backup", "--stack", STACK, "--type", kind)
    listed = json.loads(cli.run("backups", "--stack", STACK, "--json")[0])
    made = next(b for b in listed["backups"] if b["label"] == label.strip())
    seconds = (
        dt.datetime.fromisoformat(made["stopped"]) - dt.datetime.fromisoformat(made["started"])
    ).total_seconds()
    return {
        "label": made["label"],
        "type": kind,
        "database_bytes": made["size"],
        "stored_bytes": made["repo_size"],
        "pgbackrest_seconds": seconds,
        "wall_seconds": round(wall, 2),
        "mb_per_s": round(made["size"] / MB / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=30000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for backup.json/.md")
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="elizadb-backup-bench-"))
    (project / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    stack_file(project, STACK, 44700)
    stack_file(project, TARGET, 44800)
    cli = Cli(project)
    for name in (STACK, TARGET):
        cli.run("down", "--delete-volumes", "--stack", name)
    cli.run("up", "--stack", STACK)
    uri = cli.superuser(STACK)
    dataset = load(uri, args.rows)
    sys.stderr.write(f"dataset: {json.dumps(dataset)}\n")

    fulls = [backup(cli, "full") for _ in range(args.runs)]
    incrs = []
    for _ in range(args.runs):
        change(uri, args.rows)
        incrs.append(backup(cli, "incr"))

    dump_file = project / "eliza.dump"
    _, dump_seconds = cli.run("dump", "--stack", STACK, "--out", str(dump_file))
    dump = {
        "bytes": dump_file.stat().st_size,
        "wall_seconds": round(dump_seconds, 2),
        "mb_per_s": round(dataset["database_bytes"] / MB / dump_seconds, 1),
    }
    dump_file.unlink()

    # Point in time: everything so far, then rows that must not come back.
    time.sleep(1.5)
    point = dt.datetime.now(dt.UTC)
    expected = checksum(uri)
    time.sleep(1.5)
    change(uri, args.rows)
    out, wall = cli.run(
        "restore",
        "--stack",
        STACK,
        "--to-time",
        point.isoformat(),
        "--into-stack",
        TARGET,
        "--json",
    )
    into = json.loads(out)
    into["wall_seconds"] = round(wall, 1)
    into["rows_match"] = checksum(cli.superuser(TARGET)) == expected
    cli.run("down", "--delete-volumes", "--stack", TARGET)

    expected = checksum(uri)
    out, wall = cli.run(
        "restore",
        "--stack",
        STACK,
        "--latest",
        "--in-place",
        "--yes-destroy-current-data",
        "--json",
    )
    in_place = json.loads(out)
    in_place["wall_seconds"] = round(wall, 1)
    in_place["rows_match"] = checksum(cli.superuser(STACK)) == expected
    cli.run("down", "--delete-volumes", "--stack", STACK)

    for report in (into, in_place):
        report["restore_mb_per_s"] = round(
            report["restored_bytes"] / MB / report["seconds"]["restore"], 1
        )
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_end": os.getloadavg(),
            "engine": engine_description(),
        },
        "settings": {
            "compress_type": "lz4",
            "process_max": 2,
            "block_incremental": True,
            "replicas": 1,
        },
        "dataset": dataset,
        "full_backups": fulls,
        "incremental_backups": incrs,
        "pg_dump": dump,
        "restore_into_new_stack_pitr": into,
        "restore_in_place_latest": in_place,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backup.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "backup.md").write_text(markdown(result))
    print(markdown(result))


def rewrite_markdown(folder: Path = RESULTS) -> None:
    """backup.md again from backup.json (after a change to the table only)."""
    (folder / "backup.md").write_text(markdown(json.loads((folder / "backup.json").read_text())))


def engine_line(engine: str | dict[str, str]) -> str:
    # Results before engines were recorded name only the socket (Podman's, then).
    if isinstance(engine, str):
        return f" Engine at {engine}."
    return f" Engine: {engine['name']} {engine['version']} (API {engine['api_version']})."


def markdown(r: dict[str, Any]) -> str:
    d = r["dataset"]
    med = statistics.median

    def row(name: str, samples: list[dict[str, Any]], key: str) -> str:
        values = [s[key] for s in samples]
        return f"| {name} | {med(values):.1f} | {min(values):.1f} | {max(values):.1f} |"

    fulls, incrs = r["full_backups"], r["incremental_backups"]
    into, inplace = r["restore_into_new_stack_pitr"], r["restore_in_place_latest"]
    lines = [
        "# Backup and restore benchmark",
        "",
        (
            f"{d['rows']} memories (1536-dim clustered embeddings, JSON content, both HNSW indexes): "
            f"database {d['database_bytes'] / MB:.0f} MB, memories table {d['memories_bytes'] / MB:.0f} MB. "
            f"pgBackRest 2.55, lz4, process-max 2, block incremental, repository on the same disk; "
            f"{r['machine']['cpus']} CPUs shared with other workloads (load average at the end "
            f"{r['machine']['load_average_at_end'][0]:.1f}); {len(fulls)} runs each. {r['when']}."
            f"{engine_line(r['machine']['engine'])}"
        ),
        "",
        "| measure | median | min | max |",
        "|---|---|---|---|",
        row("full backup, wall s (`elizadb backup --type full`)", fulls, "wall_seconds"),
        row("full backup, MB/s of database (wall)", fulls, "mb_per_s"),
        row(
            "full backup, pgBackRest's own s (start to stop, 1 s resolution)",
            fulls,
            "pgbackrest_seconds",
        ),
        row("full backup, stored MB", [{"v": f["stored_bytes"] / MB} for f in fulls], "v"),
        row("incremental backup (~5% rows changed), wall s", incrs, "wall_seconds"),
        row("incremental backup, stored MB", [{"v": i["stored_bytes"] / MB} for i in incrs], "v"),
        "",
        (
            "| restore | pgbackrest restore s | restore MB/s | WAL replay + promote s | "
            "redeploy s (job, replica clone, pooler, agent) | total s | rows match |"
        ),
        "|---|---|---|---|---|---|---|",
        (
            f"| point in time, into a new stack (+ repository copy {into['seconds']['copy-repository']:.1f} s) "
            f"| {into['seconds']['restore']:.1f} | {into['restore_mb_per_s']} | {into['seconds']['recovery']:.1f} "
            f"| {into['seconds']['redeploy']:.1f} | {into['seconds']['total']:.1f} | {into['rows_match']} |"
        ),
        (
            f"| latest, in place (delta) | {inplace['seconds']['restore']:.1f} | {inplace['restore_mb_per_s']} "
            f"| {inplace['seconds']['recovery']:.1f} | {inplace['seconds']['redeploy']:.1f} "
            f"| {inplace['seconds']['total']:.1f} | {inplace['rows_match']} |"
        ),
        "",
        (
            f"`pg_dump -Fc`: {r['pg_dump']['bytes'] / MB:.0f} MB file in {r['pg_dump']['wall_seconds']:.1f} s "
            f"({r['pg_dump']['mb_per_s']} MB/s of database)."
        ),
        "Totals include the full backup of the new timeline that every restore ends with.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
