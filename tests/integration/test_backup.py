"""Backups, restores and maintenance against real containers (issue 5, items 1, 2 and 7), through
the `elizadb` command itself, on a stack with one replica and a 20-second incremental schedule.

The drill: marked memories are written in batches (one commit per row, embeddings with the
structure of real ones); a time T is noted between two batches with a second of quiet on either
side; the stack is restored to T; the restored rows must be exactly the ones committed before T,
compared by checksum. Restores run into a new stack, then in place (latest, then to a point in
time), and the replicas must clone the restored primary and stream from it again.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from pgvector.psycopg import register_vector

from elizadb.local import patroni
from elizadb.local.apply import Applier
from infra.settings import StackSettings
from infra.topology import topology
from tests.integration.stacks import DeployedStack, deployed_stack, progress, stack_settings
from verify.synthetic import clustered_vectors

pytestmark = pytest.mark.integration
STACK, PORT_BASE = "itbak", 45500
TARGET, TARGET_PORT_BASE = "itbakr", 45600
PATRONI, PATRONI_PORT_BASE = "itbakp", 45700
REPO = Path(__file__).resolve().parents[2]
SCHEDULE = {"retentionFull": 2, "fullEvery": "1h", "incrEvery": "20s"}


# -- helpers ---------------------------------------------------------------------------------
def write_stack_file(project: Path, settings: StackSettings) -> None:
    """Pulumi.<stack>.yaml with exactly these settings, for the `elizadb` command."""
    values = settings.model_dump(mode="json", by_alias=True, exclude={"stack"}, exclude_none=True)
    config = {f"elizadb:{key}": value for key, value in values.items()}
    (project / f"Pulumi.{settings.stack}.yaml").write_text(yaml.safe_dump({"config": config}))


def elizadb(project: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ELIZADB_PROJECT_DIR": str(project),
        "ELIZADB_STATE_DIR": str(project / "state"),
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "elizadb", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    sys.stderr.write(
        f"  [elizadb {' '.join(args)}] exit {result.returncode} in "
        f"{time.monotonic() - started:.1f}s\n"
    )
    assert result.returncode == 0, f"elizadb {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result


def superuser(stack: DeployedStack, database: str = "eliza") -> psycopg.Connection[Any]:
    uri = stack.connections["superuser"].replace("/postgres?", f"/{database}?")
    conn = psycopg.connect(uri, autocommit=True)
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        register_vector(conn)
    return conn


def write_batch(stack: DeployedStack, batch: str, rows: int, seed: int) -> None:
    """`rows` marked memories, one commit each, through the superuser (RLS does not apply)."""
    vectors = clustered_vectors(rows, 1536, seed=seed)
    with superuser(stack) as conn:
        for i, vector in enumerate(vectors):
            conn.execute(
                'INSERT INTO memories ("type", "content", "embedding") VALUES (%s, %s, %s)',
                (
                    "drill",
                    json.dumps({"batch": batch, "seq": i, "text": f"drill {batch} {i}"}),
                    vector,
                ),
            )


CHECKSUM = (
    "SELECT count(*), coalesce(md5(string_agg("
    "  id::text || '|' || content::text || '|' || embedding::text, ',' ORDER BY id)), '')"
    " FROM memories WHERE type = 'drill' AND content->>'batch' = ANY(%s)"
)


def checksum(stack: DeployedStack, batches: list[str], database: str = "eliza") -> tuple[int, str]:
    with superuser(stack, database) as conn:
        row = conn.execute(CHECKSUM, (batches,)).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def batches_present(stack: DeployedStack) -> dict[str, int]:
    with superuser(stack) as conn:
        rows = conn.execute(
            "SELECT content->>'batch', count(*) FROM memories WHERE type = 'drill' GROUP BY 1"
        ).fetchall()
    return {str(b): int(n) for b, n in rows}


def catalog(project: Path, stack: str) -> dict[str, Any]:
    return json.loads(elizadb(project, "backups", "--stack", stack, "--json").stdout)


def wait_streaming(
    stack: DeployedStack, replicas: int, timeout_s: float = 120
) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout_s
    rows: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        with superuser(stack, "postgres") as conn:
            rows = conn.execute(
                "SELECT application_name, state FROM pg_stat_replication ORDER BY 1"
            ).fetchall()
        if len(rows) == replicas and all(state == "streaming" for _, state in rows):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"replicas not streaming after {timeout_s}s: {rows}")


def timeline(stack: DeployedStack) -> int:
    with superuser(stack, "postgres") as conn:
        row = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()
    assert row is not None
    return int(row[0])


def quiet_point() -> dt.datetime:
    """A time with a second of no commits on either side (the caller writes nothing meanwhile)."""
    time.sleep(1.0)
    point = dt.datetime.now(dt.UTC)
    time.sleep(1.0)
    return point


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backup")


@pytest.fixture(scope="module")
def stack(project: Path) -> Iterator[DeployedStack]:
    with deployed_stack(project, STACK, PORT_BASE, replicas=1, backup=SCHEDULE) as handle:
        write_stack_file(project, handle.settings)
        write_stack_file(project, stack_settings(TARGET, TARGET_PORT_BASE, replicas=1))
        yield handle


# -- 1. backups ------------------------------------------------------------------------------
def test_wal_archiving_works_on_the_primary_only(stack: DeployedStack) -> None:
    result = stack.client.api.exec_create(
        f"elizadb-{STACK}-backup-agent", ["elizadb-backup", "check"]
    )
    out = stack.client.api.exec_start(result["Id"]).decode()
    assert stack.client.api.exec_inspect(result["Id"])["ExitCode"] == 0, out
    assert "successfully archived" in out
    with superuser(stack, "postgres") as conn:
        archived, last_archived, last_failed = conn.execute(
            "SELECT archived_count, last_archived_time, last_failed_time FROM pg_stat_archiver"
        ).fetchone()
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings"
                " WHERE name IN ('archive_mode', 'archive_command')"
            ).fetchall()
        )
    assert archived > 0
    # Failures happen only before the agent created the stanza, never after.
    assert last_failed is None or last_archived > last_failed
    assert settings == {
        "archive_mode": "on",
        "archive_command": "pgbackrest --stanza=elizadb archive-push %p",
    }
    # Same settings on the standby, but archive_mode = on archives only while primary.
    with psycopg.connect(stack.connections["readonlyReplicas"][0]) as conn:
        assert conn.execute("SELECT archived_count FROM pg_stat_archiver").fetchone() == (0,)


def test_the_schedule_takes_a_full_then_incrementals_by_itself(
    stack: DeployedStack, project: Path
) -> None:
    deadline = time.monotonic() + 120
    types: list[str] = []
    while time.monotonic() < deadline:
        types = [b["type"] for b in catalog(project, STACK)["backups"]]
        if "full" in types and "incr" in types:
            break
        time.sleep(3)
    assert types[:1] == ["full"] and "incr" in types, f"scheduled backups seen: {types}"
    status = catalog(project, STACK)["schedule"]
    assert status["last_result"] == "ok", status


def test_full_and_incremental_backups_are_listed_with_sizes_times_and_wal_ranges(
    stack: DeployedStack, project: Path
) -> None:
    write_batch(stack, "A", 60, seed=1)
    full_label = elizadb(project, "backup", "--stack", STACK, "--type", "full").stdout.strip()
    write_batch(stack, "A2", 20, seed=2)
    incr_label = elizadb(project, "backup", "--stack", STACK, "--type", "incr").stdout.strip()
    listed = {b["label"]: b for b in catalog(project, STACK)["backups"]}
    full, incr = listed[full_label], listed[incr_label]
    assert full["type"] == "full" and incr["type"] == "incr"
    assert incr_label.startswith(full_label + "_") and incr["prior"] is not None
    for b in (full, incr):
        assert b["size"] > 10_000_000 and b["repo_size"] > 0
        assert b["wal_start"] <= b["wal_stop"] and len(b["wal_start"]) == 24
        assert b["started"] <= b["stopped"]
    assert incr["repo_size"] < full["repo_size"] / 2, "an incremental stores only what changed"
    table = elizadb(project, "backups", "--stack", STACK).stdout
    assert full_label in table and incr_label in table and "WAL START" in table


def test_retention_expires_the_oldest_full_and_what_depends_on_it(
    stack: DeployedStack, project: Path
) -> None:
    before = catalog(project, STACK)
    oldest = next(b["label"] for b in before["backups"] if b["type"] == "full")
    made = [
        elizadb(project, "backup", "--stack", STACK, "--type", "full").stdout.strip()
        for _ in range(2)
    ]
    after = catalog(project, STACK)
    fulls = [b["label"] for b in after["backups"] if b["type"] == "full"]
    assert fulls == made, f"retentionFull 2 keeps the two newest fulls; found {fulls}"
    assert not [b for b in after["backups"] if b["label"].startswith(oldest)]
    assert after["archive"]["min"] > before["archive"]["min"], "WAL only the expired needed is gone"


def test_pg_dump_export_restores_into_a_scratch_database(
    stack: DeployedStack, project: Path
) -> None:
    out = project / "eliza.dump"
    elizadb(project, "dump", "--stack", STACK, "--out", str(out))
    assert out.read_bytes()[:5] == b"PGDMP"
    primary = stack.client.containers.get(f"elizadb-{STACK}-primary")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(out, arcname="eliza.dump")
    primary.put_archive("/tmp", buffer.getvalue())
    try:
        code, logs = primary.exec_run(
            [
                "sh",
                "-c",
                "createdb scratch && pg_restore --exit-on-error -d scratch /tmp/eliza.dump",
            ],
            user="postgres",
        )
        assert code == 0, logs.decode()
        assert checksum(stack, ["A", "A2"], "scratch") == checksum(stack, ["A", "A2"])
        with superuser(stack, "scratch") as conn:
            assert conn.execute("SELECT count(*) FROM pg_policies").fetchone()[0] > 0
    finally:
        primary.exec_run(
            ["sh", "-c", "dropdb --if-exists scratch; rm -f /tmp/eliza.dump"], user="postgres"
        )


# -- 2. restores -----------------------------------------------------------------------------
def test_point_in_time_restore_into_a_new_stack_has_exactly_the_rows_committed_before(
    stack: DeployedStack, project: Path
) -> None:
    Applier(stack.client, TARGET, progress).down(delete_volumes=True)  # a leftover of a killed run
    write_batch(stack, "B", 40, seed=3)
    point = quiet_point()
    write_batch(stack, "C", 40, seed=4)
    expected = checksum(stack, ["A", "A2", "B"])
    assert expected[0] == 120
    target = DeployedStack(
        stack_settings(TARGET, TARGET_PORT_BASE, replicas=1), {}, stack.client, project
    )
    try:
        elizadb(
            project,
            "restore",
            "--stack",
            STACK,
            "--to-time",
            point.isoformat(),
            "--into-stack",
            TARGET,
        )
        target.up()  # no changes: loads the new stack's outputs
        assert batches_present(target) == {"A": 60, "A2": 20, "B": 40}
        assert checksum(target, ["A", "A2", "B"]) == expected
        assert timeline(target) > timeline(stack), (
            "the restored primary promoted onto a new timeline"
        )
        wait_streaming(target, 1)
        restored = catalog(project, TARGET)
        assert restored["backups"][-1]["type"] == "full", "a first backup of the new timeline"
        with superuser(target, "postgres") as conn:
            auto = conn.execute(
                "SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%auto.conf'"
                " AND name LIKE 'recovery_target%'"
            ).fetchone()
        assert auto == (0,), "the recovery target must not outlive the restore"
        # The source goes on unharmed.
        assert batches_present(stack) == {"A": 60, "A2": 20, "B": 40, "C": 40}
    finally:
        target.down(delete_volumes=True)


# Once in CI for time: Patroni's bootstrap from a restore, which no engine difference touches.
@pytest.mark.once
def test_a_restore_into_a_new_patroni_stack_takes_the_builtin_stacks_rows_along(
    stack: DeployedStack, project: Path
) -> None:
    """The way from a builtin stack to a Patroni one beside it (on other hosts, say): Patroni
    bootstraps the new cluster from the builtin stack's backup and its replica clones it."""
    settings = stack_settings(PATRONI, PATRONI_PORT_BASE, replicas=1, ha={"engine": "patroni"})
    Applier(stack.client, PATRONI, progress).down(delete_volumes=True)  # a killed run's leftover
    write_stack_file(project, settings)
    expected = checksum(stack, list(batches_present(stack)))
    target = DeployedStack(settings, {}, stack.client, project)
    try:
        elizadb(project, "restore", "--stack", STACK, "--latest", "--into-stack", PATRONI)
        target.up()  # no changes: loads the new stack's outputs
        assert checksum(target, list(batches_present(stack))) == expected
        members = patroni.members(stack.client, topology(settings))
        assert sorted((m.role, m.state) for m in members) == [
            ("Leader", "running"),
            ("Replica", "streaming"),
        ], members
        assert catalog(project, PATRONI)["backups"][-1]["type"] == "full"
    finally:
        target.down(delete_volumes=True)


def test_in_place_restore_latest_keeps_everything_and_replicas_clone_again(
    stack: DeployedStack, project: Path
) -> None:
    write_batch(stack, "D", 30, seed=5)
    expected = checksum(stack, ["A", "A2", "B", "C", "D"])
    before = timeline(stack)
    elizadb(
        project, "restore", "--stack", STACK, "--latest", "--in-place", "--yes-destroy-current-data"
    )
    stack.up()
    assert checksum(stack, ["A", "A2", "B", "C", "D"]) == expected
    assert timeline(stack) == before + 1
    assert wait_streaming(stack, 1) == [("elizadb_replica_1", "streaming")]
    replica_log = stack.client.containers.get(f"elizadb-{STACK}-replica-1").logs().decode()
    assert "empty data directory: cloning the primary" in replica_log
    with psycopg.connect(stack.connections["readonlyReplicas"][0]) as conn:
        deadline = time.monotonic() + 10
        while (
            conn.execute("SELECT count(*) FROM memories WHERE type = 'drill'").fetchone()[0]
            != expected[0]
        ):
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.2)


def test_in_place_restore_to_a_point_in_time(stack: DeployedStack, project: Path) -> None:
    write_batch(stack, "E", 30, seed=6)
    point = quiet_point()
    write_batch(stack, "F", 30, seed=7)
    keep = ["A", "A2", "B", "C", "D", "E"]
    expected = checksum(stack, keep)
    elizadb(
        project,
        "restore",
        "--stack",
        STACK,
        "--to-time",
        point.isoformat(),
        "--in-place",
        "--yes-destroy-current-data",
    )
    stack.up()
    assert batches_present(stack) == {"A": 60, "A2": 20, "B": 40, "C": 40, "D": 30, "E": 30}
    assert checksum(stack, keep) == expected
    wait_streaming(stack, 1)
    # and the stack keeps backing up on its new timeline: the restore takes a full backup there.
    # The agent's schedule (an incremental every 20 s) may add an incremental on the new
    # timeline before it, on top of the last full of the old one: pgBackRest restores that too.
    new_timeline = f"{timeline(stack):08X}"
    listed = catalog(project, STACK)["backups"]
    since = [b for b in listed if b["wal_start"][:8] == new_timeline]
    assert any(b["type"] == "full" for b in since), f"no full on timeline {new_timeline}: {listed}"


def test_a_target_before_the_oldest_backup_is_refused_and_nothing_stops(
    stack: DeployedStack, project: Path
) -> None:
    before = stack.container_identities()
    env = {
        **os.environ,
        "ELIZADB_PROJECT_DIR": str(project),
        "ELIZADB_STATE_DIR": str(project / "state"),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "elizadb",
            "restore",
            "--stack",
            STACK,
            "--to-time",
            "2001-01-01T00:00:00Z",
            "--in-place",
            "--yes-destroy-current-data",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "before the oldest backup ends" in result.stderr
    # Nothing stopped, recreated or restarted: every container of the stack has the id and
    # the start time it had before, and the running ones still run.
    assert stack.container_identities() == before
    running = {
        c.name
        for c in stack.client.containers.list(
            filters={"name": f"elizadb-{STACK}-"}, ignore_removed=True
        )
        if c.name.startswith(f"elizadb-{STACK}-")
    }
    assert {f"elizadb-{STACK}-primary", f"elizadb-{STACK}-replica-1"} <= running, running


# -- 7. maintenance --------------------------------------------------------------------------
def test_maintenance_vacuums_reindexes_reports_and_applies_retention(
    stack: DeployedStack, project: Path
) -> None:
    vectors = clustered_vectors(200, 1536, seed=8)
    with superuser(stack) as conn:
        for i, vector in enumerate(vectors):
            created = "now() - interval '400 days'" if i < 50 else "now()"
            conn.execute(
                f'INSERT INTO memories ("type", "content", "embedding", "createdAt")'
                f" VALUES ('aging', %s, %s, {created})",
                (json.dumps({"i": i}), vector),
            )
        conn.execute("DELETE FROM memories WHERE type = 'aging' AND (content->>'i')::int % 10 = 1")
    settings = stack.settings.model_copy(
        update={
            "maintenance": stack.settings.maintenance.model_copy(
                update={"memory_retention_days": 30}
            )
        }
    )
    write_stack_file(project, settings)
    try:
        report = json.loads(elizadb(project, "maintenance", "--stack", STACK, "--json").stdout)
    finally:
        write_stack_file(project, stack.settings)
    assert report["retention_days"] == 30
    assert report["memories_deleted"] == 45  # the 50 old ones, less the 5 deleted already
    memories = next(t for t in report["tables"] if t["table"] == "public.memories")
    assert memories["dead_rows"] > 0 and memories["dead_percent"] > 0
    assert "public.memories" in report["vacuumed"]
    rebuilt = {r["index"] for r in report["rebuilt"]}
    assert rebuilt == {"public.idx_memories_embedding", "public.idx_memories_embedding_l2"}
    assert all(r["size_after"] > 0 for r in report["rebuilt"])
    usage = {i["index"]: i for i in report["indexes"]}
    assert usage["public.memories_pkey"]["unique"] and not usage["public.memories_pkey"]["unused"]
    with superuser(stack) as conn:
        left = conn.execute(
            "SELECT count(*) FROM memories"
            " WHERE type = 'aging' AND \"createdAt\" < now() - interval '30 days'"
        ).fetchone()
        assert left == (0,)
        invalid = conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()
        assert invalid == (0,), "REINDEX CONCURRENTLY left an invalid index"
    table = elizadb(project, "maintenance", "--stack", STACK, "--no-reindex").stdout
    assert "retention: off" in table and "index usage" in table and "DEAD %" in table
