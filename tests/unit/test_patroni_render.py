"""patroni.yml and etcd member configuration: what Patroni and etcd read, deterministic, TLS
and authentication everywhere, timings within Patroni's rules, and bad inputs refused with every
problem named."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import yaml

from infra.errors import ConfigError
from infra.render import paths
from infra.render.etcd import (
    ETCD_DATA_DIR,
    ETCD_PRIVATE_KEY,
    EtcdCluster,
    EtcdMember,
    client_hosts,
    render_etcd_conf,
)
from infra.render.patroni import (
    BIN_DIR,
    CALLBACK,
    DATA_DIR,
    PatroniCluster,
    PatroniMember,
    PatroniSecrets,
    Timings,
    pg_hba_rows,
    render_patroni_yml,
    slot_name,
)
from tests.unit.hashseeds import assert_same_under_hash_seeds

SECRETS = PatroniSecrets(superuser="su-pw", replication="repl-pw", rewind="rw-pw", api="api-pw")


def _etcd(count: int = 3) -> EtcdCluster:
    return EtcdCluster(
        members=tuple(EtcdMember(f"etcd-{i}", f"etcd-{i}.internal") for i in range(1, count + 1)),
        token="elizadb-staging",
    )


def _cluster(**changes: Any) -> PatroniCluster:
    base = PatroniCluster(
        scope="elizadb-staging",
        members=tuple(PatroniMember(f"pg-{i}", f"pg-{i}.internal") for i in (1, 2, 3)),
        etcd=_etcd(),
        parameters={"work_mem": "4MB", "max_connections": "100"},
    )
    return replace(base, **changes)


def _yml(cluster: PatroniCluster | None = None, name: str = "pg-2") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        render_patroni_yml(cluster or _cluster(), name, SECRETS)
    )
    return loaded


def test_node_identity_addresses_and_postgres_layout() -> None:
    conf = _yml()
    assert (conf["scope"], conf["name"], conf["namespace"]) == (
        "elizadb-staging",
        "pg-2",
        "/elizadb",
    )
    pg = conf["postgresql"]
    assert pg["connect_address"] == "pg-2.internal:5432"
    assert pg["data_dir"] == DATA_DIR == "/var/lib/postgresql/data/pg17"
    assert pg["bin_dir"] == BIN_DIR == "/usr/lib/postgresql/17/bin"
    assert pg["pgpass"].startswith(paths.PRIVATE + "/")
    assert conf["restapi"]["connect_address"] == "pg-2.internal:8008"
    assert "data-checksums" in conf["bootstrap"]["initdb"]
    assert {"auth-host": "scram-sha-256"} in conf["bootstrap"]["initdb"]


def test_every_client_connection_verifies_the_server_against_the_stack_ca() -> None:
    conf = _yml()
    auth = conf["postgresql"]["authentication"]
    assert set(auth) == {"superuser", "replication", "rewind"}
    for role in auth.values():
        assert role["sslmode"] == "verify-full"
        assert role["sslrootcert"] == paths.CA_CERT
    assert auth["replication"]["username"] == "eliza_replicator"
    assert auth["superuser"] == {
        "username": "postgres",
        "password": "su-pw",
        "sslmode": "verify-full",
        "sslrootcert": paths.CA_CERT,
    }


def test_rest_api_and_etcd_use_tls_with_client_certificates_and_a_password() -> None:
    conf = _yml()
    api = conf["restapi"]
    assert api["certfile"] == paths.SERVER_CERT and api["keyfile"] == paths.SERVER_KEY
    assert api["cafile"] == paths.CA_CERT
    assert api["verify_client"] == "optional"  # unsafe endpoints refuse a client without one
    assert api["authentication"] == {"username": "patroni", "password": "api-pw"}
    assert conf["ctl"] == {
        "cacert": paths.CA_CERT,
        "certfile": paths.SERVER_CERT,
        "keyfile": paths.SERVER_KEY,
        "insecure": False,
    }
    etcd = conf["etcd3"]
    assert etcd["protocol"] == "https"
    assert etcd["hosts"] == ["etcd-1.internal:2379", "etcd-2.internal:2379", "etcd-3.internal:2379"]
    assert (etcd["cacert"], etcd["cert"], etcd["key"]) == (
        paths.CA_CERT,
        paths.SERVER_CERT,
        paths.SERVER_KEY,
    )


def test_secrets_only_in_the_patroni_file_never_in_repr() -> None:
    text = render_patroni_yml(_cluster(), "pg-1", SECRETS)
    for secret in ("su-pw", "repl-pw", "rw-pw", "api-pw"):
        assert secret in text
        assert secret not in repr(SECRETS)
    etcd = render_etcd_conf(_etcd(), "etcd-1")
    assert "PRIVATE KEY" not in etcd and ETCD_PRIVATE_KEY in etcd


def test_dynamic_configuration_carries_timings_rewind_slots_and_tunables() -> None:
    dcs = _yml()["bootstrap"]["dcs"]
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (20, 2, 6)
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    pg = dcs["postgresql"]
    assert pg["use_pg_rewind"] is True and pg["use_slots"] is True
    assert pg["parameters"] == {"max_connections": "100", "work_mem": "4MB"}
    assert dcs["synchronous_mode"] is False and "synchronous_node_count" not in dcs


def test_synchronous_mode_when_asked() -> None:
    dcs = _yml(_cluster(synchronous_mode=True, synchronous_mode_strict=True))["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert dcs["synchronous_mode_strict"] is True
    assert dcs["synchronous_node_count"] == 1


def test_forced_parameters_are_local_and_cannot_be_overridden() -> None:
    local = _yml()["postgresql"]["parameters"]
    assert local["ssl"] == "on" and local["password_encryption"] == "scram-sha-256"
    assert local["ssl_key_file"] == paths.SERVER_KEY
    assert local["wal_log_hints"] == "on" and local["archive_mode"] == "off"
    archived = _yml(_cluster(archive_command="pgbackrest archive-push %p"))
    assert archived["postgresql"]["parameters"]["archive_mode"] == "on"
    with pytest.raises(ConfigError) as caught:
        _cluster(parameters={"ssl": "off", "synchronous_standby_names": "*", "Bad-Name": "1"})
    text = str(caught.value)
    assert "parameters.ssl: fixed by eliza-db" in text
    assert "parameters.synchronous_standby_names: set by Patroni itself" in text
    assert "parameters.Bad-Name: not a PostgreSQL parameter name" in text


def test_pg_hba_is_tls_scram_only_with_explicit_reject_last() -> None:
    rows = [r.split() for r in pg_hba_rows(_cluster())]
    assert _yml()["postgresql"]["pg_hba"] == pg_hba_rows(_cluster())
    assert {r[-1] for r in rows} <= {"peer", "reject", "scram-sha-256"}
    assert rows[0] == ["local", "all", "postgres", "peer"]
    assert rows[-1] == ["host", "all", "all", "all", "reject"]
    tcp = [r for r in rows if r[0] != "local"]
    assert [r for r in tcp if r[-1] != "reject"] == [
        ["hostssl", "replication", "eliza_replicator", "all", "scram-sha-256"],
        ["hostssl", "all", "all", "all", "scram-sha-256"],
    ]
    assert tcp.index(["hostnossl", "all", "all", "all", "reject"]) == 0


def test_timings_follow_patronis_rules() -> None:
    assert Timings().problems() == []
    problems = Timings(ttl=10, loop_wait=0, retry_timeout=2).problems()
    assert len(problems) == 3
    assert "timings.ttl: 10 is below Patroni's minimum of 20" in problems
    broken = Timings(ttl=20, loop_wait=5, retry_timeout=8).problems()
    assert broken == [
        (
            "timings: loop_wait + 2 * retry_timeout = 21 exceeds ttl 20; Patroni requires "
            "loop_wait + 2 * retry_timeout <= ttl"
        )
    ]
    with pytest.raises(ConfigError, match="exceeds ttl"):
        _cluster(timings=Timings(ttl=20, loop_wait=5, retry_timeout=8))


def test_bad_cluster_inputs_are_all_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        _cluster(
            scope="Bad Scope",
            members=(PatroniMember("pg-1", "a"), PatroniMember("PG_1", "b c")),
            synchronous_mode=True,
            synchronous_node_count=3,
        )
    problems = caught.value.problems
    assert any(p.startswith("scope: 'Bad Scope'") for p in problems)
    assert any(p.startswith("members.1.name: 'PG_1'") for p in problems)
    assert any(p.startswith("members.1.host: 'b c'") for p in problems)
    assert any(p.startswith("synchronous_node_count: 3 is outside 1..1") for p in problems)
    with pytest.raises(ConfigError, match="member: 'pg-9' is not one of pg-1, pg-2, pg-3"):
        render_patroni_yml(_cluster(), "pg-9", SECRETS)
    with pytest.raises(ConfigError, match="synchronous_mode_strict: needs synchronous_mode"):
        _cluster(synchronous_mode_strict=True)


def test_callbacks_only_where_an_etcd_member_shares_the_nodes_host() -> None:
    assert "callbacks" not in _yml()["postgresql"]
    nearby = replace(_cluster().members[1], etcd_nearby="etcd-2")
    cluster = _cluster(members=(_cluster().members[0], nearby, _cluster().members[2]))
    command = (
        f"{CALLBACK} etcd-2.internal:2379 "
        "etcd-1.internal:2379,etcd-2.internal:2379,etcd-3.internal:2379"
    )
    assert _yml(cluster)["postgresql"]["callbacks"] == {
        "on_role_change": command,
        "on_start": command,
    }
    assert "callbacks" not in _yml(cluster, "pg-1")["postgresql"]
    with pytest.raises(ConfigError) as caught:
        _cluster(members=(replace(nearby, etcd_nearby="etcd-9"),))
    assert caught.value.problems == [
        "members.0.etcd_nearby: 'etcd-9' is not one of the etcd members (etcd-1, etcd-2, etcd-3)"
    ]


def test_slot_names_follow_patronis_rule() -> None:
    assert slot_name("elizadb-pt-pg-1") == "elizadb_pt_pg_1"
    assert slot_name("Node.A") == "node_a"


def test_etcd_member_configuration() -> None:
    conf = yaml.safe_load(render_etcd_conf(_etcd(), "etcd-2"))
    assert conf["name"] == "etcd-2"
    assert conf["data-dir"] == ETCD_DATA_DIR
    assert conf["advertise-client-urls"] == "https://etcd-2.internal:2379"
    assert conf["initial-advertise-peer-urls"] == "https://etcd-2.internal:2380"
    assert conf["listen-client-urls"].startswith("https://")
    assert conf["initial-cluster"] == ",".join(
        f"etcd-{i}=https://etcd-{i}.internal:2380" for i in (1, 2, 3)
    )
    assert conf["initial-cluster-token"] == "elizadb-staging"
    for side in ("client-transport-security", "peer-transport-security"):
        assert conf[side]["client-cert-auth"] is True
        assert conf[side]["trusted-ca-file"] == paths.CA_CERT
        assert conf[side]["key-file"] == ETCD_PRIVATE_KEY
    assert conf["enable-v2"] is False
    single = yaml.safe_load(render_etcd_conf(_etcd(1), "etcd-1"))
    assert single["initial-cluster"] == "etcd-1=https://etcd-1.internal:2380"
    assert client_hosts(_etcd(1)) == ("etcd-1.internal:2379",)


def test_bad_etcd_inputs_are_all_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        EtcdCluster(
            members=(EtcdMember("a", "h1"), EtcdMember("a", "h 2")),
            token="",
            heartbeat_ms=100,
            election_timeout_ms=300,
        )
    problems = caught.value.problems
    assert any(p.startswith("members: 2 given") for p in problems)
    assert any(p.startswith("members: names must be unique") for p in problems)
    assert any(p.startswith("members.1.host: 'h 2'") for p in problems)
    assert any(p.startswith("token: ''") for p in problems)
    assert any(p.startswith("election_timeout_ms: 300 is below five heartbeats") for p in problems)
    with pytest.raises(ConfigError, match="member: 'etcd-9'"):
        render_etcd_conf(_etcd(), "etcd-9")


def test_same_output_under_several_hash_seeds() -> None:
    assert_same_under_hash_seeds(
        "import json\n"
        "from tests.unit.test_patroni_render import SECRETS, _cluster, _etcd\n"
        "from infra.render.patroni import render_patroni_yml\n"
        "from infra.render.etcd import render_etcd_conf\n"
        "c = _cluster(synchronous_mode=True, parameters={'b': '1', 'a': '2', 'work_mem': '1MB'})\n"
        "print(json.dumps([render_patroni_yml(c, n, SECRETS) for n in ('pg-1', 'pg-3')]\n"
        "                 + [render_etcd_conf(_etcd(), n) for n in ('etcd-1', 'etcd-3')]))\n"
    )
