"""Stacks on several Docker hosts (elizadb:hosts, elizadb:placement): what validation refuses,
and what the program declares under Pulumi's mock runtime: one docker provider per host, every
resource on its part's host, peers addressed at the hosts' addresses and published ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from elizadb.engine import HostEngine
from elizadb.local.apply import CONTAINER
from elizadb.local.capture import Declaration, Declared, declare
from elizadb.local.hosts import stack_engines
from elizadb.local.placement_change import declared_volume_hosts, misplaced
from elizadb.local.state import StateFile
from infra.errors import ConfigError
from infra.render import paths
from infra.render.patroni import CALLBACK, PATRONI_YML_UPLOAD
from infra.settings import load_settings

PROVIDER = "pulumi:providers:docker"
HOSTS = {
    "a": {"url": "unix:///run/a/docker.sock", "address": "10.20.0.11"},
    "b": {"url": "ssh://admin@10.20.0.12", "address": "10.20.0.12"},
    "c": {"url": "tcp://10.20.0.13:2376", "address": "10.20.0.13", "certPath": "/etc/elizadb/c"},
}
SPREAD: dict[str, Any] = {"environment": "production", "ha": {"engine": "patroni"}, "hosts": HOSTS}


def _problems(values: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings("mh", values, "test")
    return caught.value.problems


def _declare(tmp_path: Path, values: dict[str, Any]) -> Declaration:
    return declare(load_settings("mh", values, "test"), StateFile("mh", tmp_path))


@pytest.fixture(scope="module")
def spread(tmp_path_factory: pytest.TempPathFactory) -> Declaration:
    return _declare(tmp_path_factory.mktemp("spread"), SPREAD)


def _host_of(decl: Declaration, resource: Declared) -> str:
    provider = decl.by_urn[resource.provider]
    assert provider.typ == PROVIDER
    return provider.name.removeprefix("host-")


def _container(decl: Declaration, name: str) -> Declared:
    return next(c for c in decl.of_type(CONTAINER) if c.inputs["name"] == name)


def _upload(container: Declared, path: str) -> str:
    return str(next(u["content"] for u in container.inputs["uploads"] if u["file"] == path))


def test_without_hosts_everything_is_local_and_no_provider_is_declared(tmp_path: Path) -> None:
    settings = load_settings("mh", {"ha": {"engine": "patroni"}}, "test")
    assert set(settings.placed.values()) == {"local"} and not settings.multi_host
    decl = _declare(tmp_path, {"ha": {"engine": "patroni"}})
    assert not decl.of_type(PROVIDER)
    assert all(r.provider == "" for r in decl.resources)
    assert set(decl.outputs["placement"].values()) == {"local"}
    # Named as before hosts existed: nothing of a deployed stack is renamed.
    assert not any(r.alias_names for r in decl.resources)
    assert {"primary", "primary-data", "etcd-1", "pgbouncer"} <= {r.name for r in decl.resources}
    builtin = _declare(tmp_path / "builtin", {})
    assert "patroni" not in builtin.outputs  # only Patroni stacks have a REST API to read


def test_parts_go_round_robin_unless_placed() -> None:
    settings = load_settings("mh", {**SPREAD, "placement": {"pooler": "c"}}, "test")
    assert settings.placed == {
        "primary": "a",
        "replica-1": "b",
        "replica-2": "c",
        "etcd-1": "a",
        "etcd-2": "b",
        "etcd-3": "c",
        "pooler": "c",
    }


def test_every_resource_is_declared_on_its_parts_host(spread: Declaration) -> None:
    providers = {p.name: p.inputs for p in spread.of_type(PROVIDER)}
    assert providers == {
        "host-a": {"host": "unix:///run/a/docker.sock"},
        "host-b": {"host": "ssh://admin@10.20.0.12"},
        "host-c": {"host": "tcp://10.20.0.13:2376", "certPath": "/etc/elizadb/c"},
    }
    where = {
        c.inputs["name"].removeprefix("elizadb-mh-"): _host_of(spread, c)
        for c in spread.of_type(CONTAINER)
    }
    assert where == {
        "etcd-1": "a",
        "etcd-2": "b",
        "etcd-3": "c",
        "primary": "a",
        "replica-1": "b",
        "replica-2": "c",
        "router": "a",
        "config": "a",
        "bootstrap": "a",
        "pgbouncer": "a",
        "ready": "a",
        "backup-agent": "a",
    }
    # Each host builds the image and has the stack network and a backup volume of its own.
    for typ in ("docker:index/remoteImage:RemoteImage", "docker:index/network:Network"):
        assert sorted(_host_of(spread, r) for r in spread.of_type(typ)) == ["a", "b", "c"]
    volumes = {
        r.inputs["name"]: _host_of(spread, r) for r in spread.of_type("docker:index/volume:Volume")
    }
    assert volumes["elizadb-mh-replica-2-data"] == "c"
    assert volumes["elizadb-mh-etcd-2-data"] == "b"
    assert spread.outputs["placement"]["elizadb-mh-replica-1"] == "b"


def test_a_part_placed_on_another_host_is_a_new_resource_to_pulumi(
    spread: Declaration, tmp_path: Path
) -> None:
    """Pulumi records a changed provider without replacing the resource, as pulumi-docker asks
    for no replacement when `host` changes: so on declared hosts a part's host is in its
    resources' names. Two replicas that swap hosts get new URNs (created on the new host, the
    old ones deleted on the old: their protected data volumes make the preview fail), every
    other resource keeps its URN, and each placed component is aliased to its name from before
    hosts were in it."""
    swapped = _declare(tmp_path, {**SPREAD, "placement": {"replica-1": "c", "replica-2": "b"}})
    before, after = {r.urn for r in spread.resources}, {r.urn for r in swapped.resources}

    def docker_names(decl: Declaration, urns: set[str]) -> set[str]:
        return {r.inputs["name"] for r in decl.resources if r.urn in urns and r.custom}

    moved = {
        f"elizadb-mh-{node}{part}"
        for node in ("replica-1", "replica-2")
        for part in ("", "-data", "-run")
    }
    assert docker_names(spread, before - after) == moved
    assert docker_names(swapped, after - before) == moved
    old_data = [r for r in spread.resources if r.urn in before - after and r.name.endswith("-data")]
    assert len(old_data) == 2 and all(r.protect for r in old_data)
    aliased = {r.name: r.alias_names for r in spread.resources if not r.custom and r.alias_names}
    assert aliased == {
        f"{part}-{host}": frozenset({part})
        for part, host in [
            ("etcd-1", "a"),
            ("etcd-2", "b"),
            ("etcd-3", "c"),
            ("primary", "a"),
            ("replica-1", "b"),
            ("replica-2", "c"),
            *((job, "a") for job in ("router", "config", "bootstrap", "pgbouncer", "ready")),
            ("backup-agent", "a"),
        ]
    }


def test_peers_reach_each_other_at_the_hosts_addresses_and_published_ports(
    spread: Declaration,
) -> None:
    replica = _container(spread, "elizadb-mh-replica-1")
    config = yaml.safe_load(_upload(replica, PATRONI_YML_UPLOAD))
    assert config["postgresql"]["connect_address"] == "10.20.0.12:15433"
    assert config["restapi"]["connect_address"] == "10.20.0.12:18009"
    assert config["postgresql"]["listen"] == "0.0.0.0:5432"
    assert config["etcd3"]["hosts"] == ["10.20.0.11:12379", "10.20.0.12:12380", "10.20.0.13:12381"]
    published = {(p["internal"], p["external"], p["ip"]) for p in replica.inputs["ports"]}
    assert published == {
        (5432, 15433, "10.20.0.12"),
        (8008, 18009, "10.20.0.12"),
        (8432, 18434, "10.20.0.12"),  # pgBackRest's server, for the backup agent
    }
    etcd = _container(spread, "elizadb-mh-etcd-3")
    conf = yaml.safe_load(_upload(etcd, f"{paths.ETC}/etcd.yml"))
    assert conf["initial-advertise-peer-urls"] == "https://10.20.0.13:12481"
    assert conf["advertise-client-urls"] == "https://10.20.0.13:12381"
    assert conf["listen-peer-urls"] == "https://0.0.0.0:2380"
    assert {(p["internal"], p["external"]) for p in etcd.inputs["ports"]} == {
        (2379, 12381),
        (2380, 12481),
    }
    haproxy = _upload(_container(spread, "elizadb-mh-router"), f"{paths.ETC}/haproxy.cfg")
    assert "10.20.0.13:15434 check port 18010" in haproxy
    (csr,) = spread.of_type("tls:index/certRequest:CertRequest")
    assert {"10.20.0.11", "10.20.0.12", "10.20.0.13"} <= set(csr.inputs["ipAddresses"])
    # Clients reach each node and the pooler at its host's address; verify reads each REST API
    # there too.
    assert spread.outputs["primary"]["host"] == "10.20.0.11"
    assert [r["host"] for r in spread.outputs["replicas"]] == ["10.20.0.12", "10.20.0.13"]
    assert [(m["host"], m["port"]) for m in spread.outputs["patroni"]["members"]] == [
        ("10.20.0.11", 18008),
        ("10.20.0.12", 18009),
        ("10.20.0.13", 18010),
    ]


def test_a_node_that_leads_moves_etcds_leadership_off_its_host(spread: Declaration) -> None:
    """On several hosts each node's Patroni calls back, on start and on a change of role, with
    the etcd member of its own host and every member: image/patroni-callback.py hands etcd's
    leadership elsewhere when this node leads."""
    members = "10.20.0.11:12379,10.20.0.12:12380,10.20.0.13:12381"
    for name, nearby in (("primary", "10.20.0.11:12379"), ("replica-2", "10.20.0.13:12381")):
        config = yaml.safe_load(
            _upload(_container(spread, f"elizadb-mh-{name}"), PATRONI_YML_UPLOAD)
        )
        command = f"{CALLBACK} {nearby} {members}"
        assert config["postgresql"]["callbacks"] == {
            "on_role_change": command,
            "on_start": command,
        }


def test_across_hosts_the_backup_agent_is_the_repository_host(spread: Declaration) -> None:
    """The nodes archive, into no volume of theirs: the agent on the pooler's host keeps the
    repository, publishes its pgBackRest server there and mounts no node's volume."""
    agent = _container(spread, "elizadb-mh-backup-agent")
    assert _host_of(spread, agent) == "a"
    assert [(p["internal"], p["external"], p["ip"]) for p in agent.inputs["ports"]] == [
        (8432, 18432, "10.20.0.11")
    ]
    assert [v["containerPath"] for v in agent.inputs["volumes"]] == ["/var/lib/pgbackrest"]
    assert "repo1-path=/var/lib/pgbackrest" in _upload(agent, "/etc/pgbackrest/pgbackrest.conf")
    assert _upload(agent, paths.SERVER_KEY_UPLOAD)  # the key it proves itself with
    for name in ("elizadb-mh-primary", "elizadb-mh-replica-2"):
        node = _container(spread, name)
        config = yaml.safe_load(_upload(node, PATRONI_YML_UPLOAD))
        assert config["postgresql"]["parameters"]["archive_mode"] == "on"
        assert "archive-push" in config["postgresql"]["parameters"]["archive_command"]
        assert "/var/lib/pgbackrest" not in [v["containerPath"] for v in node.inputs["volumes"]]
        conf = _upload(node, "/etc/pgbackrest/pgbackrest.conf")
        assert "repo1-host=10.20.0.11" in conf and "repo1-host-port=18432" in conf
    # Verify's checks of a mounted repository do not apply: the outputs say there is none.
    assert spread.outputs["backupMount"] == ""


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"hosts": {"a": {"url": "tcp://10.0.0.1:2375"}}},
            (
                "elizadb:hosts.a.url = 'tcp://10.0.0.1:2375': a Docker API over TCP without client "
                "certificates gives root"
            ),
        ),
        (
            {"hosts": {"a": {"url": "http://x"}}},
            "elizadb:hosts.a.url = 'http://x': must be unix:///path/to/docker.sock",
        ),
        (
            {"hosts": {"a": {}}, "placement": {"replica-1": "b"}},
            "elizadb:placement.replica-1 = 'b': not a host of elizadb:hosts (declared: a)",
        ),
        (
            {"hosts": {"a": {}}, "placement": {"replica-7": "a"}},
            (
                "elizadb:placement.replica-7 = 'a': this stack has no such part; parts are primary, "
                "replica-1, replica-2, pooler"
            ),
        ),
        (
            {"hosts": {"a": {"address": "10.0.0.1"}, "b": {"address": "10.0.0.2"}}},
            "elizadb:hosts: the stack spans 2 hosts (a, b) but elizadb:ha.engine is builtin",
        ),
        (
            {"ha": {"engine": "patroni"}, "hosts": {"a": {"address": "10.0.0.1"}, "b": {}}},
            "elizadb:hosts.b.address: missing; a stack on several hosts needs the address",
        ),
        (
            {"ha": {"engine": "patroni"}, "hosts": {"a": {"address": "127.0.0.1"}, "b": {}}},
            "elizadb:hosts.a.address = '127.0.0.1': must be an address the other hosts can reach",
        ),
        (
            {
                **SPREAD,
                "hosts": {"a": HOSTS["a"], "b": HOSTS["b"]},
            },
            "elizadb:placement: host 'a' holds 2 of the 3 etcd members, a majority",
        ),
        (
            {**SPREAD, "placement": {"replica-1": "a", "etcd-2": "b"}},
            "elizadb:placement: host 'a' runs 2 PostgreSQL nodes while host 'b' runs none",
        ),
        (
            {**SPREAD, "network": {"etcdPeerPortBase": 12379}},
            (
                "elizadb:network: etcd-1's peer port and etcd-1's client port would both publish "
                "port 12379 on host 'a'"
            ),
        ),
    ],
)
def test_bad_hosts_and_placements_are_refused_with_the_reason(
    values: dict[str, Any], expected: str
) -> None:
    found = _problems(values)
    assert any(p.startswith(expected) for p in found), found


def test_a_development_stack_may_crowd_hosts() -> None:
    values = {"ha": {"engine": "patroni"}, "hosts": {"a": HOSTS["a"], "b": HOSTS["b"]}}
    values["placement"] = {"primary": "a", "replica-1": "a", "replica-2": "b"}
    assert load_settings("mh", values, "test").placed["replica-1"] == "a"


def test_the_cli_finds_each_container_on_its_host() -> None:
    settings = load_settings("mh", {**SPREAD, "placement": {"pooler": "b"}}, "test")
    engines = stack_engines(settings)
    assert engines.hosts == {
        "a": HostEngine("unix:///run/a/docker.sock"),
        "b": HostEngine("ssh://admin@10.20.0.12"),
        "c": HostEngine("tcp://10.20.0.13:2376", "/etc/elizadb/c"),
    }
    where = {
        name: engines.host_of(f"elizadb-mh-{name}")
        for name in ("primary", "replica-2", "etcd-2", "pgbouncer", "router", "bootstrap")
    }
    assert where == {
        "primary": "a",
        "replica-2": "c",
        "etcd-2": "b",
        "pgbouncer": "b",
        "router": "b",
        "bootstrap": "b",
    }
    single = stack_engines(load_settings("mh", {}, "test"))
    assert single.hosts == {"local": HostEngine()} and single.host_of("anything") == "local"


def test_up_refuses_a_placement_that_moves_a_part_away_from_its_data() -> None:
    """Where each data volume was found against where the placement now puts its part."""
    swapped = {"replica-1": "c", "replica-2": "b", "etcd-2": "c", "etcd-3": "b"}
    declared = declared_volume_hosts(load_settings("mh", {**SPREAD, "placement": swapped}, "t"))
    assert declared["elizadb-mh-replica-1-data"] == ("replica-1", "c")
    assert declared["elizadb-mh-etcd-3-data"] == ("etcd-3", "b")
    # As deployed before the change (round-robin). Socket volumes, and the data of a node the
    # stack no longer has, belong to no part and stay out of it.
    found = {
        "a": ["elizadb-mh-primary-data", "elizadb-mh-primary-run", "elizadb-mh-etcd-1-data"],
        "b": ["elizadb-mh-replica-1-data", "elizadb-mh-etcd-2-data", "elizadb-mh-replica-9-data"],
        "c": ["elizadb-mh-replica-2-data", "elizadb-mh-etcd-3-data"],
    }
    said = [
        f"{part}'s data (elizadb-mh-{part}-data) is on host {was}, and elizadb:placement.{part} "
        f"now says {now}"
        for part, was, now in [
            ("etcd-2", "b", "c"),
            ("replica-1", "b", "c"),
            ("etcd-3", "c", "b"),
            ("replica-2", "c", "b"),
        ]
    ]
    assert misplaced(declared, found) == said
    unmoved = declared_volume_hosts(load_settings("mh", SPREAD, "t"))
    assert misplaced(unmoved, found) == []
