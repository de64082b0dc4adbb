"""Proof of power: every check of the verify suite catches the fault it exists for.

One stack is deployed for the module. Each test breaks it in exactly one way, runs the whole
suite, and asserts the exact set of checks that fail (and of those that skip because a target
became unreachable — each naming the check that reports why), that each failure says what is
wrong and what to do, then repairs the stack and asserts that every check passes again.

Threshold-only faults (a certificate "near" expiry, a latency "too high") are proved by passing
thresholds the healthy stack cannot meet: the stack is not touched, the threshold logic is.
"""

from __future__ import annotations

import copy
import datetime
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.stacks import DeployedStack, deployed_stack
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
        return [dict(zip(names, row)) for row in cur.fetchall()]


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


# ---- schema ------------------------------------------------------------------------------------


def test_dropped_extension_fails_schema_extensions(stack: DeployedStack) -> None:
    sql(stack, "DROP EXTENSION fuzzystrmatch")
    try:
        expect(
            results := verify(stack),
            {"schema.extensions"},
            says={"schema.extensions": "fuzzystrmatch is not installed"},
        )
    finally:
        sql(stack, "CREATE EXTENSION IF NOT EXISTS fuzzystrmatch WITH SCHEMA public")
    expect_repaired(stack, results)


def test_renamed_table_fails_schema_tables_and_its_details_skip(stack: DeployedStack) -> None:
    sql(stack, "ALTER TABLE public.cache RENAME TO cache_renamed")
    try:
        expect(
            results := verify(stack),
            {"schema.tables"},
            skips={"schema.columns", "schema.defaults", "schema.constraints", "schema.indexes"},
            says={"schema.tables": "public.cache is missing"},
        )
    finally:
        sql(stack, "ALTER TABLE public.cache_renamed RENAME TO cache")
    expect_repaired(stack, results)


def test_dropped_column_fails_schema_columns(stack: DeployedStack) -> None:
    sql(stack, "ALTER TABLE public.participants DROP COLUMN last_message_read")
    try:
        expect(
            results := verify(stack),
            {"schema.columns"},
            says={"schema.columns": "participants.last_message_read is missing"},
        )
    finally:
        sql(stack, "ALTER TABLE public.participants ADD COLUMN last_message_read text")
    expect_repaired(stack, results)


def test_dropped_default_fails_schema_defaults(stack: DeployedStack) -> None:
    sql(stack, "ALTER TABLE public.accounts ALTER COLUMN details DROP DEFAULT")
    try:
        expect(
            results := verify(stack),
            {"schema.defaults"},
            says={"schema.defaults": "accounts.details defaults to nothing"},
        )
    finally:
        sql(stack, "ALTER TABLE public.accounts ALTER COLUMN details SET DEFAULT '{}'::jsonb")
    expect_repaired(stack, results)


def test_dropped_check_constraint_fails_schema_constraints(stack: DeployedStack) -> None:
    sql(stack, "ALTER TABLE public.knowledge DROP CONSTRAINT knowledge_shared_xor_agent")
    try:
        expect(
            results := verify(stack),
            {"schema.constraints"},
            says={"schema.constraints": "knowledge: missing constraint CHECK"},
        )
    finally:
        sql(
            stack,
            "ALTER TABLE public.knowledge ADD CONSTRAINT knowledge_shared_xor_agent CHECK ("
            '("isShared" AND "agentId" IS NULL) OR (NOT "isShared" AND "agentId" IS NOT NULL))',
        )
    expect_repaired(stack, results)


def test_dropped_hnsw_index_fails_schema_indexes_and_the_l2_plan(stack: DeployedStack) -> None:
    sql(stack, "DROP INDEX public.idx_memories_embedding_l2")
    try:
        expect(
            results := verify(stack),
            {"schema.indexes", "vector.hnsw_plan"},
            says={
                "schema.indexes": "idx_memories_embedding_l2 on memories is missing",
                "vector.hnsw_plan": "<->",
            },
        )
    finally:
        sql(
            stack,
            "CREATE INDEX idx_memories_embedding_l2 ON public.memories"
            " USING hnsw (embedding public.vector_l2_ops)",
        )
    expect_repaired(stack, results)


def test_changed_vector_dimension_fails_dimension_storage_and_the_probe(
    stack: DeployedStack,
) -> None:
    # ALTER ... TYPE also resets the column's storage to the type's default (EXTENDED): a real
    # second fault that schema.columns reports.
    sql(stack, "ALTER TABLE public.memories ALTER COLUMN embedding TYPE public.vector(768)")
    try:
        expect(
            results := verify(stack),
            {
                "schema.vector_dimension",
                "schema.columns",
                "vector.hnsw_plan",
                "vector.recall",
                "vector.latency",
            },
            says={
                "schema.vector_dimension": "vector(768)",
                "schema.columns": "storage e, expected p",
                "vector.recall": "expected 768 dimensions, not 1536",
            },
        )
    finally:
        sql(stack, "ALTER TABLE public.memories ALTER COLUMN embedding TYPE public.vector(1536)")
        sql(stack, "ALTER TABLE public.memories ALTER COLUMN embedding SET STORAGE PLAIN")
    expect_repaired(stack, results)


def test_tampered_ledger_checksum_fails_schema_migrations(stack: DeployedStack) -> None:
    (original,) = sql(
        stack, "SELECT checksum FROM elizadb.schema_migrations WHERE version = '0005'"
    )[0]
    sql(
        stack,
        "UPDATE elizadb.schema_migrations SET checksum = repeat('0', 64) WHERE version = '0005'",
    )
    try:
        expect(
            results := verify(stack),
            {"schema.migrations"},
            says={
                "schema.migrations": "0005_indexes.sql: the ledger records checksum 000000000000"
            },
        )
    finally:
        sql(
            stack,
            "UPDATE elizadb.schema_migrations SET checksum = %s WHERE version = '0005'",
            (original,),
        )
    expect_repaired(stack, results)


def test_missing_ledger_row_fails_schema_migrations(stack: DeployedStack) -> None:
    row = sql(stack, "DELETE FROM elizadb.schema_migrations WHERE version = '0008' RETURNING *")[0]
    try:
        expect(
            results := verify(stack),
            {"schema.migrations"},
            says={"schema.migrations": "0008_row_level_security.sql is not applied"},
        )
    finally:
        sql(
            stack,
            "INSERT INTO elizadb.schema_migrations (version, name, checksum, applied_at)"
            " VALUES (%s, %s, %s, %s)",
            row,
        )
    expect_repaired(stack, results)


def test_disabled_trigger_fails_schema_functions(stack: DeployedStack) -> None:
    sql(stack, "ALTER TABLE public.memories DISABLE TRIGGER memories_sync_unique_flags")
    try:
        expect(
            results := verify(stack),
            {"schema.functions"},
            says={"schema.functions": "memories_sync_unique_flags"},
        )
    finally:
        sql(stack, "ALTER TABLE public.memories ENABLE TRIGGER memories_sync_unique_flags")
    expect_repaired(stack, results)


# ---- security ----------------------------------------------------------------------------------


def test_rls_switched_off_fails_rls_and_the_isolation_probe(stack: DeployedStack) -> None:
    sql(stack, "ALTER TABLE public.memories DISABLE ROW LEVEL SECURITY")
    try:
        expect(
            results := verify(stack),
            {"security.rls", "security.user_isolation"},
            says={
                "security.rls": "memories: row level security is disabled",
                "security.user_isolation": "memories: user alice reads user bob's row",
            },
        )
    finally:
        sql(stack, "ALTER TABLE public.memories ENABLE ROW LEVEL SECURITY")
    expect_repaired(stack, results)


def test_rls_not_forced_fails_only_the_rls_check(stack: DeployedStack) -> None:
    # Not forcing RLS lets the owner bypass it; eliza_user is still isolated.
    sql(stack, "ALTER TABLE public.accounts NO FORCE ROW LEVEL SECURITY")
    try:
        expect(
            results := verify(stack),
            {"security.rls"},
            says={"security.rls": "accounts: row level security is not forced"},
        )
    finally:
        sql(stack, "ALTER TABLE public.accounts FORCE ROW LEVEL SECURITY")
    expect_repaired(stack, results)


def test_permissive_policy_fails_the_isolation_probe(stack: DeployedStack) -> None:
    sql(stack, "CREATE POLICY verify_leak ON public.goals FOR SELECT TO eliza_user USING (true)")
    try:
        expect(
            results := verify(stack),
            {"security.user_isolation"},
            says={"security.user_isolation": "goals: user alice reads user bob's row"},
        )
    finally:
        sql(stack, "DROP POLICY verify_leak ON public.goals")
    expect_repaired(stack, results)


def test_create_on_public_granted_to_public_fails_public_and_role_privileges(
    stack: DeployedStack,
) -> None:
    # Through PUBLIC, every runtime role may now create objects: both checks must say so.
    sql(stack, "GRANT CREATE ON SCHEMA public TO PUBLIC")
    try:
        expect(
            results := verify(stack),
            {"security.public_privileges", "security.role_privileges"},
            says={
                "security.public_privileges": "PUBLIC has schema public: CREATE",
                "security.role_privileges": "eliza_agent may CREATE in schema public",
            },
        )
    finally:
        sql(stack, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    expect_repaired(stack, results)


def test_truncate_granted_to_agent_fails_role_privileges(stack: DeployedStack) -> None:
    sql(stack, "GRANT TRUNCATE ON public.memories TO eliza_agent")
    try:
        expect(
            results := verify(stack),
            {"security.role_privileges"},
            says={"security.role_privileges": "eliza_agent has TRUNCATE on memories"},
        )
    finally:
        sql(stack, "REVOKE TRUNCATE ON public.memories FROM eliza_agent")
    expect_repaired(stack, results)


# ---- vector ------------------------------------------------------------------------------------


def test_iterative_scan_off_and_tiny_ef_search_fail_settings_and_recall(
    stack: DeployedStack,
) -> None:
    # ef_search 2 without iterative scans: an index scan stops after 2 candidates.
    sql(stack, "ALTER ROLE eliza_agent SET hnsw.iterative_scan = off")
    sql(stack, "ALTER ROLE eliza_agent SET hnsw.ef_search = 2")
    try:
        expect(
            results := verify(stack),
            {"vector.settings", "vector.recall"},
            says={
                "vector.settings": "hnsw.iterative_scan is off",
                "vector.recall": "cosine recall@10 is 0.2",
            },
        )
    finally:
        sql(stack, "ALTER ROLE eliza_agent RESET ALL")
    expect_repaired(stack, results)


def test_database_without_iterative_scan_fails_vector_settings(stack: DeployedStack) -> None:
    sql(stack, "ALTER DATABASE eliza RESET hnsw.iterative_scan")
    try:
        expect(
            results := verify(stack),
            {"vector.settings"},
            says={"vector.settings": "hnsw.iterative_scan is unset"},
        )
    finally:
        sql(stack, "ALTER DATABASE eliza SET hnsw.iterative_scan = relaxed_order")
    expect_repaired(stack, results)


# ---- TLS and authentication --------------------------------------------------------------------


def test_trust_rule_fails_hba_auth(stack: DeployedStack) -> None:
    with edited(
        stack,
        PRIMARY,
        "/etc/elizadb/pg_hba.conf",
        "/^hostnossl/a hostssl all eliza_agent all trust",
    ):
        reload_postgres(stack, PRIMARY)
        expect(
            results := verify(stack),
            {"tls.hba_auth"},
            says={"tls.hba_auth": "hostssl all eliza_agent all uses trust"},
        )
    reload_postgres(stack, PRIMARY)
    expect_repaired(stack, results)


def test_plain_tcp_rule_fails_non_tls_refused(stack: DeployedStack) -> None:
    # A SCRAM rule for plain TCP ahead of the hostnossl reject: passwords are still asked for,
    # but over an unencrypted connection.
    with edited(
        stack, REPLICA_1, "/etc/elizadb/pg_hba.conf", "/^hostnossl/i host all all all scram-sha-256"
    ):
        reload_postgres(stack, REPLICA_1)
        expect(
            results := verify(stack),
            {"tls.non_tls_refused"},
            says={"tls.non_tls_refused": "replica-1 (127.0.0.1"},
        )
    reload_postgres(stack, REPLICA_1)
    expect_repaired(stack, results)


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
    where = endpoint(stack, REPLICA_1)
    key = sh(stack, REPLICA_1, "cat /var/lib/postgresql/private/server.key").encode()
    fake = _self_signed_with_same_key(key, [REPLICA_1, "localhost"]).decode()

    def serial() -> int:
        return handshake(
            where["host"], where["port"], timeout=3, cafile=None, server_hostname=None
        ).certificate.serial_number

    before = serial()
    with preserved(stack, REPLICA_1, "/etc/elizadb/tls/server.crt"):
        sh(stack, REPLICA_1, f"printf '%s' '{fake}' > /etc/elizadb/tls/server.crt")
        reload_postgres(stack, REPLICA_1)
        wait_for("replica-1 to serve the self-signed certificate", lambda: serial() != before)
        expect(
            results := verify(stack),
            {"health.reachable", "tls.certificate"},
            # replica-1 still streams, but the suite cannot ask it which slot is its own.
            skips=REPLICA_DEPENDENTS | {"replication.streaming"},
            says={"health.reachable": "certificate verify failed", "tls.certificate": "replica-1"},
        )
    reload_postgres(stack, REPLICA_1)
    wait_for("replica-1 to serve its own certificate again", lambda: serial() == before)
    expect_repaired(stack, results)


def test_certificate_without_a_clients_name_fails_tls_certificate(stack: DeployedStack) -> None:
    # Outputs that name the pooler by a name its certificate does not carry: what clients see
    # after a rename without reissuing the certificate. The stack itself is untouched.
    outputs = copy.deepcopy(stack.outputs)
    outputs["pooler"]["name"] = f"{POOLER}-renamed"
    expect(
        verify(stack, outputs=outputs),
        {"tls.certificate"},
        says={"tls.certificate": f"does not verify for '{POOLER}-renamed'"},
    )


THRESHOLD_FAULTS = [
    # (thresholds the healthy stack cannot meet, the one check that must fail, what it says)
    (replace(FAST, cert_min_days=100000), "tls.expiry", "under the 100000-day threshold"),
    (replace(FAST, select1_max_ms=0.0), "health.latency", "SELECT 1 takes"),
    (replace(FAST, connections_max_used=0.0), "health.connections", "client connection slots"),
    (replace(FAST, disk_min_free=1.0), "health.disk", "free on /var/lib/postgresql/data"),
    (replace(FAST, vector_p95_max_ms=0.0), "vector.latency", "p95 is"),
]


@pytest.mark.parametrize(
    ("thresholds", "check_id", "text"), THRESHOLD_FAULTS, ids=[f[1] for f in THRESHOLD_FAULTS]
)
def test_threshold_is_enforced(
    stack: DeployedStack, thresholds: Thresholds, check_id: str, text: str
) -> None:
    expect(verify(stack, thresholds), {check_id}, says={check_id: text})


# ---- pooler ------------------------------------------------------------------------------------


def test_stopped_pooler_fails_pooler_reachable(stack: DeployedStack) -> None:
    pooler = stack.client.containers.get(POOLER)
    pooler.stop(timeout=2)  # PgBouncer waits for its clients on SIGTERM; no need here
    try:
        expect(
            results := verify(stack),
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
    finally:
        pooler.start()
    expect_repaired(stack, results)


def test_pooler_pointed_at_a_replica_fails_routes_to_primary(stack: DeployedStack) -> None:
    with edited(
        stack, POOLER, "/etc/elizadb/pgbouncer.ini", f"s/host={PRIMARY} /host={REPLICA_1} /"
    ):
        pgbouncer_admin(stack, "RELOAD")
        expect(
            results := verify(stack),
            {"pooler.routes_to_primary"},
            says={"pooler.routes_to_primary": "a server in recovery"},
        )
    pgbouncer_admin(stack, "RELOAD")
    expect_repaired(stack, results)


def test_pooler_without_server_verification_fails_pooler_config(stack: DeployedStack) -> None:
    with edited(
        stack,
        POOLER,
        "/etc/elizadb/pgbouncer.ini",
        "s/^server_tls_sslmode = .*/server_tls_sslmode = prefer/",
    ):
        pgbouncer_admin(stack, "RELOAD")
        expect(
            results := verify(stack),
            {"pooler.config"},
            says={"pooler.config": "server_tls_sslmode is prefer"},
        )
    pgbouncer_admin(stack, "RELOAD")
    expect_repaired(stack, results)


def test_clients_queueing_in_the_pooler_fail_pooler_pools(stack: DeployedStack) -> None:
    # Fill eliza_user's pool with sleeping queries, plus two that must wait for a server.
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
        expect(
            results := verify(stack),
            {"pooler.pools"},
            says={"pooler.pools": "pool eliza/eliza_user: 2 client(s) waiting"},
        )
    finally:
        deadline = time.monotonic() + 30
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            for conn, t in zip(conns, threads):
                if t.is_alive():
                    conn.cancel_safe()
            time.sleep(0.5)
        for conn in conns:
            conn.close()
    expect_repaired(stack, results)


# ---- replication -------------------------------------------------------------------------------


def test_inactive_extra_slot_fails_replication_slots(stack: DeployedStack) -> None:
    sql(stack, "SELECT pg_create_physical_replication_slot('verify_orphan', true)", db="postgres")
    try:
        expect(
            results := verify(stack),
            {"replication.slots"},
            says={"replication.slots": "inactive slot verify_orphan holds"},
        )
    finally:
        sql(stack, "SELECT pg_drop_replication_slot('verify_orphan')", db="postgres")
    expect_repaired(stack, results)


def test_dropped_slot_of_a_running_replica_fails_streaming_and_slots(
    stack: DeployedStack,
) -> None:
    # The walsender holds the slot: end it and drop the slot before the replica reconnects.
    sql(
        stack,
        """
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
        END $$""",
        db="postgres",
    )
    try:
        expect(
            results := verify(stack),
            {"replication.streaming", "replication.slots"},
            skips={"replication.lag"},
            says={
                "replication.streaming": "replica-1",
                "replication.slots": "slot elizadb_replica_1 does not exist on the primary",
            },
        )
    finally:
        sql(
            stack,
            "SELECT pg_create_physical_replication_slot('elizadb_replica_1', true)",
            db="postgres",
        )
    expect_repaired(stack, results)


def test_paused_replay_fails_replication_lag(stack: DeployedStack) -> None:
    replica = endpoint(stack, REPLICA_1)
    sql(stack, "SELECT pg_wal_replay_pause()", node=REPLICA_1, db="postgres")
    try:
        # 80 MiB of WAL (logical messages: WAL without tables), above the 64 MiB threshold.
        sql(
            stack,
            "SELECT pg_logical_emit_message(false, 'elizadb-verify-test', "
            "repeat('x', 1048576)) FROM generate_series(1, 80)",
            db="postgres",
        )
        expect(
            results := verify(stack),
            {"replication.lag"},
            says={"replication.lag": f"replica-1 ({replica['host']}:{replica['port']}) replays"},
        )
    finally:
        sql(stack, "SELECT pg_wal_replay_resume()", node=REPLICA_1, db="postgres")
    expect_repaired(stack, results)


def test_stopped_replica_fails_reachable_streaming_and_slots(stack: DeployedStack) -> None:
    replica = stack.client.containers.get(REPLICA_2)
    replica.stop(timeout=20)
    try:
        expect(
            results := verify(stack),
            {"health.reachable", "replication.streaming", "replication.slots"},
            skips=REPLICA_DEPENDENTS | {"tls.non_tls_refused", "tls.certificate", "tls.expiry"},
            says={
                "health.reachable": "replica-2",
                "replication.streaming": "replica-2",
                "replication.slots": "inactive slot elizadb_replica_2",
            },
        )
    finally:
        replica.start()
    expect_repaired(stack, results)


def test_promoted_replica_fails_role_streaming_slots_and_read_only(stack: DeployedStack) -> None:
    # Every node archives WAL into the shared pgBackRest repository: a rogue primary would put
    # its new timeline there, and every standby that follows the latest timeline would then try
    # to follow it. Stop replica-2 from archiving before promoting it (its data is wiped below).
    sql(stack, "ALTER SYSTEM SET archive_command = ''", node=REPLICA_2, db="postgres")
    sql(stack, "SELECT pg_reload_conf()", node=REPLICA_2, db="postgres")
    sql(stack, "SELECT pg_promote()", node=REPLICA_2, db="postgres")
    try:
        expect(
            results := verify(stack),
            {"health.role", "replication.streaming", "replication.slots", "replication.read_only"},
            skips={"replication.lag"},
            says={
                "health.role": "replica-2",
                "replication.read_only": "replica-2",
                "replication.slots": "elizadb_replica_2 is not active",
            },
        )
    finally:
        # A promoted replica cannot follow again: empty its data volume (with a throwaway
        # container of the same image) and start it, which clones the primary afresh.
        container = stack.client.containers.get(REPLICA_2)
        container.stop(timeout=20)
        stack.client.containers.run(
            container.image.id,
            entrypoint=["sh", "-c", "rm -rf /wipe/* /wipe/.[!.]*"],
            volumes={f"{REPLICA_2}-data": {"bind": "/wipe", "mode": "rw"}},
            user="root",
            remove=True,
        )
        container.start()
    expect_repaired(stack, results)


# ---- backups -----------------------------------------------------------------------------------


def test_unmounted_backup_volume_fails_backups_volume(stack: DeployedStack) -> None:
    # Unmounted inside the primary's mount namespace, what is left at the path is the image's
    # empty folder, where backups would die with the container. A helper that shares the
    # primary's PID namespace enters its mounts with CAP_SYS_ADMIN alone: a privileged exec or
    # container asks for every capability, and Docker Engine fails it ("unable to apply caps")
    # where the host's bounding set lacks one, as on these machines (no CAP_SYS_RESOURCE).
    primary = stack.client.containers.get(PRIMARY)
    stack.client.containers.run(
        primary.image.id,
        entrypoint=["nsenter", "-t", "1", "-m", "umount", "-l", "/var/lib/pgbackrest"],
        pid_mode=f"container:{primary.id}",
        cap_add=["SYS_ADMIN"],
        user="root",
        remove=True,
    )
    try:
        expect(
            verify(stack),
            {"backups.volume"},
            says={"backups.volume": "/var/lib/pgbackrest is not a mount point on the primary"},
        )
    finally:
        primary.restart(timeout=30)  # the engine mounts the volume again
    expect_healthy(stack)  # a restarted primary: every check, not only the one that failed


def test_backup_volume_not_writable_fails_backups_writable(stack: DeployedStack) -> None:
    owner = sh(stack, PRIMARY, "stat -c '%u:%g %a' /var/lib/pgbackrest").split()
    sh(stack, PRIMARY, "chown root:root /var/lib/pgbackrest && chmod 755 /var/lib/pgbackrest")
    try:
        expect(
            results := verify(stack),
            {"backups.writable"},
            says={"backups.writable": "Permission denied"},
        )
    finally:
        sh(
            stack,
            PRIMARY,
            f"chown {owner[0]} /var/lib/pgbackrest && chmod {owner[1]} /var/lib/pgbackrest",
        )
    expect_repaired(stack, results)


def test_every_check_passes_after_all_the_faults(stack: DeployedStack) -> None:
    expect_healthy(stack)
