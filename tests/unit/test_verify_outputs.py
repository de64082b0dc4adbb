"""load_outputs: the outputs shape is checked once, every bad key is named at once."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from verify.errors import OutputsError
from verify.outputs import load_outputs

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _uri(user: str, hosts: str, db: str = "eliza") -> str:
    return f"postgresql://{user}:pw@{hosts}/{db}?sslmode=verify-full&sslrootcert=x.crt"


def sample_outputs() -> dict[str, Any]:
    """Outputs of a stack with two replicas, as `elizadb outputs --json --show-secrets` prints."""
    rw = "127.0.0.1:15432,127.0.0.1:15433,127.0.0.1:15434"
    return {
        "stack": "dev",
        "environment": "development",
        "database": "eliza",
        "embeddingDimensions": 1536,
        "tls": True,
        "caCert": CA,
        "caCertPath": "elizadb-dev-ca.crt",
        "network": "elizadb-dev-net",
        "backupVolume": "elizadb-dev-backup",
        "nodeNames": ["elizadb-dev-primary", "elizadb-dev-replica-1", "elizadb-dev-replica-2"],
        "primary": {
            "name": "elizadb-dev-primary",
            "host": "127.0.0.1",
            "port": 15432,
            "role": "primary",
        },
        "replicas": [
            {
                "name": f"elizadb-dev-replica-{i}",
                "host": "127.0.0.1",
                "port": 15432 + i,
                "role": "replica",
            }
            for i in (1, 2)
        ],
        "pooler": {
            "name": "elizadb-dev-pgbouncer",
            "host": "127.0.0.1",
            "port": 16432,
            "role": "pooler",
        },
        "connections": {
            "superuser": _uri("postgres", rw, "postgres") + "&target_session_attrs=read-write",
            "owner": _uri("eliza_owner", rw),
            "agentPrimary": _uri("eliza_agent", rw),
            "agentPooler": _uri("eliza_agent", "127.0.0.1:16432"),
            "userPooler": _uri("eliza_user", "127.0.0.1:16432"),
            "poolerAdmin": _uri("pgbouncer_auth", "127.0.0.1:16432", "pgbouncer"),
            "readonlyReplicas": [
                _uri("eliza_readonly", "127.0.0.1:15433"),
                _uri("eliza_readonly", "127.0.0.1:15434"),
            ],
        },
    }


def _problems(raw: Any) -> list[str]:
    with pytest.raises(OutputsError) as caught:
        load_outputs(raw)
    assert caught.value.exit_code == 2
    return caught.value.problems


def test_valid_outputs_load_with_labelled_endpoints() -> None:
    out = load_outputs(sample_outputs())
    assert [e.label for e in out.endpoints] == ["primary", "replica-1", "replica-2", "pooler"]
    assert out.replicas[1].port == 15434 and out.pooler.name == "elizadb-dev-pgbouncer"
    assert out.connections.readonly_replicas[0].endswith("sslrootcert=x.crt")
    assert out.embedding_dimensions == 1536 and out.tls is True


def test_a_file_loads_like_the_dict(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(sample_outputs()))
    assert load_outputs(path) == load_outputs(sample_outputs())
    assert load_outputs(str(path)) == load_outputs(sample_outputs())


def test_every_problem_is_named_with_its_key_at_once() -> None:
    raw = sample_outputs()
    del raw["primary"]["port"]
    del raw["connections"]["poolerAdmin"]
    raw["replicas"][0]["host"] = 5
    raw["embeddingDimensions"] = True
    assert _problems(raw) == [
        "embeddingDimensions: expected int, got bool True",
        "primary.port: missing",
        "replicas[0].host: expected str, got int 5",
        "connections.poolerAdmin: missing",
    ]


def test_masked_secrets_say_how_to_get_them() -> None:
    raw = sample_outputs()
    raw["connections"] = "[secret]"
    assert _problems(raw) == [
        "connections: masked as '[secret]'; export the outputs with --show-secrets"
    ]
    raw = sample_outputs()
    raw["connections"]["readonlyReplicas"][1] = "[secret]"
    assert _problems(raw) == [
        (
            "connections.readonlyReplicas[1]: masked as '[secret]'; export "
            "the outputs with --show-secrets"
        )
    ]


def test_replica_connection_strings_must_match_the_replicas() -> None:
    raw = sample_outputs()
    raw["replicas"].pop()
    assert _problems(raw) == ["connections.readonlyReplicas: 2 connection strings for 1 replicas"]


def test_malformed_values_are_refused() -> None:
    raw = sample_outputs()
    raw["connections"]["owner"] = "host=a port"
    raw["caCert"] = "not a certificate"
    raw["embeddingDimensions"] = 0
    problems = _problems(raw)
    assert problems[0] == "embeddingDimensions: 0 is outside 1..2000"
    assert problems[1] == "caCert: not a PEM certificate"
    assert problems[2].startswith("connections.owner: not a libpq connection string")


def test_without_tls_no_ca_is_needed() -> None:
    raw = copy.deepcopy(sample_outputs())
    raw["tls"] = False
    del raw["caCert"]
    assert load_outputs(raw).ca_cert == ""


def test_unreadable_or_non_json_files_are_errors(tmp_path: Path) -> None:
    assert _problems(tmp_path / "missing.json")[0].startswith("cannot read the file")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert _problems(bad)[0].startswith("not JSON")
    bad.write_text("[1]")
    assert _problems(bad) == ["the outputs must be a JSON object"]
