#!/usr/bin/env python3
"""Keep only what the schema test needs from a provider's `schema.json`: the resources the
program declares and every type they reference, without descriptions (the upstream prose is not
ours to copy). Usage:

    scripts/trim-provider-schema.py FULL_SCHEMA.json OUT.json TOKEN [TOKEN ...]
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in ("description", "language")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _refs(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/types/"):
            found.add(ref.removeprefix("#/types/"))
        for v in value.values():
            found |= _refs(v)
    elif isinstance(value, list):
        for v in value:
            found |= _refs(v)
    return found


def trim(schema: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
    resources = {}
    for token in tokens:
        resource = schema["resources"][token]
        resources[token] = {
            k: resource[k] for k in ("inputProperties", "requiredInputs") if k in resource
        }
    types: dict[str, Any] = {}
    pending = _refs(resources)
    while pending:
        name = pending.pop()
        if name in types:
            continue
        types[name] = schema["types"][name]
        pending |= _refs(types[name]) - set(types)
    return _strip(
        {"name": schema["name"], "resources": resources, "types": dict(sorted(types.items()))}
    )


def main(argv: list[str]) -> int:
    source, target, *tokens = argv
    with open(source) as handle:
        schema = json.load(handle)
    with open(target, "w") as handle:
        json.dump(trim(schema, tokens), handle, indent=1, sort_keys=True)
        handle.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
