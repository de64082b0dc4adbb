"""Check what the program declares against the providers' own schemas (tests/data), as the
Pulumi engine and the providers would before creating anything: unknown inputs, types, required
inputs, enum values, and the run-time checks the schemas do not carry (provider-checks.json)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from elizadb.local.capture import Declared
from infra.durations import is_canonical, parse_go_duration

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "data" / "provider-schemas"
PINNED = {"pulumi-docker": "5.1.0", "pulumi-random": "4.21.1", "pulumi-tls": "5.5.1"}


@dataclass(frozen=True)
class Schemas:
    resources: dict[str, Any]
    types: dict[str, Any]
    checks: dict[str, Any]


@cache
def load_schemas() -> Schemas:
    resources: dict[str, Any] = {}
    types: dict[str, Any] = {}
    for package, version in PINNED.items():
        data = json.loads((SCHEMA_DIR / f"{package.split('-')[1]}-{version}.json").read_text())
        resources.update(data["resources"])
        types.update(data["types"])
    checks = json.loads((SCHEMA_DIR / "provider-checks.json").read_text())
    return Schemas(resources, types, checks)


def _type_problems(value: Any, spec: dict[str, Any], path: str, schemas: Schemas) -> list[str]:
    ref = spec.get("$ref")
    if ref is not None:
        if not ref.startswith("#/types/"):
            return []  # pulumi.json#/Any, Archive, Asset: anything goes
        target = schemas.types[ref.removeprefix("#/types/")]
        if "enum" in target:
            allowed = [e["value"] for e in target["enum"]]
            return [] if value in allowed else [f"{path} = {value!r}: not one of {allowed}"]
        return _object_problems(value, target, path, schemas)
    kind = spec.get("type")
    if kind == "string":
        ok = isinstance(value, str)
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__} given, array expected"]
        return [
            p
            for i, item in enumerate(value)
            for p in _type_problems(item, spec["items"], f"{path}[{i}]", schemas)
        ]
    elif kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__} given, object expected"]
        inner = spec.get("additionalProperties", {})
        return [
            p for k, v in value.items() for p in _type_problems(v, inner, f"{path}.{k}", schemas)
        ]
    else:
        return [f"{path}: the schema has no type for it ({spec})"]
    return [] if ok else [f"{path} = {value!r}: {type(value).__name__} given, {kind} expected"]


def _object_problems(value: Any, spec: dict[str, Any], path: str, schemas: Schemas) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: {type(value).__name__} given, object expected"]
    properties = spec.get("properties") or spec.get("inputProperties") or {}
    problems = [
        f"{path}.{k}: required input missing" for k in spec.get("required", []) if k not in value
    ]
    problems += [
        f"{path}.{k}: required input missing"
        for k in spec.get("requiredInputs", [])
        if k not in value
    ]
    for key, item in value.items():
        if key not in properties:
            problems.append(
                f"{path}.{key}: unknown input (allowed: {', '.join(sorted(properties))})"
            )
        elif item is not None:
            problems += _type_problems(item, properties[key], f"{path}.{key}", schemas)
    return problems


def _at(value: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def check_resource(resource: Declared, schemas: Schemas | None = None) -> list[str]:
    """Every problem the providers would report for this resource's inputs."""
    schemas = schemas or load_schemas()
    where = f"{resource.typ} {resource.name}"
    spec = schemas.resources.get(resource.typ)
    if spec is None:
        return [f"{where}: no such resource in the pinned provider schemas"]
    problems = _object_problems(resource.inputs, spec, where, schemas)
    extra = schemas.checks.get(resource.typ, {})
    for key, pattern in extra.get("patterns", {}).items():
        value = _at(resource.inputs, key)
        if value is not None and not re.fullmatch(pattern, str(value)):
            problems.append(f"{where}.{key} = {value!r}: the provider allows {pattern}")
    for key in extra.get("durations", []):
        value = _at(resource.inputs, key)
        if value is None:
            continue
        try:
            parse_go_duration(value)
        except ValueError as exc:
            problems.append(f"{where}.{key}: {exc}")
            continue
        if not is_canonical(value):
            problems.append(
                f"{where}.{key} = {value!r}: not in the form the provider reads back "
                "(Go's Duration.String()): every preview would show a change"
            )
    return problems


def check_declaration(resources: list[Declared]) -> list[str]:
    return [p for r in resources if r.custom for p in check_resource(r)]
