"""The verify suite against a healthy deployed stack: every check passes and leaves nothing
behind; in read-only mode the checks that write are skipped and nothing at all is written; the
`elizadb verify` command reports the same results as a table, JSON and JUnit XML, with the exit
codes of the issue (0 all passed, 1 a check failed, 2 usage error)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import psycopg
import pytest
from psycopg import sql

from tests.integration.stacks import DeployedStack, deployed_stack
from verify.checks import ALL_CHECKS
from verify.report import render_table
from verify.suite import load_outputs, run_checks

pytestmark = [pytest.mark.integration, pytest.mark.once]
STACK = "vfy"
PORT_BASE = 42500
REPO = Path(__file__).resolve().parents[2]
# The checks of this stack's schema profile (the default, eliza-0.1) and HA engine (builtin);
# the eliza-1 ones are tests/integration/test_eliza_plugin_sql.py's, the Patroni ones
# tests/integration/test_ha_checks.py's.
PROFILE_CHECKS = [c for c in ALL_CHECKS if "eliza-0.1" in c.profiles and "builtin" in c.engines]
WRITING_CHECKS = {c.id for c in PROFILE_CHECKS if c.writes}
APP_TABLES = (
    "accounts",
    "rooms",
    "memories",
    "goals",
    "participants",
    "relationships",
    "logs",
    "cache",
    "knowledge",
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(tmp_path_factory.mktemp("vfy"), STACK, PORT_BASE) as handle:
        yield handle


def _superuser(stack: DeployedStack, node: dict[str, Any], db: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        stack.connections["superuser"],
        dbname=db,
        host=node["host"],
        port=node["port"],
        target_session_attrs="any",
        autocommit=True,
    )


def footprint(stack: DeployedStack) -> dict[str, Any]:
    """Everything the suite could leave behind: the rows of every table (their count and a
    digest of their contents, so that a changed or replaced row shows as well as an added one),
    the ledger, files in the backup volume and in each node's /tmp."""
    seen: dict[str, Any] = {}
    with _superuser(stack, stack.outputs["primary"], "eliza") as conn:
        for table in APP_TABLES:
            query = sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
                " FROM public.{} AS t"
            ).format(sql.Identifier(table))
            seen[table] = conn.execute(query).fetchone()
        seen["ledger"] = conn.execute(
            "SELECT * FROM elizadb.schema_migrations ORDER BY 1"
        ).fetchall()
        seen["backup volume"] = sorted(
            r[0] for r in conn.execute("SELECT pg_ls_dir('/var/lib/pgbackrest')").fetchall()
        )
    for node in [stack.outputs["primary"], *stack.outputs["replicas"]]:
        with _superuser(stack, node, "postgres") as conn:
            seen[f"{node['name']} /tmp"] = sorted(
                r[0]
                for r in conn.execute("SELECT pg_ls_dir('/tmp')").fetchall()
                if r[0].startswith("elizadb-verify")
            )
    return seen


def transaction_ids_assigned(stack: DeployedStack) -> int:
    """The next transaction id: it moves only when some session writes."""
    with _superuser(stack, stack.outputs["primary"], "postgres") as conn:
        row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
        assert row is not None
        return int(row[0])


def test_read_only_run_passes_every_check_that_does_not_write_and_writes_nothing(
    stack: DeployedStack,
) -> None:
    before, xid_before = footprint(stack), transaction_ids_assigned(stack)
    results = run_checks(load_outputs(stack.outputs_file()), read_only=True)
    table = render_table(results)
    # user_isolation reads only in read-only mode, and a fresh stack has no rows to read.
    assert {r.id for r in results if r.status == "skip"} == WRITING_CHECKS | {
        "security.user_isolation"
    }, table
    assert all(r.status == "pass" for r in results if r.status != "skip"), table
    assert len(results) == len(PROFILE_CHECKS)
    assert footprint(stack) == before
    assert transaction_ids_assigned(stack) == xid_before, "a transaction id was assigned"


@contextmanager
def a_users_rows(stack: DeployedStack) -> Iterator[None]:
    """An account with a room and a memory that exist before the run, so that the digests
    have contents to compare (on empty tables they would prove nothing); removed afterwards."""
    account, room = uuid.uuid4(), uuid.uuid4()
    with _superuser(stack, stack.outputs["primary"], "eliza") as conn:
        conn.execute(
            "INSERT INTO public.accounts (id, name, email) VALUES (%s, 'kept', %s)",
            (account, f"{account}@footprint.test"),
        )
        conn.execute("INSERT INTO public.rooms (id) VALUES (%s)", (room,))
        conn.execute(
            'INSERT INTO public.memories (type, content, "userId", "roomId")'
            " VALUES ('footprint', '{\"text\": \"kept\"}', %s, %s)",
            (account, room),
        )
    try:
        yield
    finally:
        with _superuser(stack, stack.outputs["primary"], "eliza") as conn:
            conn.execute('DELETE FROM public.memories WHERE "userId" = %s', (account,))
            conn.execute("DELETE FROM public.rooms WHERE id = %s", (room,))
            conn.execute("DELETE FROM public.accounts WHERE id = %s", (account,))


def test_full_run_passes_every_check_and_leaves_nothing_behind(stack: DeployedStack) -> None:
    with a_users_rows(stack):
        before = footprint(stack)
        results = run_checks(load_outputs(stack.outputs_file()))
        after = footprint(stack)
    table = render_table(results)
    assert [r.status for r in results] == ["pass"] * len(PROFILE_CHECKS), table
    assert all(r.seconds >= 0 and r.summary for r in results)
    assert before["memories"][0] >= 1 and before["accounts"][0] >= 1, before
    assert after == before


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "elizadb", "verify", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_reports_json_and_junit_and_exits_0(stack: DeployedStack, tmp_path: Path) -> None:
    junit = tmp_path / "verify.xml"
    done = _cli(
        "--outputs",
        str(stack.outputs_file()),
        "--read-only",
        "--only",
        "schema",
        "--only",
        "tls",
        "--json",
        "--junit-xml",
        str(junit),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    ids = [r["id"] for r in report["results"]]
    assert ids and all(i.startswith(("schema.", "tls.")) for i in ids)
    assert report["totals"]["failed"] == 0 and report["exitCode"] == 0
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == str(len(ids)) and suite.get("failures") == "0"


def test_cli_exits_1_when_a_check_fails_and_2_on_a_usage_error(
    stack: DeployedStack,
    tmp_path: Path,
) -> None:
    broken = json.loads(stack.outputs_file().read_text())
    broken["pooler"]["port"] = PORT_BASE + 8  # nothing listens there
    broken["connections"]["agentPooler"] = broken["connections"]["agentPooler"].replace(
        f":{PORT_BASE + 9}/", f":{PORT_BASE + 8}/"
    )
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    done = _cli("--outputs", str(path), "--only", "pooler.reachable")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL    pooler.reachable" in done.stdout and "fix:" in done.stdout

    done = _cli("--outputs", str(stack.outputs_file()), "--only", "no.such.check")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no check id starts with" in done.stderr
