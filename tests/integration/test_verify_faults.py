"""Proof of power: every check of the verify suite catches the fault it exists for.

One stack is deployed for the module. Each test breaks it in exactly one way, runs the whole
suite, and asserts the exact set of checks that fail (and of those that skip because a target
became unreachable — each naming the check that reports why), that each failure says what is
wrong and what to do, then repairs the stack and asserts that every check passes again.

Every fault has one shape (`caught`): a context manager breaks the stack on entry and repairs
it on exit, whatever the assertions did; faults made by SQL alone are rows of SQL_FAULTS, pooler
faults rows of POOLER_FAULTS.

Measured checks have real faults too: a client link throttled to 16 kbit/s (health.latency), a
data volume 95 % full (health.disk), a slow policy on every vector search (vector.latency). Their
threshold logic is proved apart, by thresholds the healthy stack cannot meet: the stack is not
touched there, the threshold logic is.
"""

from __future__ import annotations

import copy
import datetime
import io
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg import sql as pg_sql

from elizadb.local.state import StateFile
from infra.components.common import stack_filter
from tests.integration.stacks import DeployedStack, deployed_stack, run_to_end
from verify.model import CheckResult
from verify.report import render_table
from verify.suite import load_outputs, run_checks
from verify.thresholds import Thresholds
from verify.tls_probe import handshake

pytestmark = pytest.mark.integration
STACK = "vfyf"
PORT_BASE = 43500
PREFIX = f"elizadb-{STACK}"
PRIMARY, REPLICA_1, REPLICA_2 = f"{PREFIX}-primary", f"{PREFIX}-replica-1", f"{PREFIX}-replica-2"
POOLER = f"{PREFIX}-pgbouncer"
# A small vector probe keeps each run near a second; recall still means something. The two
# latency thresholds are loose here: this module is about faults, on a machine that may be busy
# with other tests; test_threshold_is_enforced proves that both are enforced.
FAST = Thresholds(vector_rows=200, vector_queries=10, select1_max_ms=500.0, vector_p95_max_ms=500.0)
# Checks that look at a replica, and skip (see health.reachable) when it cannot be reached.
REPLICA_DEPENDENTS = {
    "health.role",
    "health.latency",
    "health.connections",
    "health.disk",
    "replication.lag",
    "replication.read_only",
    "tls.hba_auth",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(tmp_path_factory.mktemp("vfyf"), STACK, PORT_BASE) as handle:
        expect_healthy(handle)
        yield handle


# ---- running the suite -------------------------------------------------------------------------


def verify(
    stack: DeployedStack,
    thresholds: Thresholds = FAST,
    outputs: dict[str, Any] | None = None,
    only: tuple[str, ...] = (),
) -> dict[str, CheckResult]:
    results = run_checks(load_outputs(outputs or stack.outputs), thresholds=thresholds, only=only)
    return {r.id: r for r in results}


def expect(
    results: dict[str, CheckResult],
    fails: set[str],
    skips: set[str] | frozenset[str] = frozenset(),
    says: dict[str, str] | None = None,
) -> None:
    """Exactly `fails` fail and `skips` skip; every failure has a summary, a reason and a fix;
    `says[id]` appears in that check's summary or reason."""
    table = render_table(list(results.values()))
    assert {i for i, r in results.items() if r.status == "fail"} == fails, table
    assert {i for i, r in results.items() if r.status == "skip"} == skips, table
    for check_id in fails:
        r = results[check_id]
        assert r.summary and r.reason and r.fix, table
    for check_id in skips:
        assert "see " in results[check_id].summary, table  # names the root cause
    for check_id, text in (says or {}).items():
        assert text in results[check_id].summary + results[check_id].reason, (check_id, text, table)


def expect_healthy(stack: DeployedStack, only: tuple[str, ...] = (), timeout: float = 60.0) -> None:
    """Every check (of `only`) passes, within `timeout`: a restarted replica needs a moment to
    stream again."""
    deadline = time.monotonic() + timeout
    while True:
        results = verify(stack, only=only)
        if all(r.status == "pass" for r in results.values()):
            return
        if time.monotonic() > deadline:
            pytest.fail(
                "the stack did not become healthy again:\n" + render_table(list(results.values()))
            )
        time.sleep(1.0)


def expect_repaired(stack: DeployedStack, results: dict[str, CheckResult]) -> None:
    """The checks that failed or skipped under the fault pass again. The others passed under
    the fault and the repair does not touch them; the next test's full run, and the last test
    of the module, see every check pass."""
    touched = tuple(i for i, r in results.items() if r.status != "pass")
    expect_healthy(stack, only=touched)


# ---- breaking things ---------------------------------------------------------------------------


def endpoint(stack: DeployedStack, name: str) -> dict[str, Any]:
    nodes = [stack.outputs["primary"], *stack.outputs["replicas"]]
    return next(n for n in nodes if n["name"] == name)


def sql(
    stack: DeployedStack, query: str, params: Any = None, *, node: str = PRIMARY, db: str = "eliza"
) -> list[tuple[Any, ...]]:
    """Run `query` as the superuser on `node`, over the outputs' TLS connection string (pinned
    to that node: the string lists every node for libpq to pick the read-write one)."""
    where = endpoint(stack, node)
    with psycopg.connect(
        stack.connections["superuser"],
        dbname=db,
        host=where["host"],
        port=where["port"],
        target_session_attrs="any",
        autocommit=True,
    ) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def sh(stack: DeployedStack, container: str, script: str, user: str = "root") -> str:
    result = stack.client.containers.get(container).exec_run(["sh", "-c", script], user=user)
    assert result.exit_code == 0, result.output.decode(errors="replace")
    return result.output.decode()


def pgbouncer_admin(stack: DeployedStack, command: str) -> list[dict[str, Any]]:
    with psycopg.connect(
        stack.connections["poolerAdmin"], autocommit=True, cursor_factory=psycopg.ClientCursor
    ) as conn:
        cur = conn.execute(command)
        if not command.upper().startswith("SHOW"):
            return []  # RELOAD and co. answer with a command tag only
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def reload_postgres(stack: DeployedStack, container: str) -> None:
    """SIGHUP through the local socket: works even when TLS to the node is broken."""
    sh(
        stack,
        container,
        "psql -X -q -h /run/postgresql -d postgres -c 'SELECT pg_reload_conf()'",
        user="postgres",
    )
    time.sleep(0.5)  # the postmaster applies it asynchronously


@contextmanager
def preserved(stack: DeployedStack, container: str, path: str) -> Iterator[None]:
    """A file in a container, restored byte for byte (and mode) when the block ends."""
    backup = f"/tmp/elizadb-verify-test{path.replace('/', '_')}"
    sh(stack, container, f"cp -p {path} {backup}")
    try:
        yield
    finally:
        sh(stack, container, f"cp -p {backup} {path} && rm -f {backup}")


@contextmanager
def edited(stack: DeployedStack, container: str, path: str, sed: str) -> Iterator[None]:
    """`sed -i` on a file in a container, undone when the block ends."""
    with preserved(stack, container, path):
        sh(stack, container, f"sed -i {sed!r} {path}")
        yield


def wait_for(what: str, predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


# ---- one shape for every fault -----------------------------------------------------------------


def caught(
    stack: DeployedStack,
    fault: AbstractContextManager[Any],
    fails: set[str],
    skips: set[str] | frozenset[str] = frozenset(),
    says: dict[str, str] | None = None,
    outputs: dict[str, Any] | None = None,
    thresholds: Thresholds = FAST,
) -> dict[str, CheckResult]:
    """Break the stack with `fault` (entering breaks it, leaving repairs it, also when an
    assertion fails), run the whole suite under it and expect exactly `fails` and `skips`, then
    see the checks it touched pass again."""
    with fault:
        results = verify(stack, thresholds, outputs=outputs)
        expect(results, fails, skips, says)
    expect_repaired(stack, results)
    return results


@contextmanager
def sql_fault(
    stack: DeployedStack,
    breaks: Sequence[str],
    repairs: Sequence[str],
    node: str = PRIMARY,
    db: str = "eliza",
) -> Iterator[None]:
    for statement in breaks:
        sql(stack, statement, node=node, db=db)
    try:
        yield
    finally:
        for statement in repairs:
            sql(stack, statement, node=node, db=db)


@dataclass(frozen=True)
class SqlFault:
    """A fault made and undone by SQL on the primary, and what the suite must say about it."""

    name: str
    breaks: tuple[str, ...]
    repairs: tuple[str, ...]
    fails: frozenset[str]
    says: dict[str, str]
    skips: frozenset[str] = frozenset()
    db: str = "eliza"


SQL_FAULTS = [
    # -- schema
    SqlFault(
        "dropped_extension_fails_schema_extensions",
        ("DROP EXTENSION fuzzystrmatch",),
        ("CREATE EXTENSION IF NOT EXISTS fuzzystrmatch WITH SCHEMA public",),
        frozenset({"schema.extensions"}),
        {"schema.extensions": "fuzzystrmatch is not installed"},
    ),
    SqlFault(
        "renamed_table_fails_schema_tables_and_its_details_skip",
        ("ALTER TABLE public.cache RENAME TO cache_renamed",),
        ("ALTER TABLE public.cache_renamed RENAME TO cache",),
        frozenset({"schema.tables"}),
        {"schema.tables": "public.cache is missing"},
        skips=frozenset(
            {"schema.columns", "schema.defaults", "schema.constraints", "schema.indexes"}
        ),
    ),
    SqlFault(
        "dropped_column_fails_schema_columns",
        ("ALTER TABLE public.participants DROP COLUMN last_message_read",),
        ("ALTER TABLE public.participants ADD COLUMN last_message_read text",),
        frozenset({"schema.columns"}),
        {"schema.columns": "participants.last_message_read is missing"},
    ),
    SqlFault(
        "dropped_default_fails_schema_defaults",
        ("ALTER TABLE public.accounts ALTER COLUMN details DROP DEFAULT",),
        ("ALTER TABLE public.accounts ALTER COLUMN details SET DEFAULT '{}'::jsonb",),
        frozenset({"schema.defaults"}),
        {"schema.defaults": "accounts.details defaults to nothing"},
    ),
    SqlFault(
        "dropped_check_constraint_fails_schema_constraints",
        ("ALTER TABLE public.knowledge DROP CONSTRAINT knowledge_shared_xor_agent",),
        (
            (
                "ALTER TABLE public.knowledge ADD CONSTRAINT knowledge_shared_xor_agent CHECK ("
                '("isShared" AND "agentId" IS NULL) OR (NOT "isShared" AND "agentId" IS NOT NULL))'
            ),
        ),
        frozenset({"schema.constraints"}),
        {"schema.constraints": "knowledge: missing constraint CHECK"},
    ),
    SqlFault(
        "dropped_hnsw_index_fails_schema_indexes_and_the_l2_plan",
        ("DROP INDEX public.idx_memories_embedding_l2",),
        (
            (
                "CREATE INDEX idx_memories_embedding_l2 ON public.memories"
                " USING hnsw (embedding public.vector_l2_ops)"
            ),
        ),
        frozenset({"schema.indexes", "vector.hnsw_plan"}),
        {
            "schema.indexes": "idx_memories_embedding_l2 on memories is missing",
            "vector.hnsw_plan": "<->",
        },
    ),
    # ALTER ... TYPE also resets the column's storage to the type's default (EXTENDED): a real
    # second fault that schema.columns reports.
    SqlFault(
        "changed_vector_dimension_fails_dimension_storage_and_the_probe",
        ("ALTER TABLE public.memories ALTER COLUMN embedding TYPE public.vector(768)",),
        (
            "ALTER TABLE public.memories ALTER COLUMN embedding TYPE public.vector(1536)",
            "ALTER TABLE public.memories ALTER COLUMN embedding SET STORAGE PLAIN",
        ),
        frozenset(
            {
                "schema.vector_dimension",
                "schema.columns",
                "vector.hnsw_plan",
                "vector.recall",
                "vector.latency",
            }
        ),
        {
            "schema.vector_dimension": "vector(768)",
            "schema.columns": "storage e, expected p",
            "vector.recall": "expected 768 dimensions, not 1536",
        },
    ),
    SqlFault(
        "disabled_trigger_fails_schema_functions",
        ("ALTER TABLE public.memories DISABLE TRIGGER memories_sync_unique_flags",),
        ("ALTER TABLE public.memories ENABLE TRIGGER memories_sync_unique_flags",),
        frozenset({"schema.functions"}),
        {"schema.functions": "memories_sync_unique_flags"},
    ),
    # -- security
    SqlFault(
        "rls_switched_off_fails_rls_and_the_isolation_probe",
        ("ALTER TABLE public.memories DISABLE ROW LEVEL SECURITY",),
        ("ALTER TABLE public.memories ENABLE ROW LEVEL SECURITY",),
        frozenset({"security.rls", "security.user_isolation"}),
        {
            "security.rls": "memories: row level security is disabled",
            "security.user_isolation": "memories: user alice reads user bob's row",
        },
    ),
    # Not forcing RLS lets the owner bypass it; eliza_user is still isolated.
    SqlFault(
        "rls_not_forced_fails_only_the_rls_check",
        ("ALTER TABLE public.accounts NO FORCE ROW LEVEL SECURITY",),
        ("ALTER TABLE public.accounts FORCE ROW LEVEL SECURITY",),
        frozenset({"security.rls"}),
        {"security.rls": "accounts: row level security is not forced"},
    ),
    # RLS still on and forced, but eliza_user's policy now names another role: eliza_user
    # reads nothing, its own rows included.
    SqlFault(
        "rls_on_without_the_users_policy_fails_rls_and_the_isolation_probe",
        ("ALTER POLICY goals_isolation ON public.goals TO eliza_readonly",),
        ("ALTER POLICY goals_isolation ON public.goals TO eliza_user",),
        frozenset({"security.rls", "security.user_isolation"}),
        {
            "security.rls": "goals: no policy for eliza_user",
            "security.user_isolation": "goals: user alice cannot read her own row",
        },
    ),
    SqlFault(
        "permissive_policy_fails_the_isolation_probe",
        ("CREATE POLICY verify_leak ON public.goals FOR SELECT TO eliza_user USING (true)",),
        ("DROP POLICY verify_leak ON public.goals",),
        frozenset({"security.user_isolation"}),
        {"security.user_isolation": "goals: user alice reads user bob's row"},
    ),
    # Reading stays isolated; only the write branch of the probe can see this one.
    SqlFault(
        "permissive_insert_policy_fails_the_isolation_probe_on_writes",
        (
            (
                "CREATE POLICY verify_write ON public.memories FOR INSERT TO eliza_user"
                " WITH CHECK (true)"
            ),
        ),
        ("DROP POLICY verify_write ON public.memories",),
        frozenset({"security.user_isolation"}),
        {"security.user_isolation": "memories: user alice wrote a row as user bob"},
    ),
    # Through PUBLIC, every runtime role may now create objects: both checks must say so.
    SqlFault(
        "create_on_public_granted_to_public_fails_public_and_role_privileges",
        ("GRANT CREATE ON SCHEMA public TO PUBLIC",),
        ("REVOKE CREATE ON SCHEMA public FROM PUBLIC",),
        frozenset({"security.public_privileges", "security.role_privileges"}),
        {
            "security.public_privileges": "PUBLIC has schema public: CREATE",
            "security.role_privileges": "eliza_agent may CREATE in schema public",
        },
    ),
    SqlFault(
        "truncate_granted_to_agent_fails_role_privileges",
        ("GRANT TRUNCATE ON public.memories TO eliza_agent",),
        ("REVOKE TRUNCATE ON public.memories FROM eliza_agent",),
        frozenset({"security.role_privileges"}),
        {"security.role_privileges": "eliza_agent has TRUNCATE on memories"},
    ),
    # -- vector: ef_search 2 without iterative scans, an index scan stops after 2 candidates
    SqlFault(
        "iterative_scan_off_and_tiny_ef_search_fail_settings_and_recall",
        (
            "ALTER ROLE eliza_agent SET hnsw.iterative_scan = off",
            "ALTER ROLE eliza_agent SET hnsw.ef_search = 2",
        ),
        ("ALTER ROLE eliza_agent RESET ALL",),
        frozenset({"vector.settings", "vector.recall"}),
        {
            "vector.settings": "hnsw.iterative_scan is off",
            "vector.recall": "cosine recall@10 is 0.2",
        },
    ),
    SqlFault(
        "database_without_iterative_scan_fails_vector_settings",
        ("ALTER DATABASE eliza RESET hnsw.iterative_scan",),
        ("ALTER DATABASE eliza SET hnsw.iterative_scan = relaxed_order",),
        frozenset({"vector.settings"}),
        {"vector.settings": "hnsw.iterative_scan is unset"},
    ),
    # Every search of memories by the agents waits 0.6 s on the server, before the HNSW scan:
    # a restrictive policy whose check is slow (pg_sleep stands for a slow lookup, without
    # burning a shared machine's CPU; it runs once per query, as an InitPlan). Each indexed
    # query then takes longer than FAST's 500 ms, for a reason that lies in the searches
    # themselves: SELECT 1, the other roles and the plan and results are untouched. A network
    # delay would not do here: the probe and health.latency share the primary's link.
    SqlFault(
        "slow_policy_on_searches_fails_vector_latency",
        (
            (
                "CREATE POLICY verify_slow ON public.memories AS RESTRICTIVE FOR SELECT"
                " TO eliza_agent USING ((SELECT pg_sleep(0.6)) IS NOT NULL)"
            ),
        ),
        ("DROP POLICY verify_slow ON public.memories",),
        frozenset({"vector.latency"}),
        {"vector.latency": "cosine top-10 p95 is"},
    ),
    # -- replication
    SqlFault(
        "inactive_extra_slot_fails_replication_slots",
        ("SELECT pg_create_physical_replication_slot('verify_orphan', true)",),
        ("SELECT pg_drop_replication_slot('verify_orphan')",),
        frozenset({"replication.slots"}),
        {"replication.slots": "inactive slot verify_orphan holds"},
        db="postgres",
    ),
]


# SQL faults and thresholds are judged by the server and by verify, whatever engine runs the
# stack: with several engines they run once (scripts/test).
@pytest.mark.once
@pytest.mark.parametrize("fault", SQL_FAULTS, ids=[f.name for f in SQL_FAULTS])
def test_sql_fault_is_caught(stack: DeployedStack, fault: SqlFault) -> None:
    caught(
        stack,
        sql_fault(stack, fault.breaks, fault.repairs, db=fault.db),
        set(fault.fails),
        fault.skips,
        fault.says,
    )


@contextmanager
def ledger_row_changed(stack: DeployedStack, version: str, delete: bool) -> Iterator[None]:
    """The ledger row of one migration tampered with (checksum zeroed) or deleted, then put
    back as it was."""
    (row,) = sql(stack, "SELECT * FROM elizadb.schema_migrations WHERE version = %s", (version,))
    if delete:
        sql(stack, "DELETE FROM elizadb.schema_migrations WHERE version = %s", (version,))
    else:
        sql(
            stack,
            "UPDATE elizadb.schema_migrations SET checksum = repeat('0', 64) WHERE version = %s",
            (version,),
        )
    try:
        yield
    finally:
        sql(stack, "DELETE FROM elizadb.schema_migrations WHERE version = %s", (version,))
        sql(
            stack,
            "INSERT INTO elizadb.schema_migrations (version, name, checksum, applied_at)"
            " VALUES (%s, %s, %s, %s)",
            row,
        )


def test_tampered_ledger_checksum_fails_schema_migrations(stack: DeployedStack) -> None:
    caught(
        stack,
        ledger_row_changed(stack, "0005", delete=False),
        {"schema.migrations"},
        says={"schema.migrations": "0005_indexes.sql: the ledger records checksum 000000000000"},
    )


def test_missing_ledger_row_fails_schema_migrations(stack: DeployedStack) -> None:
    caught(
        stack,
        ledger_row_changed(stack, "0008", delete=True),
        {"schema.migrations"},
        says={"schema.migrations": "0008_row_level_security.sql is not applied"},
    )


@contextmanager
def md5_password(stack: DeployedStack, role: str) -> Iterator[None]:
    """`role`'s stored password replaced by an MD5 hash; its SCRAM verifier is put back as is
    (ALTER ROLE ... PASSWORD takes a verifier and stores it unchanged)."""
    ((verifier,),) = sql(stack, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
    with psycopg.connect(
        stack.connections["superuser"], dbname="postgres", autocommit=True
    ) as conn:
        conn.execute("SET password_encryption = 'md5'")
        conn.execute(
            pg_sql.SQL("ALTER ROLE {} PASSWORD 'not-a-scram-verifier'").format(
                pg_sql.Identifier(role)
            )
        )
    try:
        yield
    finally:
        sql(
            stack,
            pg_sql.SQL("ALTER ROLE {} PASSWORD {}")
            .format(pg_sql.Identifier(role), pg_sql.Literal(verifier))
            .as_string(),
        )
    assert sql(stack, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)) == [
        (verifier,)
    ]


def test_a_stored_password_that_is_not_scram_fails_hba_auth(stack: DeployedStack) -> None:
    # eliza_backup: a login role the suite itself never logs in as.
    caught(
        stack,
        md5_password(stack, "eliza_backup"),
        {"tls.hba_auth"},
        says={"tls.hba_auth": "role eliza_backup has a password that is not a SCRAM verifier"},
    )


# ---- TLS and authentication --------------------------------------------------------------------


@contextmanager
def hba_edited(stack: DeployedStack, node: str, sed: str) -> Iterator[None]:
    """pg_hba.conf edited and reloaded; restored and reloaded when the block ends."""
    try:
        with edited(stack, node, "/etc/elizadb/pg_hba.conf", sed):
            reload_postgres(stack, node)
            yield
    finally:
        reload_postgres(stack, node)


def test_trust_rule_fails_hba_auth(stack: DeployedStack) -> None:
    caught(
        stack,
        hba_edited(stack, PRIMARY, "/^hostnossl/a hostssl all eliza_agent all trust"),
        {"tls.hba_auth"},
        says={"tls.hba_auth": "hostssl all eliza_agent all uses trust"},
    )


def test_plain_tcp_rule_fails_non_tls_refused(stack: DeployedStack) -> None:
    # A SCRAM rule for plain TCP ahead of the hostnossl reject: passwords are still asked for,
    # but over an unencrypted connection.
    caught(
        stack,
        hba_edited(stack, REPLICA_1, "/^hostnossl/i host all all all scram-sha-256"),
        {"tls.non_tls_refused"},
        says={"tls.non_tls_refused": "replica-1 (127.0.0.1"},
    )


def _self_signed_with_same_key(key_pem: bytes, names: list[str]) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)  # the stack's keys are ECDSA P-256
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_certificate_from_another_ca_fails_reachable_and_certificate(
    stack: DeployedStack,
) -> None:
    # replica-1 serves a self-signed certificate (right names, right key, wrong issuer): every
    # client that verifies, the suite included, is refused. Its streaming is unaffected.
    key = sh(stack, REPLICA_1, "cat /var/lib/postgresql/private/server.key").encode()
    fake = _self_signed_with_same_key(key, [REPLICA_1, "localhost"]).decode()
    caught(
        stack,
        served_certificate(stack, REPLICA_1, fake),
        {"health.reachable", "tls.certificate"},
        # replica-1 still streams, but the suite cannot ask it which slot is its own.
        skips=REPLICA_DEPENDENTS | {"replication.streaming"},
        says={"health.reachable": "certificate verify failed", "tls.certificate": "replica-1"},
    )


def _expiring_from_the_stack_ca(stack: DeployedStack, days: int) -> str:
    """The stack's own server certificate (same names, key and extensions) issued again by the
    stack CA, valid for `days` more days."""
    resources = StateFile(stack.settings.stack).data["resources"]

    def pem(kind: str, name: str, field: str) -> bytes:
        return str(resources[f"tls:index/{kind}::{name}"]["outputs"][field]).encode()

    ca_key = serialization.load_pem_private_key(
        pem("privateKey:PrivateKey", "tls-ca-key", "privateKeyPem"), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(pem("selfSignedCert:SelfSignedCert", "tls-ca", "certPem"))
    current = x509.load_pem_x509_certificate(
        pem("locallySignedCert:LocallySignedCert", "tls-server", "certPem")
    )
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(current.subject)
        .issuer_name(ca.subject)
        .public_key(current.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    for extension in current.extensions:
        if not isinstance(extension.value, x509.AuthorityKeyIdentifier):
            builder = builder.add_extension(extension.value, extension.critical)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@contextmanager
def served_certificate(stack: DeployedStack, node: str, pem: str) -> Iterator[None]:
    """`node` serves `pem` (with its own key) until the block ends."""
    where = endpoint(stack, node)

    def serial() -> int:
        return handshake(
            where["host"], where["port"], timeout=3, cafile=None, server_hostname=None
        ).certificate.serial_number

    before = serial()
    try:
        with preserved(stack, node, "/etc/elizadb/tls/server.crt"):
            sh(stack, node, f"printf '%s' '{pem}' > /etc/elizadb/tls/server.crt")
            reload_postgres(stack, node)
            wait_for(f"{node} to serve the new certificate", lambda: serial() != before)
            yield
    finally:
        reload_postgres(stack, node)
        wait_for(f"{node} to serve its own certificate again", lambda: serial() == before)


def test_certificate_about_to_expire_fails_tls_expiry(stack: DeployedStack) -> None:
    # Issued by the stack CA for every right name: only its end date is wrong.
    caught(
        stack,
        served_certificate(stack, REPLICA_1, _expiring_from_the_stack_ca(stack, days=5)),
        {"tls.expiry"},
        says={"tls.expiry": "expires in 5.0 days"},
    )


def test_certificate_without_a_clients_name_fails_tls_certificate(stack: DeployedStack) -> None:
    # Outputs that name the pooler by a name its certificate does not carry: what clients see
    # after a rename without reissuing the certificate. The stack itself is untouched.
    outputs = copy.deepcopy(stack.outputs)
    outputs["pooler"]["name"] = f"{POOLER}-renamed"
    caught(
        stack,
        nullcontext(),
        {"tls.certificate"},
        says={"tls.certificate": f"does not verify for '{POOLER}-renamed'"},
        outputs=outputs,
    )


THRESHOLD_FAULTS = [
    # (thresholds the healthy stack cannot meet, the one check that must fail, what it says):
    # the threshold logic of every measured check, apart from its real fault (further down).
    (replace(FAST, cert_min_days=100000), "tls.expiry", "under the 100000-day threshold"),
    (replace(FAST, select1_max_ms=0.0), "health.latency", "SELECT 1 takes"),
    (replace(FAST, connections_max_used=0.0), "health.connections", "client connection slots"),
    (replace(FAST, disk_min_free=1.0), "health.disk", "free on /var/lib/postgresql/data"),
    (replace(FAST, vector_p95_max_ms=0.0), "vector.latency", "p95 is"),
]


@pytest.mark.once
@pytest.mark.parametrize(
    ("thresholds", "check_id", "text"), THRESHOLD_FAULTS, ids=[f[1] for f in THRESHOLD_FAULTS]
)
def test_threshold_is_enforced(
    stack: DeployedStack, thresholds: Thresholds, check_id: str, text: str
) -> None:
    expect(verify(stack, thresholds), {check_id}, says={check_id: text})


# ---- health ------------------------------------------------------------------------------------


@contextmanager
def connections_held(stack: DeployedStack, count: int) -> Iterator[None]:
    """`count` idle client connections on the primary, as a leaking client would hold them."""
    conns = [
        psycopg.connect(stack.connections["agentPrimary"], autocommit=True) for _ in range(count)
    ]
    try:
        yield
    finally:
        for conn in conns:
            conn.close()


def test_connections_near_the_limit_fail_health_connections(stack: DeployedStack) -> None:
    ((used, limit),) = sql(
        stack,
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
        " current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
        " - current_setting('reserved_connections')::int",
    )
    # Enough to pass the 80 % threshold with the suite's own connections, not enough to refuse
    # them.
    hold = int(limit * FAST.connections_max_used) - used + 2
    caught(
        stack,
        connections_held(stack, hold),
        {"health.connections"},
        says={"health.connections": "client connection slots in use"},
    )


# The Linux kernels of these machines have no sch_netem (CONFIG_NET_SCH_NETEM is not set), so a
# link cannot be given a fixed delay; HTB and the u32 classifier are built in. A link throttled
# to 16 kbit/s with no burst holds each packet for its size over the rate, however long it was
# idle (with a burst of 1600 bytes, an idle link let the suite's five SELECT 1 through at once:
# 0.4 ms). A SELECT 1 answer over TLS (about 150 bytes on the wire) then takes 70 to 90 ms and a
# new connection (TLS and SCRAM, some 3.5 kB) 1.6 to 1.8 s (measured with Podman, under a load
# average of 14). Any slowdown of the link delays a connection (six round trips, 20 times the
# bytes) far more than a SELECT 1, and past connect_timeout_s (3 s) the suite reports the node
# unreachable: no node that still lets the suite in answers SELECT 1 slower than FAST's 500 ms.
# The latency test therefore holds SELECT 1 to the shipped threshold (50 ms), which healthy
# nodes meet by far (medians of 0.2 to 2 ms measured under that load).
THROTTLED_RATE = "16kbit"
SELECT1_SHIPPED = replace(FAST, select1_max_ms=Thresholds().select1_max_ms)


@pytest.fixture(scope="module")
def tc_image(stack: DeployedStack) -> Iterator[str]:
    """The stack's image with iproute2 (tc) added: neither image nor base carries it. Removed at
    the end of the module."""
    base = stack.client.containers.get(PRIMARY).image
    tag = f"localhost/elizadb-verify-faults-tc:{base.short_id.removeprefix('sha256:')}"
    recipe = (
        f"FROM {base.tags[0] if base.tags else base.id}\n"
        "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y"
        " --no-install-recommends iproute2 && rm -rf /var/lib/apt/lists/*\n"
    )
    stack.client.images.build(fileobj=io.BytesIO(recipe.encode()), tag=tag, rm=True, forcerm=True)
    try:
        yield tag
    finally:
        stack.client.images.remove(tag)


def container_port(stack: DeployedStack, name: str) -> int:
    """The port inside `name` that the outputs' host port of that node is published from."""
    published = stack.client.containers.get(name).attrs["NetworkSettings"]["Ports"]
    host_port = str(endpoint(stack, name)["port"])
    return next(
        int(inside.split("/")[0])
        for inside, bindings in published.items()
        if any(b.get("HostPort") == host_port for b in bindings or ())
    )


@contextmanager
def client_link_throttled(stack: DeployedStack, image: str, node: str) -> Iterator[None]:
    """What `node` sends its clients (packets from its server port) throttled to THROTTLED_RATE
    on its network interface; everything else it sends, replication included, is not (a whole
    link throttled also held back the replica's acknowledgements of WAL: replication.streaming
    failed with it).

    A helper in the node's network namespace changes the queueing of its interface with one
    capability, NET_ADMIN, that both engines grant without a privileged container."""
    target = stack.client.containers.get(node)
    port = container_port(stack, node)

    def tc(script: str) -> None:
        # The interface that carries the node's address (eth0 on both engines).
        run_to_end(
            stack.client,
            image,
            entrypoint=[
                "sh",
                "-c",
                "set -e; dev=$(ip -o -4 addr show scope global | awk '{print $2; exit}'); "
                + script,
            ],
            network_mode=f"container:{target.id}",
            cap_add=["NET_ADMIN"],
            user="root",
        )

    tc(
        "tc qdisc add dev $dev root handle 1: htb default 20; "
        f"tc class add dev $dev parent 1: classid 1:10 htb rate {THROTTLED_RATE}"
        f" ceil {THROTTLED_RATE} burst 1 cburst 1; "
        "tc class add dev $dev parent 1: classid 1:20 htb rate 10gbit; "
        "tc filter add dev $dev parent 1: protocol ip u32"
        f" match ip sport {port} 0xffff flowid 1:10"
    )
    try:
        yield
    finally:
        tc("tc qdisc del dev $dev root")


def test_throttled_client_link_fails_health_latency(stack: DeployedStack, tc_image: str) -> None:
    caught(
        stack,
        client_link_throttled(stack, tc_image, REPLICA_1),
        {"health.latency"},
        says={"health.latency": "replica-1 (127.0.0.1"},
        thresholds=SELECT1_SHIPPED,
    )


def _stack_containers_using(stack: DeployedStack, volume: str) -> list[str]:
    return [
        str(c.name)
        for c in stack.client.containers.list(all=True, filters=stack_filter(STACK))
        if any(m.get("Name") == volume for m in c.attrs.get("Mounts") or ())
    ]


def _remove_volume(stack: DeployedStack, volume: str) -> dict[str, str]:
    """Remove `volume` and the containers that mount it (the node and the backup agent, which
    mounts every node's data); its labels, for a volume that takes its place."""
    labels = dict(stack.client.volumes.get(volume).attrs.get("Labels") or {})
    for name in _stack_containers_using(stack, volume):
        container = stack.client.containers.get(name)
        container.stop(timeout=20)
        container.remove()
    stack.client.volumes.get(volume).remove()
    return labels


# df's line: filesystem, 1024-blocks, used, available, ...: allocate all but 5 % of the total.
FILL_TO_95_PERCENT = (
    "set -e; set -- $(df -P -k /fill | tail -n 1); "
    "fallocate -l $(( ($4 - $2 / 20) * 1024 )) /fill/elizadb-verify-filler"
)


@contextmanager
def data_volume_nearly_full(stack: DeployedStack, node: str) -> Iterator[None]:
    """`node`'s data volume replaced by a 1 GiB tmpfs volume of the same name and labels, the
    node cloned into it by the deploy, then filled with a file until 5 % is free: a full data
    volume without writing to the machine's shared disk. The repair removes it and deploys
    again, which clones the node onto an ordinary volume.

    The filler is written by a helper that mounts the volume: tmpfs pages are charged to the
    writer's memory limit, and the node's own (512 MB) would kill its server. 5 % of 1 GiB
    (51 MB) leaves room for the WAL the node receives meanwhile. The size is in pages
    (nr_blocks): Podman 4.3 refuses size= on a volume ("does not support Project Quota")."""
    volume = f"{node}-data"
    labels = _remove_volume(stack, volume)
    pages = 2**30 // os.sysconf("SC_PAGE_SIZE")
    stack.client.volumes.create(
        volume,
        driver="local",
        driver_opts={"type": "tmpfs", "device": "tmpfs", "o": f"nr_blocks={pages}"},
        labels=labels,
    )
    try:
        stack.up()
        run_to_end(
            stack.client,
            stack.client.containers.get(node).image.id,
            entrypoint=["sh", "-c", FILL_TO_95_PERCENT],
            volumes={volume: {"bind": "/fill", "mode": "rw"}},
            user="root",
        )
        yield
    finally:
        _remove_volume(stack, volume)
        stack.up()


def test_data_volume_nearly_full_fails_health_disk(stack: DeployedStack) -> None:
    caught(
        stack,
        data_volume_nearly_full(stack, REPLICA_2),
        {"health.disk"},
        says={"health.disk": "replica-2 (127.0.0.1"},
    )


def test_agent_primary_landing_on_a_standby_fails_role_and_the_probes_that_write(
    stack: DeployedStack,
) -> None:
    # Outputs whose agentPrimary names replica-1 alone and accepts any server: what a client
    # configured by hand against the wrong port would do.
    outputs = copy.deepcopy(stack.outputs)
    replica = endpoint(stack, REPLICA_1)
    uri = outputs["connections"]["agentPrimary"]
    hosts = uri.split("@", 1)[1].split("/", 1)[0]
    outputs["connections"]["agentPrimary"] = uri.replace(
        f"@{hosts}/", f"@{replica['host']}:{replica['port']}/"
    ).replace("target_session_attrs=read-write", "target_session_attrs=any")
    caught(
        stack,
        nullcontext(),
        {"health.role", "vector.hnsw_plan", "vector.recall", "vector.latency"},
        says={
            "health.role": "connections.agentPrimary lands on a standby",
            "vector.recall": "cannot execute INSERT in a read-only transaction",
        },
        outputs=outputs,
    )


# ---- pooler ------------------------------------------------------------------------------------


@contextmanager
def pooler_fault(
    stack: DeployedStack, sed: str | None = None, admin: tuple[str, str] | None = None
) -> Iterator[None]:
    """pgbouncer.ini edited (and RELOADed), and/or an admin command with the one that undoes it
    (e.g. ("DISABLE eliza", "ENABLE eliza"))."""
    with ExitStack() as undo:
        if sed:
            # Undone last to first: the file is restored, then RELOADed.
            undo.callback(pgbouncer_admin, stack, "RELOAD")
            undo.enter_context(edited(stack, POOLER, "/etc/elizadb/pgbouncer.ini", sed))
            pgbouncer_admin(stack, "RELOAD")
        if admin:
            pgbouncer_admin(stack, admin[0])
            undo.callback(pgbouncer_admin, stack, admin[1])
        yield


def test_stopped_pooler_fails_pooler_reachable(stack: DeployedStack) -> None:
    @contextmanager
    def stopped() -> Iterator[None]:
        pooler = stack.client.containers.get(POOLER)
        pooler.kill()  # PgBouncer waits for its clients on SIGTERM; no need here
        try:
            yield
        finally:
            pooler.start()

    caught(
        stack,
        stopped(),
        {"pooler.reachable"},
        skips={
            "pooler.routes_to_primary",
            "pooler.pools",
            "pooler.config",
            "tls.non_tls_refused",
            "tls.certificate",
            "tls.expiry",
        },
        says={"pooler.reachable": "the pooler refuses agent"},
    )


POOLER_FAULTS = [
    # (name, sed on pgbouncer.ini, admin command and its undo, failing checks, skips, says)
    (
        "pointed_at_a_replica_fails_routes_to_primary",
        f"s/host={PRIMARY} /host={REPLICA_1} /",
        None,
        {"pooler.routes_to_primary"},
        set(),
        {"pooler.routes_to_primary": "a server in recovery"},
    ),
    (
        "without_server_verification_fails_pooler_config",
        "s/^server_tls_sslmode = .*/server_tls_sslmode = prefer/",
        None,
        {"pooler.config"},
        set(),
        {"pooler.config": "server_tls_sslmode is prefer"},
    ),
    (
        "with_md5_auth_fails_pooler_config",
        "s/^auth_type = .*/auth_type = md5/",
        None,
        {"pooler.config"},
        set(),
        {"pooler.config": "auth_type is md5, not scram-sha-256"},
    ),
    # A deliberately unencrypted client leg: the pooler lets a client in without TLS.
    (
        "accepting_plain_clients_fails_non_tls_refused_and_config",
        "s/^client_tls_sslmode = .*/client_tls_sslmode = prefer/",
        None,
        {"tls.non_tls_refused", "pooler.config"},
        set(),
        {
            "tls.non_tls_refused": "pooler (127.0.0.1",
            "pooler.config": "client_tls_sslmode is prefer",
        },
    ),
    # Plain clients let in, but refused for another reason (the database is disabled): no
    # refusal for want of TLS, so nothing proves that TLS is required.
    (
        "refusing_plain_clients_for_another_reason_fails_non_tls_refused",
        "s/^client_tls_sslmode = .*/client_tls_sslmode = prefer/",
        ("DISABLE eliza", "ENABLE eliza"),
        {"tls.non_tls_refused", "pooler.config", "pooler.reachable", "pooler.pools"},
        {"pooler.routes_to_primary"},
        {"tls.non_tls_refused": "not for want of TLS", "pooler.pools": "is disabled"},
    ),
    (
        "disabled_database_fails_reachable_and_pools",
        None,
        ("DISABLE eliza", "ENABLE eliza"),
        {"pooler.reachable", "pooler.pools"},
        {"pooler.routes_to_primary"},
        {"pooler.pools": "database eliza is disabled in PgBouncer"},
    ),
    (
        "paused_database_fails_reachable_and_pools",
        None,
        ("PAUSE eliza", "RESUME eliza"),
        {"pooler.reachable", "pooler.pools"},
        {"pooler.routes_to_primary"},
        {"pooler.pools": "database eliza is paused in PgBouncer"},
    ),
]


@pytest.mark.parametrize(
    ("name", "sed", "admin", "fails", "skips", "says"),
    POOLER_FAULTS,
    ids=[f[0] for f in POOLER_FAULTS],
)
def test_pooler_fault_is_caught(
    stack: DeployedStack,
    name: str,
    sed: str | None,
    admin: tuple[str, str] | None,
    fails: set[str],
    skips: set[str],
    says: dict[str, str],
) -> None:
    caught(stack, pooler_fault(stack, sed, admin), fails, skips, says)


@contextmanager
def clients_queueing(stack: DeployedStack) -> Iterator[None]:
    """eliza_user's pool filled with sleeping queries, plus two that must wait for a server."""
    size = stack.settings.pooler.pool_size
    conns = [
        psycopg.connect(stack.connections["userPooler"], autocommit=True, prepare_threshold=None)
        for _ in range(size + 2)
    ]

    def sleep(conn: psycopg.Connection[Any]) -> None:
        try:
            conn.execute("SELECT pg_sleep(60)")
        except psycopg.Error:
            pass  # cancelled at the end of the test

    threads = [threading.Thread(target=sleep, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()

    def queue_waited() -> bool:
        pools = pgbouncer_admin(stack, "SHOW POOLS")
        return any(
            p["user"] == "eliza_user" and p["cl_waiting"] >= 2 and p["maxwait"] >= 2 for p in pools
        )

    try:
        wait_for("clients to wait 2 s in eliza_user's pool", queue_waited)
        yield
    finally:
        deadline = time.monotonic() + 30
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            for conn, t in zip(conns, threads, strict=True):
                if t.is_alive():
                    conn.cancel_safe()
            time.sleep(0.5)
        for conn in conns:
            conn.close()


def test_clients_queueing_in_the_pooler_fail_pooler_pools(stack: DeployedStack) -> None:
    caught(
        stack,
        clients_queueing(stack),
        {"pooler.pools"},
        says={"pooler.pools": "pool eliza/eliza_user: 2 client(s) waiting"},
    )


# ---- replication -------------------------------------------------------------------------------

# The walsender holds the slot: end it and drop the slot before the replica reconnects.
DROP_REPLICA_1_SLOT = """
DO $$
BEGIN
  FOR i IN 1..200 LOOP
    PERFORM pg_terminate_backend(active_pid) FROM pg_replication_slots
     WHERE slot_name = 'elizadb_replica_1' AND active_pid IS NOT NULL;
    BEGIN
      PERFORM pg_drop_replication_slot('elizadb_replica_1');
      RETURN;
    EXCEPTION WHEN object_in_use THEN
      PERFORM pg_sleep(0.02);
    END;
  END LOOP;
  RAISE EXCEPTION 'the slot stayed active';
END $$"""


def test_dropped_slot_of_a_running_replica_fails_streaming_and_slots(
    stack: DeployedStack,
) -> None:
    caught(
        stack,
        sql_fault(
            stack,
            [DROP_REPLICA_1_SLOT],
            ["SELECT pg_create_physical_replication_slot('elizadb_replica_1', true)"],
            db="postgres",
        ),
        {"replication.streaming", "replication.slots"},
        skips={"replication.lag"},
        says={
            "replication.streaming": "replica-1",
            "replication.slots": "slot elizadb_replica_1 does not exist on the primary",
        },
    )


def _wal(megabytes: int) -> str:
    """WAL without tables: logical messages of 1 MiB each."""
    return (
        "SELECT pg_logical_emit_message(false, 'elizadb-verify-test', repeat('x', 1048576))"
        f" FROM generate_series(1, {megabytes})"
    )


def replica_1_paused(stack: DeployedStack, wal_megabytes: int) -> AbstractContextManager[None]:
    """replica-1's WAL replay paused, then `wal_megabytes` of WAL written on the primary."""
    pause = sql_fault(
        stack,
        ["SELECT pg_wal_replay_pause()"],
        ["SELECT pg_wal_replay_resume()"],
        node=REPLICA_1,
        db="postgres",
    )

    @contextmanager
    def paused() -> Iterator[None]:
        with pause:
            if wal_megabytes:
                sql(stack, _wal(wal_megabytes), db="postgres")
            yield

    return paused()


def test_paused_replay_fails_replication_lag(stack: DeployedStack) -> None:
    replica = endpoint(stack, REPLICA_1)
    caught(
        stack,
        replica_1_paused(stack, 80),  # above the 64 MiB threshold
        {"replication.lag"},
        says={"replication.lag": f"replica-1 ({replica['host']}:{replica['port']}) replays"},
    )


def test_replay_paused_with_little_lag_fails_replication_lag(stack: DeployedStack) -> None:
    # Nothing written: the lag stays far under its thresholds, but the replica has stopped
    # converging and will fall behind with the next write.
    replica = endpoint(stack, REPLICA_1)
    caught(
        stack,
        replica_1_paused(stack, 0),
        {"replication.lag"},
        says={
            "replication.lag": f"replica-1 ({replica['host']}:{replica['port']})'s WAL replay is"
        },
    )


def test_stopped_wal_receiver_fails_streaming_and_slots(stack: DeployedStack) -> None:
    # replica-1 runs and answers queries, but its WAL receiver is gone (no primary_conninfo):
    # it receives nothing and its slot on the primary goes idle.
    caught(
        stack,
        sql_fault(
            stack,
            ["ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()"],
            ["ALTER SYSTEM RESET primary_conninfo", "SELECT pg_reload_conf()"],
            node=REPLICA_1,
            db="postgres",
        ),
        {"replication.streaming", "replication.slots"},
        skips={"replication.lag"},
        says={
            "replication.streaming": "its WAL receiver is not running",
            "replication.slots": "elizadb_replica_1 is not active",
        },
    )


@contextmanager
def hung_wal_receiver(stack: DeployedStack) -> Iterator[None]:
    """replica-1's WAL receiver stopped with SIGSTOP: its connection stays open and both ends
    still say streaming, but nothing it is sent is flushed or confirmed. SIGCONT resumes it."""
    ((pid,),) = sql(stack, "SELECT pid FROM pg_stat_wal_receiver", node=REPLICA_1, db="postgres")
    sh(stack, REPLICA_1, f"kill -STOP {pid}", user="postgres")
    try:
        yield
    finally:
        sh(stack, REPLICA_1, f"kill -CONT {pid}", user="postgres")


def test_hung_wal_receiver_fails_replication_converging(stack: DeployedStack) -> None:
    caught(
        stack,
        hung_wal_receiver(stack),
        {"replication.converging"},
        says={"replication.converging": "slot elizadb_replica_1's restart LSN stays at"},
    )


@contextmanager
def lost_slot(stack: DeployedStack) -> Iterator[None]:
    """An inactive slot whose WAL was removed (wal_status lost): for one checkpoint the primary
    keeps only 1 MB of WAL for slots and none for wal_keep_size, after both replicas have
    received everything, so that only the extra slot falls behind."""
    settings = (
        "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'",
        "ALTER SYSTEM SET wal_keep_size = 0",
        "SELECT pg_reload_conf()",
    )
    resets = (
        "ALTER SYSTEM RESET max_slot_wal_keep_size",
        "ALTER SYSTEM RESET wal_keep_size",
        "SELECT pg_reload_conf()",
    )
    with ExitStack() as undo:
        undo.enter_context(
            sql_fault(
                stack,
                ["SELECT pg_create_physical_replication_slot('verify_lost', true)"],
                ["SELECT pg_drop_replication_slot('verify_lost')"],
                db="postgres",
            )
        )
        undo.enter_context(sql_fault(stack, settings, resets, db="postgres"))
        sql(stack, _wal(40), db="postgres")
        sql(stack, "SELECT pg_switch_wal()", db="postgres")
        # 1 MB is less than a segment: the checkpoint keeps only the segment it starts in, so
        # a replica's slot must be in the new segment first, or it is lost too (seen in a CI
        # rehearsal: the next test found replica-2's slot lost).
        [(switched,)] = sql(stack, "SELECT pg_current_wal_lsn()", db="postgres")
        wait_for(
            "both replicas' slots to pass the switch",
            lambda: (
                sql(
                    stack,
                    "SELECT count(*) FILTER (WHERE restart_lsn >= %s::pg_lsn)"
                    " FROM pg_replication_slots WHERE slot_name <> 'verify_lost'",
                    (switched,),
                    db="postgres",
                )
                == [(2,)]
            ),
        )
        sql(stack, "CHECKPOINT", db="postgres")
        states = sql(stack, "SELECT slot_name, wal_status FROM pg_replication_slots", db="postgres")
        assert sorted(s for s, status in states if status == "lost") == ["verify_lost"], states
        yield


def test_slot_that_lost_its_wal_fails_replication_slots(stack: DeployedStack) -> None:
    caught(
        stack,
        lost_slot(stack),
        {"replication.slots"},
        says={"replication.slots": "slot verify_lost has lost WAL its replica needs"},
    )


@contextmanager
def stopped_container(stack: DeployedStack, name: str) -> Iterator[None]:
    container = stack.client.containers.get(name)
    container.stop(timeout=20)
    try:
        yield
    finally:
        container.start()


def test_stopped_replica_fails_reachable_streaming_and_slots(stack: DeployedStack) -> None:
    caught(
        stack,
        stopped_container(stack, REPLICA_2),
        {"health.reachable", "replication.streaming", "replication.slots"},
        skips=REPLICA_DEPENDENTS | {"tls.non_tls_refused", "tls.certificate", "tls.expiry"},
        says={
            "health.reachable": "replica-2",
            "replication.streaming": "replica-2",
            "replication.slots": "inactive slot elizadb_replica_2",
        },
    )


@contextmanager
def promoted_replica_2(stack: DeployedStack) -> Iterator[None]:
    # Every node archives WAL into the shared pgBackRest repository: a rogue primary would put
    # its new timeline there, and every standby that follows the latest timeline would then try
    # to follow it. Stop replica-2 from archiving before promoting it (its data is wiped below).
    sql(stack, "ALTER SYSTEM SET archive_command = ''", node=REPLICA_2, db="postgres")
    sql(stack, "SELECT pg_reload_conf()", node=REPLICA_2, db="postgres")
    sql(stack, "SELECT pg_promote()", node=REPLICA_2, db="postgres")
    try:
        yield
    finally:
        # A promoted replica cannot follow again: empty its data volume (with a throwaway
        # container of the same image) and start it, which clones the primary afresh.
        container = stack.client.containers.get(REPLICA_2)
        container.stop(timeout=20)
        run_to_end(
            stack.client,
            container.image.id,
            entrypoint=["sh", "-c", "rm -rf /wipe/* /wipe/.[!.]*"],
            volumes={f"{REPLICA_2}-data": {"bind": "/wipe", "mode": "rw"}},
            user="root",
        )
        container.start()


def test_promoted_replica_fails_role_streaming_slots_and_read_only(stack: DeployedStack) -> None:
    caught(
        stack,
        promoted_replica_2(stack),
        {"health.role", "replication.streaming", "replication.slots", "replication.read_only"},
        skips={"replication.lag"},
        says={
            "health.role": "replica-2",
            "replication.read_only": "replica-2",
            "replication.slots": "elizadb_replica_2 is not active",
        },
    )


# ---- backups -----------------------------------------------------------------------------------


ARCHIVE_DIR = "/var/lib/pgbackrest/archive"


def archiver(stack: DeployedStack) -> tuple[int, int, str | None]:
    """The primary's pg_stat_archiver: archived_count, failed_count, last_failed_wal."""
    ((archived, failures, last_failed),) = sql(
        stack,
        "SELECT archived_count, failed_count, last_failed_wal FROM pg_stat_archiver",
        db="postgres",
    )
    return archived, failures, last_failed


def switch_wal(stack: DeployedStack) -> None:
    """Close the primary's current WAL segment, which wakes the archiver for it. A record first:
    pg_switch_wal does nothing when no WAL was written since the last switch."""
    sql(stack, "SELECT pg_logical_emit_message(false, 'elizadb-verify-test', 'x')", db="postgres")
    sql(stack, "SELECT pg_switch_wal()", db="postgres")


@contextmanager
def backup_mount(stack: DeployedStack, command: list[str]) -> Iterator[None]:
    """Change the backup mount inside the primary's mount namespace; a restart has the engine
    mount the volume again as declared. A helper that shares the primary's PID namespace enters
    its mounts with two capabilities: SYS_ADMIN to change mounts, SYS_PTRACE to open the
    namespace of a process that runs as another user (the server). A privileged exec or container
    asks for every capability, and Docker Engine fails it ("unable to apply caps") where the
    host's bounding set lacks one, as on these machines (no CAP_SYS_RESOURCE).

    Archiving fails too, with the repository gone or read-only. A WAL switch makes it fail now:
    left to archive_timeout (60 s), a segment would close during some runs and not others."""
    primary = stack.client.containers.get(PRIMARY)
    failures = archiver(stack)[1]
    run_to_end(
        stack.client,
        primary.image.id,
        entrypoint=["nsenter", "-t", "1", "-m", *command],
        pid_mode=f"container:{primary.id}",
        cap_add=["SYS_ADMIN", "SYS_PTRACE"],
        user="root",
    )
    try:
        switch_wal(stack)
        wait_for("a failed archive attempt", lambda: archiver(stack)[1] > failures)
        yield
    finally:
        primary.restart(timeout=30)  # the restarted archiver retries the segment at once


def test_unmounted_backup_volume_fails_backups_volume_and_archiving(stack: DeployedStack) -> None:
    # What is left at the path is the image's empty folder, where backups would die with the
    # container.
    with backup_mount(stack, ["umount", "-l", "/var/lib/pgbackrest"]):
        expect(
            verify(stack),
            {"backups.volume", "backups.archiving"},
            says={
                "backups.volume": "/var/lib/pgbackrest is not a mount point on the primary",
                "backups.archiving": "failed at",
            },
        )
    expect_healthy(stack)  # a restarted primary: every check, not only the one that failed


def test_read_only_backup_mount_fails_backups_volume_writable_and_archiving(
    stack: DeployedStack,
) -> None:
    with backup_mount(stack, ["mount", "-o", "remount,ro,bind", "/var/lib/pgbackrest"]):
        expect(
            verify(stack),
            {"backups.volume", "backups.writable", "backups.archiving"},
            says={
                "backups.volume": "/var/lib/pgbackrest is mounted read-only",
                "backups.writable": "Read-only file system",
                "backups.archiving": "failed at",
            },
        )
    expect_healthy(stack)


def test_backup_volume_not_writable_fails_backups_writable(stack: DeployedStack) -> None:
    owner = sh(stack, PRIMARY, "stat -c '%u:%g %a' /var/lib/pgbackrest").split()

    @contextmanager
    def root_owned() -> Iterator[None]:
        sh(stack, PRIMARY, "chown root:root /var/lib/pgbackrest && chmod 755 /var/lib/pgbackrest")
        try:
            yield
        finally:
            sh(
                stack,
                PRIMARY,
                f"chown {owner[0]} /var/lib/pgbackrest && chmod {owner[1]} /var/lib/pgbackrest",
            )

    caught(
        stack,
        root_owned(),
        {"backups.writable"},
        says={"backups.writable": "Permission denied"},
    )


@contextmanager
def archiving_refused(stack: DeployedStack, says: dict[str, str]) -> Iterator[None]:
    """The repository's archive folder closed to the server's OS user (as root, in the primary's
    container), then a WAL switch: archive-push fails. `says` receives the segment that failed,
    which the check must name. The repair opens it again, switches again and waits until the
    archiver has caught up, so that the next test sees a clean stack."""
    mode = sh(stack, PRIMARY, f"stat -c %a {ARCHIVE_DIR}").strip()
    failures = archiver(stack)[1]
    sh(stack, PRIMARY, f"chmod 000 {ARCHIVE_DIR}")
    try:
        switch_wal(stack)
        wait_for("a failed archive attempt", lambda: archiver(stack)[1] > failures)
        says["backups.archiving"] = f"archiving {archiver(stack)[2]} failed at"
        yield
    finally:
        archived = archiver(stack)[0]
        sh(stack, PRIMARY, f"chmod {mode} {ARCHIVE_DIR}")
        switch_wal(stack)
        wait_for("archiving to catch up", lambda: archiver(stack)[0] > archived)


def test_failing_wal_archiving_fails_backups_archiving(stack: DeployedStack) -> None:
    says: dict[str, str] = {}  # filled on entering the fault, before the suite runs
    caught(stack, archiving_refused(stack, says), {"backups.archiving"}, says=says)


def test_every_check_passes_after_all_the_faults(stack: DeployedStack) -> None:
    expect_healthy(stack)
