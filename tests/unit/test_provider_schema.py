"""What the program declares, for every shipped stack and a few edge configurations, is accepted
by the pinned providers' schemas; and the checker does reject what a provider would reject."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from elizadb.config import load_stack
from elizadb.local.capture import Declaration, Declared, declare
from elizadb.local.state import StateFile
from infra.settings import load_settings
from tests.unit.provider_schema import (
    PINNED,
    Schemas,
    check_declaration,
    check_resource,
    load_schemas,
)

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = "docker:index/container:Container"

EDGE_CONFIGS: dict[str, dict[str, Any]] = {
    "no-replicas": {"replicas": 0},
    "nine-replicas": {"replicas": 9, "network": {"replicaPortBase": 40000}},
    "no-tls": {"tls": {"enabled": False}},
    "everywhere": {"network": {"bindAddress": "0.0.0.0", "subnet": "10.99.0.0/16"}},
    "big": {"resources": {"memory": "16g", "shmSize": "4g"}, "replication": {"synchronous": True}},
}


def _declare_stack(tmp_path: Path, stack: str) -> Declaration:
    return declare(load_stack(stack, ROOT), StateFile(stack, tmp_path))


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_shipped_stacks_match_the_provider_schemas(tmp_path: Path, stack: str) -> None:
    declaration = _declare_stack(tmp_path, stack)
    assert len([r for r in declaration.resources if r.custom]) > 20
    assert check_declaration(declaration.resources) == []


@pytest.mark.parametrize("edge", sorted(EDGE_CONFIGS))
def test_edge_configurations_match_the_provider_schemas(tmp_path: Path, edge: str) -> None:
    settings = load_settings("edge", EDGE_CONFIGS[edge], "test")
    declaration = declare(settings, StateFile("edge", tmp_path))
    assert check_declaration(declaration.resources) == []


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Declared:
    declaration = _declare_stack(tmp_path_factory.mktemp("schema"), "dev")
    return next(r for r in declaration.of_type(CONTAINER) if r.name == "primary")


def _with(resource: Declared, **changes: Any) -> Declared:
    inputs = {**resource.inputs, **changes}
    return dataclasses.replace(resource, inputs={k: v for k, v in inputs.items() if v is not None})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"stopTimeouts": 30}, r"\.stopTimeouts: unknown input"),
        ({"memory": "1g"}, r"\.memory = '1g': str given, integer expected"),
        ({"image": None}, r"\.image: required input missing"),
        ({"restart": "sometimes"}, r"\.restart = 'sometimes': the provider allows"),
        ({"envs": {"A": "1"}}, r"\.envs: dict given, array expected"),
        ({"healthcheck": {"tests": ["CMD", "true"], "intervall": "5s"}}, r"healthcheck\.intervall"),
        ({"healthcheck": {"tests": ["CMD", "true"], "interval": "5 s"}}, r"not a Go duration"),
        ({"healthcheck": {"tests": ["CMD", "true"], "startPeriod": "120s"}}, r"reads back"),
        ({"labels": [{"label": "a"}]}, r"labels\[0\]\.value: required input missing"),
    ],
)
def test_the_checker_rejects_what_a_provider_would(
    primary: Declared, changes: dict[str, Any], expected: str
) -> None:
    assert check_resource(primary) == []
    problems = check_resource(_with(primary, **changes))
    assert any(re.search(expected, p) for p in problems), problems


def test_the_checker_rejects_an_enum_value_outside_the_schema(primary: Declared) -> None:
    # The resources we declare have no enum input in these versions (the docker schema's one
    # enum belongs to the legacy Image resource): check the rule on a schema that has one.
    schemas = load_schemas()
    enum = {"type": "string", "enum": [{"value": "no"}, {"value": "always"}]}
    container = schemas.resources[CONTAINER]
    with_enum = Schemas(
        resources={
            CONTAINER: {
                **container,
                "inputProperties": {
                    **container["inputProperties"],
                    "restart": {"$ref": "#/types/test:index/Restart:Restart"},
                },
            }
        },
        types={**schemas.types, "test:index/Restart:Restart": enum},
        checks={},
    )
    problems = check_resource(_with(primary, restart="sometimes"), with_enum)
    expected = "docker:index/container:Container primary.restart = 'sometimes': not one of "
    assert problems == [expected + "['no', 'always']"]


def test_an_unknown_resource_type_is_rejected(primary: Declared) -> None:
    wrong = dataclasses.replace(primary, typ="docker:index/container:Containers")
    assert check_resource(wrong) == [
        f"{wrong.typ} primary: no such resource in the pinned provider schemas"
    ]


def test_the_pinned_providers_are_the_schemas_checked() -> None:
    """pyproject pins each provider to the version whose schema is committed, and that version
    is the one installed: the test checks the program against what `pulumi up` would use."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = {
        dep.split("==")[0]: dep.split("==")[1]
        for dep in pyproject["project"]["dependencies"]
        if "==" in dep
    }
    for package, version in PINNED.items():
        assert pins.get(package) == version, f"pyproject does not pin {package}=={version}"
        assert metadata.version(package) == version, f"{package} installed is not {version}"
