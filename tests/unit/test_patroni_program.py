"""What the program declares for a stack whose failover Patroni decides (elizadb:ha.engine
patroni), under Pulumi's mock runtime: etcd members, nodes run by Patroni, the router, the pooler
behind the router, no slots of eliza-db's own, and secrets kept out of plain inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from elizadb.local.apply import CONTAINER
from elizadb.local.capture import Declaration, Declared, declare
from elizadb.local.state import StateFile
from infra import patroni_roll
from infra.errors import ConfigError
from infra.render import paths
from infra.render.patroni import PATRONI_YML_UPLOAD
from infra.settings import load_settings

PASSWORD = "random:index/randomPassword:RandomPassword"
REPO = Path(__file__).resolve().parents[2]


def _declare(tmp_path: Path, **values: object) -> tuple[Declaration, StateFile]:
    state = StateFile("hat", tmp_path)
    return declare(load_settings("hat", values, "test"), state), state


@pytest.fixture(scope="module")
def patroni(tmp_path_factory: pytest.TempPathFactory) -> tuple[Declaration, StateFile]:
    return _declare(
        tmp_path_factory.mktemp("patroni"),
        ha={"engine": "patroni"},
        replication={"synchronous": True},
    )


def _container(decl: Declaration, name: str) -> Declared:
    return next(c for c in decl.of_type(CONTAINER) if c.inputs["name"] == name)


def _upload(container: Declared, path: str) -> str:
    return str(next(u["content"] for u in container.inputs["uploads"] if u["file"] == path))


def test_a_patroni_stack_declares_etcd_patroni_nodes_and_a_router(
    patroni: tuple[Declaration, StateFile],
) -> None:
    decl, _ = patroni
    commands = {c.inputs["name"]: c.inputs["command"][0] for c in decl.of_type(CONTAINER)}
    # The readiness job runs a shell script, not the image's entrypoint.
    assert commands.pop("elizadb-hat-ready").startswith("set -eu")
    # So does the config job: the roll script, with the image's python3.
    assert commands.pop("elizadb-hat-config") == "/etc/elizadb/roll/patroni_roll.py"
    assert commands == {
        "elizadb-hat-etcd-1": "etcd",
        "elizadb-hat-primary": "patroni",
        "elizadb-hat-replica-1": "patroni",
        "elizadb-hat-replica-2": "patroni",
        "elizadb-hat-router": "router",
        "elizadb-hat-bootstrap": "job",
        "elizadb-hat-backup-agent": "backup",
        "elizadb-hat-pgbouncer": "pgbouncer",
    }


def test_production_gets_three_etcd_members_and_a_count_can_be_chosen(tmp_path: Path) -> None:
    decl, _ = _declare(tmp_path / "p", environment="production", ha={"engine": "patroni"})
    etcd = sorted(c.inputs["name"] for c in decl.of_type(CONTAINER) if "-etcd-" in c.inputs["name"])
    assert etcd == ["elizadb-hat-etcd-1", "elizadb-hat-etcd-2", "elizadb-hat-etcd-3"]
    members = yaml.safe_load(
        _upload(_container(decl, "elizadb-hat-etcd-2"), f"{paths.ETC}/etcd.yml")
    )
    assert members["initial-cluster"].count("https://") == 3
    with pytest.raises(ConfigError, match=r"elizadb:ha.etcdMembers = 2: must be 1, 3 or 5"):
        load_settings("hat", {"ha": {"engine": "patroni", "etcdMembers": 2}}, "test")


def test_an_unknown_engine_is_refused_with_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match=r"elizadb:ha.engine = 'pacemaker': must be builtin"):
        load_settings("hat", {"ha": {"engine": "pacemaker"}}, "test")


def test_a_patroni_stack_without_tls_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"elizadb:tls.enabled = False: a Patroni stack"):
        load_settings("hat", {"ha": {"engine": "patroni"}, "tls": {"enabled": False}}, "test")


def test_the_pooler_goes_through_the_router_and_the_router_checks_every_node(
    patroni: tuple[Declaration, StateFile],
) -> None:
    decl, _ = patroni
    ini = _upload(_container(decl, "elizadb-hat-pgbouncer"), paths.PGBOUNCER_INI)
    assert "* = host=elizadb-hat-router port=5000 auth_user=pgbouncer_auth" in ini
    cfg = _upload(_container(decl, "elizadb-hat-router"), f"{paths.ETC}/haproxy.cfg")
    for node in ("primary", "replica-1", "replica-2"):
        assert f"verifyhost elizadb-hat-{node}" in cfg


def test_patroni_keeps_the_slots_and_its_config_carries_the_stack_settings(
    patroni: tuple[Declaration, StateFile],
) -> None:
    decl, _ = patroni
    job = _container(decl, "elizadb-hat-bootstrap")
    bootstrap_sql = _upload(job, paths.BOOTSTRAP_SQL)
    assert "pg_create_physical_replication_slot" not in bootstrap_sql
    # Patroni's rewind reads the leader's postgres database, which PUBLIC may not connect to.
    assert 'GRANT CONNECT ON DATABASE postgres TO "eliza_rewind";' in bootstrap_sql
    config = yaml.safe_load(_upload(_container(decl, "elizadb-hat-replica-1"), PATRONI_YML_UPLOAD))
    assert config["name"] == "elizadb-replica-1"  # its slot: elizadb_replica_1, as ever
    assert config["bootstrap"]["dcs"]["synchronous_mode"] is True
    assert config["etcd3"]["hosts"] == ["elizadb-hat-etcd-1:2379"]
    # The tunables are the config job's: a changed one rolls instead of replacing the nodes.
    assert config["bootstrap"]["dcs"]["postgresql"]["parameters"] == {}
    spec = json.loads(_upload(_container(decl, "elizadb-hat-config"), patroni_roll.CLUSTER_JSON))
    assert spec["parameters"]["hnsw.ef_search"] == "40"
    assert [m["name"] for m in spec["members"]] == [
        "elizadb-primary",
        "elizadb-replica-1",
        "elizadb-replica-2",
    ]
    assert spec["members"][1] == {
        "name": "elizadb-replica-1",
        "tls_name": "elizadb-hat-replica-1",
        "address": "10.201.167.11",
        "api_port": 8008,
        "pg_port": 5432,
    }


def test_each_rest_api_is_published_on_the_bind_address_and_named_in_the_outputs(
    patroni: tuple[Declaration, StateFile], tmp_path: Path
) -> None:
    decl, _ = patroni
    for index, node in enumerate(("primary", "replica-1", "replica-2")):
        ports = _container(decl, f"elizadb-hat-{node}").inputs["ports"]
        published = {(p["internal"], p["external"], p["ip"]) for p in ports}
        assert published == {(5432, 15432 + index, "127.0.0.1"), (8008, 18008 + index, "127.0.0.1")}
    # What verify reads: where each member's REST API answers, and what its dynamic
    # configuration must hold (the very values patroni.yml bootstraps it with).
    found = decl.outputs["patroni"]
    assert found["members"][1] == {
        "name": "elizadb-replica-1",
        "node": "elizadb-hat-replica-1",
        "host": "127.0.0.1",
        "port": 18009,
    }
    dcs = yaml.safe_load(_upload(_container(decl, "elizadb-hat-primary"), PATRONI_YML_UPLOAD))[
        "bootstrap"
    ]["dcs"]
    spec = json.loads(_upload(_container(decl, "elizadb-hat-config"), patroni_roll.CLUSTER_JSON))
    assert found["parameters"] == spec["parameters"]
    assert (found["synchronous"], found["synchronousCount"], found["ttl"]) == (
        dcs["synchronous_mode"],
        dcs["synchronous_node_count"],
        dcs["ttl"],
    )
    elsewhere, _ = _declare(tmp_path, ha={"engine": "patroni"}, network={"bindAddress": "10.1.2.3"})
    ports = _container(elsewhere, "elizadb-hat-replica-2").inputs["ports"]
    assert {(p["external"], p["ip"]) for p in ports} == {(15434, "10.1.2.3"), (18010, "10.1.2.3")}
    assert elsewhere.outputs["patroni"]["members"][2]["host"] == "10.1.2.3"
    assert elsewhere.outputs["patroni"]["synchronous"] is False


def test_a_rest_api_port_that_clashes_with_another_published_port_is_refused() -> None:
    values = {"ha": {"engine": "patroni"}, "network": {"patroniApiPortBase": 16431}}
    with pytest.raises(ConfigError) as caught:
        load_settings("hat", values, "test")
    (clash,) = caught.value.problems
    assert clash == (
        "elizadb:network.patroniApiPortBase+1 = 16432: the same host port as "
        "elizadb:network.poolerPort; every published port must differ"
    )
    # A builtin stack publishes no REST API: the same base is no clash there.
    load_settings("hat", {"network": {"patroniApiPortBase": 16431}}, "test")


def test_the_certificate_names_the_router_and_etcd_only_on_patroni_stacks(
    patroni: tuple[Declaration, StateFile], tmp_path: Path
) -> None:
    def names(decl: Declaration) -> list[str]:
        csr = next(r for r in decl.resources if r.typ == "tls:index/certRequest:CertRequest")
        return list(csr.inputs["dnsNames"])

    assert {"elizadb-hat-router", "elizadb-hat-etcd-1"} <= set(names(patroni[0]))
    builtin, _ = _declare(tmp_path)
    assert not any("router" in n or "etcd" in n for n in names(builtin))


def test_no_patroni_secret_is_in_a_plain_input(patroni: tuple[Declaration, StateFile]) -> None:
    decl, state = patroni
    secrets = [
        e["outputs"]["result"] for k, e in state.data["resources"].items() if k.startswith(PASSWORD)
    ]
    assert any(k.endswith("secrets-eliza_rewind") for k in state.data["resources"])
    assert any(k.endswith("secrets-patroni") for k in state.data["resources"])
    for resource in decl.resources:
        for text in resource.plain_strings:
            assert not [s for s in secrets if s in text], f"{resource.name} carries a secret"
    assert "uploads" in _container(decl, "elizadb-hat-primary").secret_inputs


@pytest.mark.parametrize("command", [["failover"], ["watch"], ["drill", "failover"]])
def test_eliza_db_never_fails_over_a_patroni_stack_itself(
    tmp_path: Path, command: list[str]
) -> None:
    """Two deciders would be one too many: on a Patroni stack the kit's own failover, watcher and
    drills refuse, before the engine is asked anything, and say what to use instead."""
    (tmp_path / "Pulumi.hat.yaml").write_text("config:\n  elizadb:ha:\n    engine: patroni\n")
    result = subprocess.run(
        [sys.executable, "-m", "elizadb", *command, "--stack", "hat"],
        cwd=REPO,
        env={
            **os.environ,
            "DOCKER_HOST": "unix:///nonexistent.sock",
            "ELIZADB_PROJECT_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "runs Patroni" in result.stderr and "elizadb switchover --to NODE" in result.stderr
