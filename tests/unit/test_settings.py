"""Stack configuration: defaults, and every kind of invalid input reported at once with its key
path, the bad value and what is allowed — exit code 2, no traceback, nothing deployed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from elizadb.config import load_stack
from elizadb.errors import ConfigError
from infra.settings import Environment, load_settings

REPO = Path(__file__).resolve().parents[2]


def problems(values: dict, stack: str = "dev") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(stack, values, "Pulumi.dev.yaml")
    return caught.value.problems


def test_defaults_follow_the_guide_and_are_safe() -> None:
    s = load_settings("dev", {}, "x")
    assert s.replicas == 2 and s.embedding_dimensions == 1536
    assert s.network.bind_address == "127.0.0.1"
    assert (
        s.pooler.pool_size,
        s.pooler.idle_timeout_seconds,
        s.pooler.connect_timeout_seconds,
    ) == (
        20,
        30,
        2,
    )
    assert s.tls.enabled is True
    assert s.synchronous is False


def test_production_defaults_to_synchronous_replication() -> None:
    s = load_settings("prod", {"environment": "production"}, "x")
    assert s.environment is Environment.PRODUCTION and s.synchronous is True


def test_the_repository_stack_files_are_valid() -> None:
    for stack in ("dev", "staging", "prod"):
        assert load_stack(stack).stack == stack


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicas": -1}, "elizadb:replicas = -1: Input should be greater than or equal to 0"),
        (
            {"replicaz": 2},
            "elizadb:replicaz: unknown key (value 2); remove it or check its spelling",
        ),
        (
            {"network": {"primaryPort": 70000}},
            "elizadb:network.primaryPort = 70000: Input should be less than or equal to 65535",
        ),
        (
            {"embeddingDimensions": 0},
            "elizadb:embeddingDimensions = 0: Input should be greater than or equal to 1",
        ),
        (
            {"environment": "production", "tls": {"enabled": False}},
            (
                "elizadb:tls.enabled = False: TLS cannot be turned off for a stack whose "
                "elizadb:environment is production; remove the key"
            ),
        ),
        (
            {"postgres": {"parameters": {"ssl": "off"}}},
            "elizadb:postgres.parameters.ssl = 'off': this parameter is set by eliza-db itself",
        ),
        (
            {"image": {"base": "Debian Trixie!"}},
            "elizadb:image.base = 'Debian Trixie!': not a valid image reference (e.g. debian:trixie-slim)",
        ),
        (
            {"network": {"bindAddress": "localhost:5432"}},
            "elizadb:network.bindAddress = 'localhost:5432': must be an IP address of the Docker host",
        ),
        (
            {"environment": "prod"},
            "elizadb:environment = 'prod': Input should be 'development', 'staging' or 'production'",
        ),
        (
            {"network": {"poolerPort": 15432}},
            "elizadb:network.poolerPort = 15432: the same host port as elizadb:network.primaryPort",
        ),
        (
            {"replication": {"synchronous": True, "synchronousCount": 3}},
            "elizadb:replication.synchronousCount = 3: more synchronous standbys than elizadb:replicas (2)",
        ),
        (
            # The rule reads the other key's default from the model (incrEvery: 1d).
            {"backup": {"fullEvery": "12h"}},
            "elizadb:backup.incrEvery = '1d': must be shorter than elizadb:backup.fullEvery ('12h')",
        ),
        (
            {"resources": {"memory": "lots"}},
            "elizadb:resources.memory = 'lots': must be a size like 512m or 2g",
        ),
    ],
)
def test_invalid_config_names_key_value_and_what_is_allowed(values: dict, expected: str) -> None:
    found = problems(values)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        {
            "replicas": -1,
            "bogus": 1,
            "network": {"primaryPort": 0},
            "postgres": {"parameters": {"wal_level": "minimal", "hba_file": "/x"}},
        }
    )
    assert len(found) == 5, found


def _cli(args: list[str], project_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DOCKER_HOST": "unix:///nonexistent.sock",
        "ELIZADB_PROJECT_DIR": str(project_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "elizadb", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_exits_2_without_traceback_before_touching_the_engine(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text(
        "config:\n  elizadb:replicas: -3\n  elizadb:typo: 1\n"
    )
    result = _cli(["up"], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "elizadb:replicas = -3" in result.stderr and "elizadb:typo: unknown key" in result.stderr
    # The engine was never asked: the bogus DOCKER_HOST would have produced an engine error.
    assert "container engine" not in result.stderr


def test_malformed_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text("config:\n  elizadb:replicas: [1,\n")
    result = _cli(["validate"], tmp_path)
    assert result.returncode == 2
    assert "Pulumi.dev.yaml" in result.stderr and "malformed YAML at line" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = _cli(["up", "--bogus"], tmp_path)
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
