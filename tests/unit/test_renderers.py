"""Pure renderers: deterministic output, safe defaults (no trust, TLS-only SCRAM, explicit
reject last), and the settings they must honour."""

from __future__ import annotations

import base64
import hashlib
import hmac

from infra.render.bootstrap import render_bootstrap_sql
from infra.render.connections import connection_uri, render_pgpass
from infra.render.pgbouncer import render_pgbouncer_ini, render_userlist
from infra.render.postgres import render_pg_hba, render_postgresql_conf
from infra.render.scram import scram_verifier
from infra.roles import ROLES, SUPERUSER
from infra.settings import load_settings
from infra.topology import topology
from tests.unit.hashseeds import assert_same_under_hash_seeds

DEV = load_settings("dev", {}, "test")
PROD = load_settings("prod", {"environment": "production"}, "test")


def _rules(hba: str) -> list[list[str]]:
    return [line.split() for line in hba.splitlines() if line and not line.startswith("#")]


def test_pg_hba_is_tls_scram_only_with_explicit_reject_last() -> None:
    rules = _rules(render_pg_hba(DEV))
    methods = {r[-1] for r in rules}
    assert "trust" not in methods and "md5" not in methods and "password" not in methods
    assert rules[-1] == ["host", "all", "all", "all", "reject"]
    tcp = [r for r in rules if r[0] != "local"]
    assert tcp[0] == ["hostnossl", "all", "all", "all", "reject"]
    assert all(r[0] == "hostssl" for r in tcp[1:-1]), tcp
    assert ["hostssl", "replication", "eliza_replicator", "all", "scram-sha-256"] in rules


def test_postgresql_conf_forces_tls_and_replica_settings() -> None:
    topo = topology(DEV)
    primary = render_postgresql_conf(DEV, topo, topo.primary)
    replica = render_postgresql_conf(DEV, topo, topo.replicas[0])
    for conf in (primary, replica):
        assert "ssl = on" in conf
        assert "ssl_min_protocol_version = 'TLSv1.2'" in conf
        assert "password_encryption = 'scram-sha-256'" in conf
        assert "wal_log_hints = on" in conf
    # Role-neutral: both carry standby settings; only standby.signal makes a standby.
    assert "primary_slot_name = 'elizadb_primary'" in primary
    assert "primary_slot_name = 'elizadb_replica_1'" in replica
    conninfo = next(line for line in replica.splitlines() if line.startswith("primary_conninfo"))
    assert "sslmode=verify-full" in conninfo and "password=" not in conninfo
    assert "target_session_attrs=read-write" in conninfo
    assert "host=elizadb-dev-primary,elizadb-dev-replica-1,elizadb-dev-replica-2 " in conninfo
    assert "hostaddr=" in conninfo


def test_node_configuration_does_not_change_with_a_failover() -> None:
    before = load_settings("dev", {"replicas": 2}, "t")
    after = load_settings("dev", {"replicas": 2, "primaryNode": "replica-1"}, "t")
    a, b = topology(before), topology(after)
    for i in range(3):
        assert render_postgresql_conf(before, a, a.nodes[i]) == render_postgresql_conf(
            after, b, b.nodes[i]
        )


def test_user_parameters_override_defaults_and_render_sorted() -> None:
    settings = load_settings(
        "dev", {"postgres": {"parameters": {"work_mem": "64MB", "jit": False}}}, "t"
    )
    conf = render_postgresql_conf(settings, topology(settings), topology(settings).primary)
    assert "work_mem = '64MB'" in conf and "jit = off" in conf
    tunables = conf.split("elizadb:postgres.parameters\n")[1].splitlines()
    assert tunables == sorted(tunables)


def test_the_iterative_scan_bound_is_a_default_a_stack_may_override() -> None:
    # The adapter's duplicate check scans to this bound in busy rooms (bench/results/agent/
    # dedupe); pgvector's own 20000 made it take seconds at 16 connections.
    topo = topology(DEV)
    assert (
        "hnsw.max_scan_tuples = 5000"
        in render_postgresql_conf(DEV, topo, topo.primary).splitlines()
    )
    raised = load_settings(
        "dev", {"postgres": {"parameters": {"hnsw.max_scan_tuples": 20000}}}, "t"
    )
    conf = render_postgresql_conf(raised, topology(raised), topology(raised).primary)
    assert "hnsw.max_scan_tuples = 20000" in conf.splitlines() and "= 5000" not in conf


def test_production_uses_quorum_synchronous_replication() -> None:
    topo = topology(PROD)
    conf = render_postgresql_conf(PROD, topo, topo.primary)
    assert 'synchronous_standby_names = \'ANY 1 ("elizadb_primary", "elizadb_replica_1", ' in conf
    assert "synchronous_standby_names = ''" in render_postgresql_conf(
        DEV, topology(DEV), topology(DEV).primary
    )


def test_pgbouncer_ini_carries_the_guides_pool_and_tls_on_both_legs() -> None:
    ini = render_pgbouncer_ini(DEV, topology(DEV))
    lines = set(ini.splitlines())
    for expected in (
        "default_pool_size = 20",
        "server_idle_timeout = 30",
        "server_connect_timeout = 2",
        "auth_type = scram-sha-256",
        "client_tls_sslmode = require",
        "server_tls_sslmode = verify-full",
        "* = host=elizadb-dev-primary port=5432 auth_user=pgbouncer_auth",
    ):
        assert expected in lines, expected


def test_pgbouncer_logs_in_again_half_a_second_after_a_failed_login() -> None:
    """Not PgBouncer's 15 s: in a switchover its first login lands on the demoted leader, and
    for 15 s the pooler's clients could not write although the new leader was serving."""
    assert "server_login_retry = 0.5" in render_pgbouncer_ini(DEV, topology(DEV)).splitlines()


RENDER_ALL = """
import json
from infra.render.bootstrap import render_bootstrap_sql
from infra.render.pgbouncer import render_pgbouncer_ini
from infra.render.postgres import render_pg_hba, render_postgresql_conf
from infra.roles import ROLES, SUPERUSER
from infra.settings import load_settings
from infra.topology import topology
for stack, values in (("dev", {}), ("prod", {"environment": "production"})):
    settings = load_settings(stack, values, "test")
    topo = topology(settings)
    passwords = {r.name: f"pw-{r.name}" for r in ROLES} | {SUPERUSER: "pw-su"}
    print(json.dumps([
        *(render_postgresql_conf(settings, topo, node) for node in topo.nodes),
        render_pg_hba(settings),
        render_pgbouncer_ini(settings, topo),
        render_bootstrap_sql(settings, topo, passwords, "seed"),
    ]))
"""


def test_renderers_are_deterministic() -> None:
    """The same text from fresh interpreters under several hash seeds."""
    assert_same_under_hash_seeds(RENDER_ALL)


def test_bootstrap_sql_sends_verifiers_never_passwords() -> None:
    topo = topology(DEV)
    passwords = {r.name: f"plain-{r.name}-secret" for r in ROLES} | {SUPERUSER: "su"}
    sql = render_bootstrap_sql(DEV, topo, passwords, "seed")
    assert "plain-" not in sql
    assert sql.count("PASSWORD 'SCRAM-SHA-256$4096:") == len(ROLES)
    assert "SET log_statement = 'none';" in sql.splitlines()[:8]
    assert "ARRAY['elizadb_primary', 'elizadb_replica_1', 'elizadb_replica_2']" in sql


def test_scram_verifier_matches_rfc_5802_derivation() -> None:
    verifier = scram_verifier("pencil", "eliza_agent", "seed")
    assert verifier == scram_verifier("pencil", "eliza_agent", "seed")
    assert verifier != scram_verifier("pencil", "eliza_owner", "seed")
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert method == "SCRAM-SHA-256" and iterations == "4096"
    assert stored == hashlib.sha256(client_key).digest()
    assert server == hmac.new(salted, b"Server Key", hashlib.sha256).digest()


def test_connection_strings_and_password_files_escape_what_they_must() -> None:
    uri = connection_uri(
        "eliza_agent", "p@ss:w/rd", [("127.0.0.1", 16432)], "eliza", tls=True, root_cert="ca.crt"
    )
    assert uri == (
        "postgresql://eliza_agent:p%40ss%3Aw%2Frd@127.0.0.1:16432/eliza"
        "?sslmode=verify-full&sslrootcert=ca.crt"
    )
    multi = connection_uri("o", "p", [("h", 1), ("h", 2)], "db", tls=False, root_cert="")
    assert multi == "postgresql://o:p@h:1,h:2/db?sslmode=disable&target_session_attrs=read-write"
    assert render_pgpass([("*", "postgres", "a:b\\c")]) == "*:*:*:postgres:a\\:b\\\\c\n"
    assert render_userlist('x"y') == '"pgbouncer_auth" "x""y"\n'
