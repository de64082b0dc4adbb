"""Load a stack's settings from `Pulumi.<stack>.yaml` for the local deploy and the tools."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from elizadb.errors import ConfigError, UsageError
from infra.settings import StackSettings, config_from_yaml_document, load_settings

PROJECT_FILE = "Pulumi.yaml"
PROJECT_DIR_ENV = "ELIZADB_PROJECT_DIR"
_chosen_project_dir: Path | None = None
# Where no registry is reachable, scripts/bootstrap-engine.sh makes a local base image and says so
# through this variable; it overrides elizadb:image.base for the local deploy.
BASE_IMAGE_ENV = "ELIZADB_BASE_IMAGE"
# `pulumi config set --secret elizadb:superuserPassword` stores the value encrypted (`secure:`)
# for the Pulumi CLI's secrets provider, which only `pulumi up` can decrypt; the local deploy
# then takes the same value from this variable.
SUPERUSER_PASSWORD_ENV = "ELIZADB_SUPERUSER_PASSWORD"


def choose_project_dir(directory: Path | None) -> None:
    """The `-C DIR` option: the project is DIR, as with `pulumi -C DIR`."""
    global _chosen_project_dir
    _chosen_project_dir = directory


def project_dir() -> Path:
    """The folder of Pulumi.yaml and the Pulumi.<stack>.yaml files, found as the Pulumi CLI finds
    it: `-C DIR`, else ELIZADB_PROJECT_DIR, else the working directory or the nearest parent
    that holds a Pulumi.yaml. The local state and the CA file live there too."""
    chosen = _chosen_project_dir or (
        Path(os.environ[PROJECT_DIR_ENV]) if os.environ.get(PROJECT_DIR_ENV) else None
    )
    if chosen is not None:
        # Taken as given: it holds the Pulumi.<stack>.yaml files (a missing one is reported).
        if not chosen.is_dir():
            raise UsageError(f"{chosen}: no such folder; give the folder of the eliza-db project")
        return chosen.resolve()
    start = Path.cwd()
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    raise UsageError(
        f"no {PROJECT_FILE} in {start} or any folder above it: run elizadb inside the eliza-db "
        f"project, or name it with `elizadb -C DIR ...` (or {PROJECT_DIR_ENV}=DIR)"
    )


def stack_file(stack: str, directory: Path | None = None) -> Path:
    return (directory or project_dir()) / f"Pulumi.{stack}.yaml"


def load_stack(stack: str, directory: Path | None = None) -> StackSettings:
    directory = directory or project_dir()
    path = stack_file(stack, directory)
    if not path.exists():
        known = sorted(p.name for p in directory.glob("Pulumi.*.yaml"))
        raise ConfigError(
            str(path), [f"no such stack file; stacks here: {', '.join(known) or 'none'}"]
        )
    values: dict[str, Any] = config_from_yaml_document(_document(path), path.name)
    values = _decrypted(values, path.name)
    base = os.environ.get(BASE_IMAGE_ENV)
    if base:
        values = {**values, "image": {**(values.get("image") or {}), "base": base}}
    return load_settings(stack, values, path.name)


def _document(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path.name, [f"malformed YAML{where}: {problem}"]) from None


def engine_host(stack: str, directory: Path | None = None) -> str | None:
    """The stack's `docker:host`, which the docker provider uses before DOCKER_HOST: the local
    deploy does the same (load_stack has checked the file)."""
    document = _document(stack_file(stack, directory))
    config = document.get("config") if isinstance(document, dict) else None
    host = config.get("docker:host") if isinstance(config, dict) else None
    if host is not None and not isinstance(host, str):
        raise ConfigError(f"Pulumi.{stack}.yaml", [f"docker:host = {host!r}: must be a string"])
    return host


def _decrypted(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Replace a Pulumi-encrypted superuser password by the one given in the environment."""
    password = values.get("superuserPassword")
    if not (isinstance(password, dict) and "secure" in password):
        return values
    given = os.environ.get(SUPERUSER_PASSWORD_ENV)
    if not given:
        problem = (
            "elizadb:superuserPassword is encrypted for the Pulumi CLI (`secure:`), which only "
            "`pulumi up` can decrypt; to deploy this stack with `elizadb`, give the same password "
            f"in the environment variable {SUPERUSER_PASSWORD_ENV} (or remove the key to have one "
            "generated)"
        )
        raise ConfigError(source, [problem])
    return {**values, "superuserPassword": given}
