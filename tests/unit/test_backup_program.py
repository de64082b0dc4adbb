"""What the Pulumi program declares for backups, under Pulumi's mock runtime: a backup agent with
a health check that mounts every node's data and socket volumes and names no primary (so a
failover changes nothing in it), nodes that share their socket folder and carry the same
pgBackRest file, and a schedule taken from the stack config."""

from __future__ import annotations

from pathlib import Path

from elizadb.local.capture import Declaration, Declared, declare
from elizadb.local.state import StateFile
from infra.render.pgbackrest import CONF_PATH, NODES_DIR
from infra.settings import load_settings

CONTAINER = "docker:index/container:Container"


def _declare(tmp_path: Path, **values: object) -> Declaration:
    state = StateFile("dev", tmp_path)
    declaration = declare(load_settings("dev", values, "test"), state)
    state.save()
    return declaration


def _container(decl: Declaration, name: str) -> Declared:
    return next(c for c in decl.of_type(CONTAINER) if c.inputs["name"] == name)


def _uploads(c: Declared) -> dict[str, str]:
    return {u["file"]: u["content"] for u in c.inputs.get("uploads") or []}


def test_the_agent_mounts_the_repository_and_every_nodes_data_and_socket(tmp_path: Path) -> None:
    agent = _container(_declare(tmp_path), "elizadb-dev-backup-agent")
    mounts = {v["containerPath"]: v["volumeName"] for v in agent.inputs["volumes"]}
    assert mounts == {
        "/var/lib/pgbackrest": "elizadb-dev-backup",
        f"{NODES_DIR}/primary/data": "elizadb-dev-primary-data",
        f"{NODES_DIR}/primary/run": "elizadb-dev-primary-run",
        f"{NODES_DIR}/replica-1/data": "elizadb-dev-replica-1-data",
        f"{NODES_DIR}/replica-1/run": "elizadb-dev-replica-1-run",
        f"{NODES_DIR}/replica-2/data": "elizadb-dev-replica-2-data",
        f"{NODES_DIR}/replica-2/run": "elizadb-dev-replica-2-run",
    }
    assert agent.inputs["command"] == ["backup", "schedule"]
    assert agent.inputs["healthcheck"]["tests"] == ["CMD", "elizadb-backup", "health"]
    assert agent.inputs["restart"] == "unless-stopped"
    assert "repo1-retention-full=2" in _uploads(agent)[CONF_PATH]
    assert not agent.inputs.get("ports"), "the agent publishes nothing"


def test_the_schedule_and_retention_come_from_the_stack_config(tmp_path: Path) -> None:
    decl = _declare(tmp_path, backup={"retentionFull": 3, "fullEvery": "12h", "incrEvery": "90s"})
    agent = _container(decl, "elizadb-dev-backup-agent")
    assert sorted(agent.inputs["envs"]) == ["ELIZADB_FULL_EVERY=43200", "ELIZADB_INCR_EVERY=90"]
    assert "repo1-retention-full=3" in _uploads(agent)[CONF_PATH]


def test_the_agent_waits_for_the_bootstrap_job(tmp_path: Path) -> None:
    decl = _declare(tmp_path)
    job = _container(decl, "elizadb-dev-bootstrap")
    agent = _container(decl, "elizadb-dev-backup-agent")
    assert job.urn in agent.dependencies


def test_a_failover_changes_neither_the_agent_nor_any_node(tmp_path: Path) -> None:
    before = _declare(tmp_path)
    after = _declare(tmp_path, primaryNode="replica-1")
    for name in ("elizadb-dev-backup-agent", "elizadb-dev-primary", "elizadb-dev-replica-1"):
        assert _container(before, name).inputs == _container(after, name).inputs, name


def test_changing_the_backup_schedule_restarts_no_server(tmp_path: Path) -> None:
    before = _declare(tmp_path)
    after = _declare(tmp_path, backup={"retentionFull": 5, "fullEvery": "1d", "incrEvery": "1h"})
    for name in ("elizadb-dev-primary", "elizadb-dev-replica-1", "elizadb-dev-replica-2"):
        assert _container(before, name).inputs == _container(after, name).inputs, name
    assert (
        _container(before, "elizadb-dev-backup-agent").inputs
        != _container(after, "elizadb-dev-backup-agent").inputs
    )


def test_every_node_shares_its_socket_and_carries_the_same_pgbackrest_file(tmp_path: Path) -> None:
    decl = _declare(tmp_path)
    files = set()
    for name in ("elizadb-dev-primary", "elizadb-dev-replica-1", "elizadb-dev-replica-2"):
        node = _container(decl, name)
        mounts = {v["containerPath"]: v["volumeName"] for v in node.inputs["volumes"]}
        assert mounts["/run/postgresql"] == f"{name}-run"
        assert mounts["/var/lib/pgbackrest"] == "elizadb-dev-backup"
        files.add(_uploads(node)[CONF_PATH])
    assert len(files) == 1


def test_the_image_of_restore_jobs_is_the_declared_one(tmp_path: Path) -> None:
    from elizadb.ops.backup import image_ref, stack_image

    settings = load_settings("dev", {"image": {"base": "localhost/debian:trixie"}}, "test")
    declaration = declare(settings, StateFile("dev", tmp_path))
    assert stack_image(settings) == image_ref(declaration)
