"""The ElizaOS 1.x schema profile (issue 8): the setting, what the bootstrap job applies, the
session-mode pool beside the transaction-mode one, and connection strings node-postgres accepts."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from elizadb.errors import ConfigError
from elizadb.local.capture import Declaration, declare
from elizadb.local.state import StateFile
from infra.profiles import sql_dir
from infra.render.bootstrap import render_bootstrap_sql
from infra.render.connections import node_uri
from infra.render.pgbouncer import render_pgbouncer_ini
from infra.roles import ROLES, eliza_uuid
from infra.settings import load_settings
from infra.topology import topology

CONTAINER = "docker:index/container:Container"


def _declare(tmp_path: Path, **values: object) -> Declaration:
    return declare(load_settings("p8u", values, "test"), StateFile("p8u", tmp_path))


def _job_files(decl: Declaration) -> list[str]:
    job = next(c for c in decl.of_type(CONTAINER) if c.inputs["name"].endswith("-bootstrap"))
    return [u["file"].rsplit("/", 1)[-1] for u in job.inputs["uploads"] if "/sql/" in u["file"]]


def test_the_profile_defaults_to_the_seed_guides_schema_and_rejects_unknown_values() -> None:
    assert load_settings("p8u", {}, "test").profile == "eliza-0.1"
    assert load_settings("p8u", {"schema": {"profile": "eliza-1"}}, "test").profile == "eliza-1"
    with pytest.raises(ConfigError) as err:
        load_settings("p8u", {"schema": {"profile": "eliza-2"}}, "test")
    (problem,) = err.value.problems
    assert "elizadb:schema.profile = 'eliza-2'" in problem
    assert "must be eliza-0.1" in problem and "or eliza-1 (ElizaOS 1.x" in problem


def test_an_eliza1_stack_applies_no_0_1_tables(tmp_path: Path) -> None:
    old = _job_files(_declare(tmp_path / "a"))
    new = _job_files(_declare(tmp_path / "b", schema={"profile": "eliza-1"}))
    assert "0003_core_tables.sql" in old
    assert new == sorted(p.name for p in sql_dir("eliza-1").glob("*.sql"))
    text = "\n".join(p.read_text() for p in sql_dir("eliza-1").glob("*.sql")).lower()
    assert "create table if not exists public." not in text
    for extension in ("vector", "fuzzystrmatch", "pgcrypto"):
        assert f"create extension if not exists {extension}" in text
    # Grants follow the tables the plugin's migrations create later as the migration role.
    assert "alter default privileges for role eliza_owner in schema public" in text


def test_pgbouncer_serves_a_session_mode_pool_beside_the_transaction_pool() -> None:
    settings = load_settings("p8u", {"schema": {"profile": "eliza-1"}}, "test")
    ini = render_pgbouncer_ini(settings, topology(settings))
    lines = ini.splitlines()
    assert "pool_mode = transaction" in lines
    (session,) = [line for line in lines if line.startswith("eliza_session = ")]
    assert session.endswith("dbname=eliza pool_mode=session")
    assert "host=elizadb-p8u-primary port=5432" in session
    # Protocol-level prepared statements through the transaction pool (PgBouncer >= 1.21).
    assert "max_prepared_statements = 200" in lines


def test_node_connection_strings_are_single_host_with_an_absolute_ca(tmp_path: Path) -> None:
    decl = _declare(tmp_path, schema={"profile": "eliza-1"})
    assert "nodeConnections" in decl.secret_outputs
    node = dict(decl.outputs["nodeConnections"])
    assert node.pop("servers") == {}
    assert set(node) == {"migrator", "agentPooler", "agentSession", "owner", "agentPrimary"}
    pooler_port = decl.outputs["pooler"]["port"]
    expected = {
        "migrator": ("eliza_owner", pooler_port, "/eliza_session"),
        "agentPooler": ("eliza_agent", pooler_port, "/eliza"),
        "agentSession": ("eliza_agent", pooler_port, "/eliza_session"),
        "owner": ("eliza_owner", decl.outputs["primary"]["port"], "/eliza"),
        "agentPrimary": ("eliza_agent", decl.outputs["primary"]["port"], "/eliza"),
    }
    for key, uri in node.items():
        parts = urlsplit(uri)
        query = parse_qs(parts.query)
        assert "," not in parts.netloc, f"{key}: node-postgres cannot parse several hosts"
        assert (parts.username, parts.port, parts.path) == expected[key], key
        assert query["sslmode"] == ["verify-full"], key
        (root,) = query["sslrootcert"]
        assert Path(root).is_absolute() and root.endswith("elizadb-p8u-ca.crt"), (key, root)
        assert "target_session_attrs" not in query, key
    # The libpq forms are unchanged: multi-host with read-write targeting.
    assert "target_session_attrs=read-write" in decl.outputs["connections"]["owner"]
    assert decl.outputs["schemaProfile"] == "eliza-1"
    assert decl.outputs["poolerSessionDatabase"] == "eliza_session"


def test_node_uri_escapes_credentials_and_keeps_the_path_readable() -> None:
    uri = node_uri("a", "p@ss:w/rd", "127.0.0.1", 16432, "eliza", tls=True, root_cert="/x/ca.crt")
    assert uri == (
        "postgresql://a:p%40ss%3Aw%2Frd@127.0.0.1:16432/eliza"
        "?sslmode=verify-full&sslrootcert=/x/ca.crt"
    )
    assert node_uri("a", "b", "h", 1, "d", tls=False, root_cert="") == (
        "postgresql://a:b@h:1/d?sslmode=disable"
    )


def test_server_ids_become_uuids_as_elizaos_core_derives_them() -> None:
    # Values printed by @elizaos/core 1.7.2's stringToUuid().
    assert eliza_uuid("server-a") == "0e60d922-a668-058d-aa77-de7459303254"
    assert eliza_uuid("server-b") == "b6654fa1-90e6-0d14-a81c-cd625fa2b914"
    given = "0E60D922-A668-058D-AA77-DE7459303254"
    assert eliza_uuid(given) == given  # a UUID is taken as it is


def test_each_isolated_server_gets_a_role_pinned_to_its_server_id(tmp_path: Path) -> None:
    values = {"schema": {"profile": "eliza-1", "servers": ["server-a", "server-b"]}}
    settings = load_settings("p8u", values, "test")
    passwords = {r.name: "pw" for r in (*ROLES, *settings.server_roles)}
    passwords["postgres"] = "pw"
    sql = render_bootstrap_sql(settings, topology(settings), passwords, "seed")
    assert 'GRANT "eliza_agent" TO "eliza_server_server_a";' in sql
    assert (
        'ALTER ROLE "eliza_server_server_b" IN DATABASE "eliza" SET app.server_id = '
        "'b6654fa1-90e6-0d14-a81c-cd625fa2b914';"
    ) in sql
    decl = _declare(tmp_path, **values)
    servers = decl.outputs["nodeConnections"]["servers"]
    assert set(servers) == {"server-a", "server-b"}
    assert urlsplit(servers["server-a"]).username == "eliza_server_server_a"
    assert urlsplit(servers["server-a"]).path == "/eliza"  # the transaction-mode pool


def test_server_roles_are_refused_outside_eliza1_or_with_unusable_ids() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings("p8u", {"schema": {"servers": ["a"]}}, "test")
    assert "elizadb:schema.servers" in err.value.problems[0]
    assert "eliza-1" in err.value.problems[0]
    with pytest.raises(ConfigError) as err:
        load_settings("p8u", {"schema": {"profile": "eliza-1", "servers": ["A B"]}}, "test")
    assert "'A B' is not a usable ELIZA_SERVER_ID" in err.value.problems[0]


def test_verify_runs_the_checks_of_the_stacks_profile() -> None:
    from verify.checks import ALL_CHECKS

    def ids(profile: str) -> set[str]:
        return {c.id for c in ALL_CHECKS if profile in c.profiles}

    seed, plugin = ids("eliza-0.1"), ids("eliza-1")
    assert {"schema.tables", "security.user_isolation", "vector.recall"} <= seed - plugin
    assert {
        "schema.plugin_tables",
        "security.plugin_roles",
        "security.plugin_rls",
        "vector.plugin_search",
    } <= plugin - seed
    # Both: what does not depend on whose tables they are.
    assert {"schema.extensions", "schema.migrations", "security.public_privileges"} <= (
        seed & plugin
    )
    assert {"health.reachable", "tls.certificate"} <= seed & plugin


def test_a_move_refuses_an_embedding_size_the_plugin_has_no_column_for() -> None:
    from elizadb.errors import UsageError
    from elizadb.ops import eliza1_move

    with pytest.raises(UsageError) as err:
        eliza1_move.carry_over(None, 1000)  # type: ignore[arg-type]  # refused before any I/O
    assert "elizadb:embeddingDimensions = 1000" in str(err.value)
    assert "384, 512, 768, 1024, 1536, 3072" in str(err.value)


def test_a_move_report_marks_what_is_missing() -> None:
    from elizadb.ops.eliza1_move import MoveReport, Tally, render

    report = MoveReport((Tally("memories", 3, 2),), 3, 3, {"goals": 1, "knowledge": 0})
    assert not report.complete
    assert "memories" in render(report) and "<- MISSING" in render(report)
    assert "goals: 1" in render(report)


def test_a_database_name_leaves_room_for_the_session_pools_name() -> None:
    assert load_settings("p8u", {"database": "d" * 55}, "test").database == "d" * 55
    with pytest.raises(ConfigError) as err:
        load_settings("p8u", {"database": "d" * 56}, "test")
    assert "at most 55 characters" in err.value.problems[0]
