"""One meaning for every config key under both paths: `pulumi up` reads the stack's config
through Pulumi's runtime (infra/__main__.py), `elizadb up` from Pulumi.<stack>.yaml (elizadb/
config.py); both go through load_settings and the same program."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from elizadb.config import SUPERUSER_PASSWORD_ENV, load_stack
from elizadb.errors import ConfigError
from elizadb.local.capture import declare
from elizadb.local.state import StateFile
from infra.settings import config_from_pulumi_runtime, load_settings

PASSWORD = "Chosen-by-the-operator-42"


def _superuser_uri(settings_dir: Path, settings) -> str:  # type: ignore[no-untyped-def]
    declaration = declare(settings, StateFile(settings.stack, settings_dir))
    return declaration.outputs["connections"]["superuser"]


def test_the_configured_superuser_password_is_used_under_pulumi(tmp_path: Path) -> None:
    # What the Pulumi CLI hands the program: every key as a string, secrets decrypted.
    raw = {"elizadb:superuserPassword": PASSWORD, "elizadb:replicas": "1"}
    settings = load_settings("dev", config_from_pulumi_runtime(raw), "Pulumi.dev.yaml")
    assert f":{quote(PASSWORD, safe='')}@" in _superuser_uri(tmp_path, settings)


def test_the_configured_superuser_password_is_used_by_the_local_deploy(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text(
        f"config:\n  elizadb:superuserPassword: {PASSWORD}\n  elizadb:replicas: 1\n"
    )
    settings = load_stack("dev", tmp_path)
    assert f":{quote(PASSWORD, safe='')}@" in _superuser_uri(tmp_path / "state", settings)


def test_without_the_key_a_password_is_generated(tmp_path: Path) -> None:
    settings = load_settings("dev", {}, "test")
    assert PASSWORD not in _superuser_uri(tmp_path, settings)


def test_an_encrypted_password_needs_the_environment_for_the_local_deploy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text(
        "config:\n  elizadb:superuserPassword:\n    secure: v1:AAAABBBBCCCC\n"
    )
    monkeypatch.delenv(SUPERUSER_PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError) as refused:
        load_stack("dev", tmp_path)
    assert refused.value.exit_code == 2
    assert "elizadb:superuserPassword is encrypted" in str(refused.value)
    assert SUPERUSER_PASSWORD_ENV in str(refused.value)
    monkeypatch.setenv(SUPERUSER_PASSWORD_ENV, PASSWORD)
    settings = load_stack("dev", tmp_path)
    assert settings.superuser_password is not None
    assert settings.superuser_password.get_secret_value() == PASSWORD


def test_a_bad_password_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings("dev", {"superuserPassword": "short pw"}, "test")
    message = str(refused.value)
    assert "elizadb:superuserPassword" in message and "at least 12" in message
    assert "short pw" not in message
    settings = load_settings("dev", {"superuserPassword": PASSWORD}, "test")
    assert PASSWORD not in repr(settings)


def test_the_stacks_docker_host_is_used_by_the_local_deploy_too(tmp_path: Path) -> None:
    """The docker provider connects to `docker:host` before DOCKER_HOST; so does `elizadb`."""
    (tmp_path / "Pulumi.dev.yaml").write_text(
        "config:\n  docker:host: unix:///nonexistent-p9-engine.sock\n  elizadb:replicas: 1\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "elizadb", "-C", str(tmp_path), "up", "--stack", "dev"],
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent-other.sock"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "no container engine answers" in result.stderr
    assert "nonexistent-p9-engine.sock" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
