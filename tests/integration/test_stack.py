"""The deployable stack (issue 2), against real containers: primary + 2 replicas + PgBouncer,
streaming over slots, a no-op second `up`, scaling down, and data that survives `down`."""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from elizadb.local import deploy
from elizadb.local.apply import CONTAINER
from tests.integration.stacks import DeployedStack, deployed_stack, stack_settings

pytestmark = pytest.mark.integration
STACK = "itstack"
PORT_BASE = 41500


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(tmp_path_factory.mktemp("stack"), STACK, PORT_BASE) as handle:
        yield handle


def _superuser(stack: DeployedStack) -> psycopg.Connection:
    return psycopg.connect(stack.connections["superuser"], autocommit=True)


def test_primary_lists_both_replicas_streaming_with_active_slots(stack: DeployedStack) -> None:
    with _superuser(stack) as conn:
        rows = conn.execute(
            "SELECT r.application_name, r.state, s.slot_name, s.active"
            "  FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid"
            " ORDER BY 1"
        ).fetchall()
    assert rows == [
        ("elizadb_replica_1", "streaming", "elizadb_replica_1", True),
        ("elizadb_replica_2", "streaming", "elizadb_replica_2", True),
    ]


def test_row_written_on_primary_is_readable_on_both_replicas_within_a_second(
    stack: DeployedStack,
) -> None:
    email = f"{uuid.uuid4()}@replication.test"
    with psycopg.connect(stack.connections["agentPrimary"], autocommit=True) as conn:
        conn.execute("INSERT INTO accounts (name, email) VALUES ('probe', %s)", (email,))
        written = time.monotonic()
    seen: dict[str, float] = {}
    replicas = [
        psycopg.connect(uri, autocommit=True) for uri in stack.connections["readonlyReplicas"]
    ]
    try:
        while len(seen) < len(replicas) and time.monotonic() - written < 5:
            for i, conn in enumerate(replicas):
                if (
                    i not in seen
                    and conn.execute("SELECT 1 FROM accounts WHERE email = %s", (email,)).fetchone()
                ):
                    seen[i] = time.monotonic() - written
            time.sleep(0.01)
    finally:
        for conn in replicas:
            conn.close()
    assert len(seen) == 2, f"replicas that saw the row: {seen}"
    assert max(seen.values()) < 1.0, f"replication delays (s): {seen}"


def test_pooler_accepts_connections_and_reaches_the_primary(stack: DeployedStack) -> None:
    with psycopg.connect(stack.connections["agentPooler"], autocommit=True) as conn:
        user, in_recovery, ssl = conn.execute(
            "SELECT current_user, pg_is_in_recovery(),"
            " (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())"
        ).fetchone()
    assert (user, in_recovery, ssl) == ("eliza_agent", False, True)


def test_replicas_reject_writes(stack: DeployedStack) -> None:
    with (
        psycopg.connect(stack.connections["readonlyReplicas"][0], autocommit=True) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute("CREATE TEMP TABLE t (x int)")


def test_second_up_recreates_nothing(stack: DeployedStack) -> None:
    # This stack's containers only: other checkouts' tests come and go on the same engine.
    mine = {"label": f"elizadb.stack={STACK}"}
    before = {c.name: c.id for c in stack.client.containers.list(all=True, filters=mine)}
    report = stack.up()
    after = {c.name: c.id for c in stack.client.containers.list(all=True, filters=mine)}
    assert not report.changed, report
    assert before == after


def _file_in(container, path: str) -> str:  # type: ignore[no-untyped-def]
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.getmembers()[0]
        handle = tar.extractfile(member)
        assert handle is not None
        return handle.read().decode()


def test_running_containers_are_exactly_what_the_pulumi_program_declares(
    stack: DeployedStack,
) -> None:
    """No drift: each container the program declares runs with the declared image, command,
    environment, labels, files, volumes, network aliases, ports, health check and restart policy."""
    declaration = deploy.declare_stack(stack.settings)
    declared = declaration.of_type(CONTAINER)
    # primary, 2 replicas, pooler, bootstrap job, backup agent, readiness job
    assert len(declared) == 7
    for decl in declared:
        spec = decl.inputs
        container = stack.client.containers.get(spec["name"])
        attrs = container.attrs
        config, host = attrs["Config"], attrs["HostConfig"]
        where = spec["name"]
        assert config["Image"].endswith(spec["image"].split("/", 1)[-1]), where
        assert config["Cmd"] == spec["command"], where
        if spec.get("entrypoints"):
            assert config["Entrypoint"] == spec["entrypoints"], where
        if spec.get("memory"):
            assert host["Memory"] == spec["memory"] * 1024**2, where
            assert host["MemorySwap"] == spec["memorySwap"] * 1024**2, where
        if spec.get("stopTimeout"):
            assert config["StopTimeout"] == spec["stopTimeout"], where
        assert set(spec.get("envs") or []) <= set(config["Env"] or []), where
        for label in spec["labels"]:
            assert config["Labels"][label["label"]] == label["value"], where
        for upload in spec.get("uploads") or []:
            assert _file_in(container, upload["file"]) == upload["content"], (
                f"{where}:{upload['file']}"
            )
        mounts = {(m["Name"], m["Destination"]) for m in attrs["Mounts"]}
        assert mounts == {
            (v["volumeName"], v["containerPath"]) for v in spec.get("volumes") or []
        }, where
        networks = attrs["NetworkSettings"]["Networks"]
        for net in spec["networksAdvanced"]:
            assert net["name"] in networks, where
            assert set(net.get("aliases") or []) <= set(
                networks[net["name"]].get("Aliases") or []
            ), where
        bindings = {
            (int(port.split("/")[0]), b["HostIp"], int(b["HostPort"]))
            for port, binds in (host.get("PortBindings") or {}).items()
            for b in binds or []
        }
        assert bindings == {
            (p["internal"], p["ip"], p["external"]) for p in spec.get("ports") or []
        }, where
        if spec.get("healthcheck"):
            assert config["Healthcheck"]["Test"] == spec["healthcheck"]["tests"], where
        assert (host["RestartPolicy"]["Name"] or "no") == spec["restart"], where


def test_scale_down_removes_one_replica_and_drops_its_slot_then_down_up_keeps_data(
    stack: DeployedStack,
) -> None:
    email = f"{uuid.uuid4()}@survives.test"
    with psycopg.connect(stack.connections["agentPrimary"], autocommit=True) as conn:
        conn.execute("INSERT INTO accounts (name, email) VALUES ('keep', %s)", (email,))

    report = stack.up(stack_settings(STACK, PORT_BASE, replicas=1))
    assert report.removed == [f"elizadb-{STACK}-replica-2"]
    names = {c.name for c in stack.client.containers.list(all=True)}
    assert f"elizadb-{STACK}-replica-2" not in names
    assert f"elizadb-{STACK}-replica-1" in names
    with _superuser(stack) as conn:
        slots = conn.execute("SELECT slot_name, active FROM pg_replication_slots").fetchall()
    assert slots == [("elizadb_replica_1", True)]

    stack.down(delete_volumes=False)
    assert not [
        c for c in stack.client.containers.list(all=True) if c.name.startswith(f"elizadb-{STACK}-")
    ]
    stack.up()
    with psycopg.connect(stack.connections["agentPrimary"], autocommit=True) as conn:
        assert conn.execute("SELECT name FROM accounts WHERE email = %s", (email,)).fetchone() == (
            "keep",
        )
