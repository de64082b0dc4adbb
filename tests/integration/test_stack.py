"""The deployable stack (issue 2), against real containers: primary + 2 replicas + PgBouncer,
streaming over slots, a no-op second `up`, scaling down, and data that survives `down`."""

from __future__ import annotations

import io
import signal
import tarfile
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from elizadb.local import deploy
from elizadb.local.apply import CONTAINER, LABEL_GRACE, LABEL_SPEC, spec_digest
from infra.components.common import stack_filter
from infra.durations import parse_go_duration
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
    """Nothing recreated and nothing restarted: same ids and same start times."""
    before = stack.container_identities()
    report = stack.up()
    after = stack.container_identities()
    assert not report.changed, report
    assert len(before) == 7
    assert before == after


def _file_in(container, path: str) -> str:  # type: ignore[no-untyped-def]
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.getmembers()[0]
        handle = tar.extractfile(member)
        assert handle is not None
        return handle.read().decode()


# Set by the engine itself, not by the image or the declaration: Podman adds the first four to
# every container; Docker Engine adds none of them.
ENGINE_ENV_KEYS = frozenset({"HOSTNAME", "HOME", "TERM", "container"})
# Deploy-time behaviour of the provider (wait for health, run once and attach, keep logs, how
# long a delete waits before it kills), not properties a running container has; each is checked
# where it acts (readiness, the job's exit, tests/unit/test_provider_behaviour.py).
DEPLOY_ONLY_FIELDS = frozenset(
    {"wait", "waitTimeout", "attach", "logs", "mustRun", "destroyGraceSeconds"}
)
CHECKED_FIELDS = frozenset(
    {
        "name",
        "image",
        "command",
        "entrypoints",
        "envs",
        "hostname",
        "labels",
        "memory",
        "memorySwap",
        "shmSize",
        "networksAdvanced",
        "ports",
        "restart",
        "stopSignal",
        "stopTimeout",
        "healthcheck",
        "uploads",
        "volumes",
    }
)


def _signal(name_or_number: str | None) -> int | None:
    """Docker reports a stop signal by name ("SIGINT"), Podman by number ("2")."""
    if name_or_number is None or name_or_number.isdigit():
        return None if name_or_number is None else int(name_or_number)
    return int(signal.Signals[name_or_number])


def _env(items: list[str] | None) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items or [])


def _container_drift(stack: DeployedStack, spec: dict, digest: str) -> list[str]:  # type: ignore[type-arg]
    """Every difference between one declared container and the one running, as text."""
    container = stack.client.containers.get(spec["name"])
    attrs = container.attrs
    config, host = attrs["Config"], attrs["HostConfig"]
    image = stack.client.images.get(spec["image"])
    drift: list[str] = []

    def same(field: str, running: object, declared: object) -> None:
        if running != declared:
            drift.append(f"{spec['name']} {field}: running {running!r}, declared {declared!r}")

    same("image", attrs["Image"], image.id)
    same("command", config["Cmd"], spec["command"])
    if spec.get("entrypoints"):
        same("entrypoint", config["Entrypoint"], spec["entrypoints"])
    # Environment, exactly: the declared variables, then the image's own, then the engine's.
    declared_env = _env(spec.get("envs"))
    expected_env = {**_env(image.attrs["Config"].get("Env")), **declared_env}
    running_env = _env(config.get("Env"))
    extra = {k: v for k, v in running_env.items() if k not in expected_env}
    same("env", {k: v for k, v in running_env.items() if k in expected_env}, expected_env)
    same("env set by the engine", sorted(set(extra) - ENGINE_ENV_KEYS), [])
    same("hostname", config.get("Hostname"), spec.get("hostname", config.get("Hostname")))
    expected_labels = {
        **(image.attrs["Config"].get("Labels") or {}),
        **{item["label"]: item["value"] for item in spec["labels"]},
        LABEL_SPEC: digest,
        # The local deploy keeps the declared grace period where a later `down` finds it.
        **(
            {LABEL_GRACE: str(spec["destroyGraceSeconds"])} if "destroyGraceSeconds" in spec else {}
        ),
    }
    same("labels", config["Labels"], expected_labels)
    same(
        "memory", host.get("Memory") or None, (spec["memory"] << 20) if spec.get("memory") else None
    )
    if spec.get("memorySwap"):
        same("memory+swap", host.get("MemorySwap"), spec["memorySwap"] << 20)
    if spec.get("shmSize"):
        same("shm size", host.get("ShmSize"), spec["shmSize"] << 20)
    same("restart policy", host["RestartPolicy"]["Name"] or "no", spec["restart"])
    if "stopSignal" in spec:
        same("stop signal", _signal(config.get("StopSignal")), _signal(spec["stopSignal"]))
    if "stopTimeout" in spec:
        same("stop timeout", config.get("StopTimeout"), spec["stopTimeout"])
    health = spec.get("healthcheck")
    running_health = config.get("Healthcheck") or {}
    if health:
        same(
            "health check",
            {
                k: running_health.get(k)
                for k in ("Test", "Interval", "Timeout", "Retries", "StartPeriod")
            },
            {
                "Test": health["tests"],
                "Interval": parse_go_duration(health["interval"]),
                "Timeout": parse_go_duration(health["timeout"]),
                "Retries": health["retries"],
                "StartPeriod": parse_go_duration(health["startPeriod"]),
            },
        )
    else:
        same("health check", running_health.get("Test"), None)
    for upload in spec.get("uploads") or []:
        same(f"file {upload['file']}", _file_in(container, upload["file"]), upload["content"])
    same(
        "volumes",
        sorted((m["Name"], m["Destination"]) for m in attrs["Mounts"]),
        sorted((v["volumeName"], v["containerPath"]) for v in spec.get("volumes") or []),
    )
    networks = attrs["NetworkSettings"]["Networks"]
    same("networks", sorted(networks), sorted(n["name"] for n in spec["networksAdvanced"]))
    for net in spec["networksAdvanced"]:
        attached = networks.get(net["name"]) or {}
        # The engine adds the container's short id as an alias of its own, and Docker Engine its
        # name as well (which Podman resolves without listing it).
        aliases = set(attached.get("Aliases") or []) - {container.id[:12]}
        if spec["name"] not in (net.get("aliases") or []):
            aliases.discard(spec["name"])
        same(f"aliases on {net['name']}", sorted(aliases), sorted(net.get("aliases") or []))
        # A container that has exited (the one-shot job) holds no address any more.
        if net.get("ipv4Address") and attrs["State"]["Running"]:
            same(f"address on {net['name']}", attached.get("IPAddress"), net["ipv4Address"])
    bindings = sorted(
        (int(port.split("/")[0]), b["HostIp"], int(b["HostPort"]))
        for port, binds in (host.get("PortBindings") or {}).items()
        for b in binds or []
    )
    same(
        "ports",
        bindings,
        sorted((p["internal"], p["ip"], p["external"]) for p in spec.get("ports") or []),
    )
    if spec.get("attach"):
        same("exit code of the one-shot job", attrs["State"]["ExitCode"], 0)
    return drift


def test_running_containers_are_exactly_what_the_pulumi_program_declares(
    stack: DeployedStack,
) -> None:
    """No drift and nothing more: every field of every declared container (image, command, the
    whole environment, hostname, labels, memory, shm, restart policy, stop signal and timeout,
    the whole health check, files, volumes, networks with their aliases and addresses, ports)
    matches the running container, and no container of the stack was left undeclared.

    This can only be as strong as the declaration: it proves that the local deploy applied what
    the program declared, not that the declaration is what `pulumi up` would create. That half
    rests on the program's own tests (tests/unit/test_program_policy.py: the containers, health
    checks, ports, secrets and volumes a declaration must have). Fields that only steer the
    deploy (DEPLOY_ONLY_FIELDS) are not properties of a container and are left to the tests of
    readiness and of the one-shot job."""
    declaration = deploy.declare_stack(stack.settings)
    declared = declaration.of_type(CONTAINER)
    # primary, 2 replicas, pooler, bootstrap job, backup agent, readiness job
    assert len(declared) == 7
    # A field the program starts to declare must be compared here, or named as deploy-only.
    fields = {key for decl in declared for key in decl.inputs}
    assert fields <= CHECKED_FIELDS | DEPLOY_ONLY_FIELDS, sorted(fields - CHECKED_FIELDS)
    drift = [
        line
        for decl in declared
        for line in _container_drift(stack, decl.inputs, spec_digest(decl))
    ]
    assert not drift, "\n".join(drift)
    # Undeclared containers: by the stack's label, and by its name prefix (a container made by
    # hand, without the label, would still shadow a declared name's neighbourhood).
    labelled = stack.client.containers.list(all=True, filters=stack_filter(STACK))
    named = [
        c for c in stack.client.containers.list(all=True) if c.name.startswith(f"elizadb-{STACK}-")
    ]
    declared_names = sorted(decl.inputs["name"] for decl in declared)
    assert sorted(c.name for c in labelled) == declared_names
    assert sorted(c.name for c in named) == declared_names


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
