"""Policy over what the Pulumi program declares, under Pulumi's mock runtime: health checks,
port bindings, secrets kept secret, data volumes protected, and the dependency order that lets
replicas clone only after the bootstrap job has made their role and slot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from elizadb.local.capture import Declaration, Declared, declare
from elizadb.local.state import StateFile
from infra.settings import load_settings
from tests.unit.hashseeds import assert_same_under_hash_seeds

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
PASSWORD = "random:index/randomPassword:RandomPassword"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"


def _declare(tmp_path: Path, stack: str = "dev", **values: object) -> tuple[Declaration, StateFile]:
    state = StateFile(stack, tmp_path)
    return declare(load_settings(stack, values, "test"), state), state


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> tuple[Declaration, StateFile]:
    return _declare(tmp_path_factory.mktemp("policy"))


def _secrets(state: StateFile) -> list[str]:
    values: list[str] = []
    for key, entry in state.data["resources"].items():
        outputs = entry["outputs"]
        if key.startswith(PASSWORD):
            values.append(outputs["result"])
        if key.startswith(PRIVATE_KEY):
            # A recognisable slice of the key body, not the PEM armour.
            values.append(outputs["privateKeyPem"].splitlines()[2])
    return values


def _containers(decl: Declaration) -> list[Declared]:
    return decl.of_type(CONTAINER)


def test_the_program_declares_the_expected_containers(dev: tuple[Declaration, StateFile]) -> None:
    names = sorted(c.inputs["name"] for c in _containers(dev[0]))
    assert names == [
        "elizadb-dev-backup-agent",
        "elizadb-dev-bootstrap",
        "elizadb-dev-pgbouncer",
        "elizadb-dev-primary",
        "elizadb-dev-ready",
        "elizadb-dev-replica-1",
        "elizadb-dev-replica-2",
    ]


def test_every_long_running_container_has_a_health_check(
    dev: tuple[Declaration, StateFile],
) -> None:
    for c in _containers(dev[0]):
        if c.inputs.get("attach"):  # the bootstrap and readiness jobs run to completion instead
            assert c.inputs.get("mustRun") is False, c.name
            continue
        health = c.inputs.get("healthcheck") or {}
        assert health.get("tests"), f"{c.name} has no health check"
        assert c.inputs.get("restart") == "unless-stopped", c.name


def test_ports_are_published_on_loopback_only_by_default(
    dev: tuple[Declaration, StateFile],
) -> None:
    published = [(c.name, p) for c in _containers(dev[0]) for p in c.inputs.get("ports") or []]
    assert len(published) == 4
    for name, port in published:
        assert port["ip"] == "127.0.0.1", f"{name} publishes {port}"


def test_a_configured_bind_address_is_used(tmp_path: Path) -> None:
    decl, _ = _declare(tmp_path, network={"bindAddress": "0.0.0.0"})
    ips = {p["ip"] for c in _containers(decl) for p in c.inputs.get("ports") or []}
    assert ips == {"0.0.0.0"}
    assert decl.outputs["primary"]["host"] == "127.0.0.1"


def test_no_secret_appears_in_plain_inputs_or_outputs(dev: tuple[Declaration, StateFile]) -> None:
    decl, state = dev
    secrets = _secrets(state)
    assert len(secrets) >= 10  # 8 role passwords, the salt seed, 2 private keys
    for resource in decl.resources:
        for text in resource.plain_strings:
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"{resource.typ} {resource.name} carries a secret in a plain input"
    for key, value in decl.outputs.items():
        if key in decl.secret_outputs:
            continue
        leaked = [s for s in secrets if s in repr(value)]
        assert not leaked, f"plain output {key} carries a secret"
    assert "connections" in decl.secret_outputs
    # and the secrets really are in the secret parts: uploads of the primary carry the key
    primary = next(c for c in _containers(decl) if c.name == "primary")
    assert "uploads" in primary.secret_inputs


def test_no_password_is_passed_in_a_container_environment(
    dev: tuple[Declaration, StateFile],
) -> None:
    _, state = dev
    secrets = _secrets(state)
    for c in _containers(dev[0]):
        for env in c.inputs.get("envs") or []:
            assert not any(s in env for s in secrets), f"{c.name}: {env.split('=')[0]}"


def test_data_and_backup_volumes_are_protected(dev: tuple[Declaration, StateFile]) -> None:
    volumes = dev[0].of_type(VOLUME)
    assert sorted(v.inputs["name"] for v in volumes) == [
        "elizadb-dev-backup",
        "elizadb-dev-primary-data",
        "elizadb-dev-primary-run",
        "elizadb-dev-replica-1-data",
        "elizadb-dev-replica-1-run",
        "elizadb-dev-replica-2-data",
        "elizadb-dev-replica-2-run",
    ]
    for v in volumes:
        if v.inputs["name"].endswith("-run"):  # a server's socket folder: nothing to keep
            continue
        assert v.protect and v.retain_on_delete, f"volume {v.inputs['name']} is not protected"


def test_replicas_and_pooler_depend_on_the_bootstrap_job(
    dev: tuple[Declaration, StateFile],
) -> None:
    decl = dev[0]
    job = next(c for c in _containers(decl) if c.inputs.get("attach"))
    primary = next(c for c in _containers(decl) if c.name == "primary")
    assert primary.urn in job.dependencies
    for c in _containers(decl):
        if c.name.startswith("replica-") or c.name == "pgbouncer":
            assert job.urn in c.dependencies, f"{c.name} does not wait for the bootstrap job"


def test_secrets_are_generated_once_per_stack(tmp_path: Path) -> None:
    first, state = _declare(tmp_path)
    state.save()
    second, _ = _declare(tmp_path)
    assert first.outputs["connections"] == second.outputs["connections"]
    assert first.outputs["caCert"] == second.outputs["caCert"]
    assert (tmp_path / "dev.state.json").stat().st_mode & 0o077 == 0


DECLARE = """
import json, sys
from pathlib import Path
from elizadb.local.capture import declare
from elizadb.local.state import StateFile
from infra.settings import load_settings
declaration = declare(load_settings("dev", {}, "test"), StateFile("dev", Path(sys.argv[1])))
# Registration order is async and may vary; what is declared must not.
print(json.dumps(sorted([r.typ, r.name, r.inputs] for r in declaration.resources), sort_keys=True))
"""


def test_declarations_are_deterministic(tmp_path: Path) -> None:
    """The same declaration from fresh interpreters under several hash seeds (the secrets come
    from one saved state file, as on a real machine)."""
    _, state = _declare(tmp_path)
    state.save()
    script = DECLARE.replace("sys.argv[1]", repr(str(tmp_path)))
    assert_same_under_hash_seeds(script)


def test_scaling_changes_only_what_it_must(tmp_path: Path) -> None:
    two, state = _declare(tmp_path)
    state.save()
    one, _ = _declare(tmp_path, replicas=1)

    def by_name(d: Any) -> dict[str, Any]:
        return {c.inputs["name"]: c.inputs for c in _containers(d)}

    a, b = by_name(two), by_name(one)
    assert set(a) - set(b) == {"elizadb-dev-replica-2"}
    # the certificate and the pooler do not change; nodes learn their new set of peers
    assert a["elizadb-dev-pgbouncer"] == b["elizadb-dev-pgbouncer"]
    # the job runs again to drop the removed replica's slot
    assert a["elizadb-dev-bootstrap"] != b["elizadb-dev-bootstrap"]
