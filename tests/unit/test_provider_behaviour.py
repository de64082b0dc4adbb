"""The provider behaviours the stack relies on, as tests: a failed job fails the deploy with its
log (the provider itself only records the exit code), every container that holds data, the
pooler and the backup agent stop with a grace period (the provider kills at once without one),
and a job whose inputs change is replaced, so it runs again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest

from elizadb.local import apply, capture
from elizadb.local.capture import Declaration, Declared, declare
from elizadb.local.state import StateFile
from infra.components import bootstrap
from infra.settings import load_settings
from infra.topology import DATA_MOUNT
from tests.unit.provider_schema import SCHEMA_DIR

CONTAINER = "docker:index/container:Container"
MIN_DATABASE_GRACE_SECONDS = 60


def _declare(tmp_path: Path, **values: Any) -> Declaration:
    state = StateFile("dev", tmp_path)
    declaration = declare(load_settings("dev", values, "test"), state)
    state.save()  # the next declaration in tmp_path keeps the secrets and the stack id
    return declaration


def _containers(declaration: Declaration) -> dict[str, Declared]:
    return {c.name: c for c in declaration.of_type(CONTAINER)}


def _job_exits(
    monkeypatch: pytest.MonkeyPatch, job: str, code: int, log: str, registered: list[str]
) -> None:
    """The mock provider reports what the real one records for an attached container that
    stopped: its exit code and its log. `registered` collects the custom resources made."""
    original = capture._LocalMocks.new_resource

    def exits(self: Any, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        rid, state = original(self, args)
        if args.custom:
            registered.append(args.name)
        if args.typ == CONTAINER and args.name == job:
            state = {**state, "exitCode": code, "containerLogs": log}
        return rid, state

    monkeypatch.setattr(capture._LocalMocks, "new_resource", exits)


def test_a_failed_job_fails_the_deploy_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = "applying 0003_core_tables.sql\nERROR:  relation memories already exists\n"
    _job_exits(monkeypatch, "bootstrap", 3, log, [])
    with pytest.raises(bootstrap.JobFailed) as failed:
        _declare(tmp_path)
    message = str(failed.value)
    assert "elizadb-dev-bootstrap failed with exit code 3" in message
    assert "ERROR:  relation memories already exists" in message


def test_nothing_is_built_on_a_failed_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[str] = []
    _job_exits(monkeypatch, "bootstrap", 1, "boom", registered)
    with pytest.raises(bootstrap.JobFailed):
        _declare(tmp_path)
    assert "primary" in registered and "bootstrap" in registered
    assert not {"replica-1", "replica-2", "pgbouncer", "backup-agent", "ready"} & set(registered)


def test_the_job_result_is_checked_by_everything_after_it(tmp_path: Path) -> None:
    """Replicas, pooler and agent wait on the checked result, not merely on the container."""
    containers = _containers(_declare(tmp_path))
    job = containers["bootstrap"]
    assert job.inputs["attach"] is True and job.inputs["logs"] is True
    assert job.inputs["mustRun"] is False
    for name in ("replica-1", "replica-2", "pgbouncer", "backup-agent"):
        assert job.urn in containers[name].dependencies, name


def test_check_job_exit_accepts_only_zero() -> None:
    assert bootstrap.check_job_exit("job", 0, "") == "job"
    for code in (1, 2, None):
        with pytest.raises(bootstrap.JobFailed):
            bootstrap.check_job_exit("job", code, "")


@pytest.mark.parametrize("replicas", [0, 2])
def test_data_pooler_and_agent_containers_stop_with_a_grace_period(
    tmp_path: Path, replicas: int
) -> None:
    containers = _containers(_declare(tmp_path, replicas=replicas))
    holds_data = {
        name
        for name, c in containers.items()
        if any(v["containerPath"] == DATA_MOUNT for v in c.inputs.get("volumes") or [])
    }
    assert len(holds_data) == replicas + 1
    for name in holds_data | {"pgbouncer", "backup-agent"}:
        inputs = containers[name].inputs
        grace = inputs.get("destroyGraceSeconds")
        assert grace, f"{name} has no destroyGraceSeconds: the provider would kill it at once"
        assert inputs.get("stopTimeout") == grace, f"{name}: docker stop and delete differ"
        if name in holds_data:
            assert grace >= MIN_DATABASE_GRACE_SECONDS, f"{name}: {grace}s is too short"


def test_the_local_path_removes_with_the_declared_grace_period() -> None:
    stopped: list[int] = []

    class Container:
        def __init__(self) -> None:
            self.labels = {apply.LABEL_SPEC: "x", apply.LABEL_GRACE: "120"}

        def stop(self, timeout: int) -> None:
            stopped.append(timeout)

        def remove(self, force: bool) -> None:
            pass

    class Containers:
        def get(self, name: str) -> Container:
            return Container()

    class Client:
        containers = Containers()
        api = None

    apply.Applier(Client(), "dev", lambda _: None).remove("elizadb-dev-primary")  # type: ignore[arg-type]
    assert stopped == [120]
    assert apply.grace_seconds({}) == 0  # not ours: as the provider, no grace declared


def test_a_changed_migration_replaces_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider replaces a container when a force-new input changes; the job's uploads carry
    every migration, so a changed one makes a new job container, which runs."""
    force_new = set(
        json.loads((SCHEMA_DIR / "provider-checks.json").read_text())[CONTAINER]["forceNew"]
    )
    before = _containers(_declare(tmp_path))["bootstrap"].inputs
    sql = tmp_path / "sql"
    sql.mkdir()
    for path in bootstrap.migration_files():
        (sql / path.name).write_text(path.read_text())
    (sql / "9999_extra.sql").write_text("SELECT 1;\n")
    monkeypatch.setattr(bootstrap, "migration_files", lambda directory: sorted(sql.glob("*.sql")))
    after = _containers(_declare(tmp_path))["bootstrap"].inputs
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {"uploads"}
    assert changed <= force_new


def test_fixed_names_are_deleted_before_they_are_replaced(tmp_path: Path) -> None:
    """The provider makes a replacement before it deletes the old resource, unless told: a
    network or volume with a fixed name (a new network.subnet) would collide with itself."""
    declaration = _declare(tmp_path)
    fixed = [
        r
        for r in declaration.resources
        if r.typ in ("docker:index/network:Network", "docker:index/volume:Volume")
    ]
    assert len(fixed) == 8
    for resource in fixed:
        assert resource.inputs.get("name"), resource.name
        assert resource.delete_before_replace, f"{resource.name} is not delete-before-replace"
        if resource.typ == "docker:index/volume:Volume":
            # labels are ForceNew: a volume made before stack ids must not be replaced for them
            assert "labels" in resource.ignore_changes, resource.name


def test_a_memory_limit_comes_with_its_swap_limit(tmp_path: Path) -> None:
    """The provider updates memory in place; the engine refuses a memory limit above the swap
    limit it set at creation unless a new swap limit comes with it."""
    for name, container in _containers(_declare(tmp_path)).items():
        if "memory" in container.inputs:
            assert container.inputs.get("memorySwap") == container.inputs["memory"], name


def test_what_the_provider_would_update_in_place_replaces_the_container(tmp_path: Path) -> None:
    """The provider changes memory and the restart policy with `docker update`, which Podman's
    Docker API does not have, and the local deploy replaces the container: every container
    asks Pulumi to replace it on such a change, so both paths and both engines agree."""
    in_place = set(
        json.loads((SCHEMA_DIR / "provider-checks.json").read_text())[CONTAINER]["updatedInPlace"]
    )
    for name, container in _containers(_declare(tmp_path)).items():
        declared = in_place & set(container.inputs)
        assert declared <= container.replace_on_changes, f"{name}: {declared}"


def test_no_container_relies_on_the_engines_health_status(tmp_path: Path) -> None:
    """`wait` polls the engine's health status, which Podman keeps only with systemd timers:
    the readiness job asks every server itself, after they all exist."""
    containers = _containers(_declare(tmp_path))
    assert not [name for name, c in containers.items() if c.inputs.get("wait")]
    ready = containers["ready"]
    assert ready.inputs["attach"] is True and ready.inputs["mustRun"] is False
    targets = next(e for e in ready.inputs["envs"] if e.startswith("ELIZADB_READY_TARGETS="))
    for name in ("primary", "replica-1", "replica-2", "pgbouncer"):
        assert containers[name].urn in ready.dependencies, name
        assert f"elizadb-dev-{name}=" in targets, name
    # every server's container id is an input: replacing one re-runs the check
    ids = next(e for e in ready.inputs["envs"] if e.startswith("ELIZADB_READY_CONTAINERS="))
    assert ids.count(",") == 3


def test_a_failed_readiness_check_fails_the_deploy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = "ready: elizadb-dev-primary\nelizadb-dev-replica-1 (10.0.0.11:5432) does not ...\n"
    _job_exits(monkeypatch, "ready", 1, log, [])
    with pytest.raises(bootstrap.JobFailed, match="elizadb-dev-ready failed with exit code 1"):
        _declare(tmp_path)
