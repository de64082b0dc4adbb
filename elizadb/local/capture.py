"""Run the Pulumi program in-process under Pulumi's mock runtime and capture what it declares:
every resource with its inputs (as the provider would receive them), its options and its
dependencies, and the stack outputs with their secrecy."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from elizadb.local import providers
from elizadb.local.state import StateFile
from infra.settings import StackSettings


@dataclass
class Declared:
    """One resource as the program declared it."""

    typ: str
    name: str
    urn: str
    inputs: dict[str, Any]  # secrets unwrapped
    secret_inputs: frozenset[str]  # top-level input names that carry a secret somewhere
    plain_strings: tuple[str, ...]  # every string input not marked secret (for policy checks)
    protect: bool
    retain_on_delete: bool
    delete_before_replace: bool
    replace_on_changes: frozenset[str]
    ignore_changes: frozenset[str]
    dependencies: frozenset[str]  # URNs
    parent: str
    custom: bool
    # The URN of the explicit provider that manages it ("" for the default provider): a stack
    # on several Docker hosts has one per host (infra/program.py).
    provider: str = ""
    # Types it was declared as before (its aliases): Pulumi takes the resources of the old URNs,
    # its children's included, for this one and its children.
    alias_types: frozenset[str] = frozenset()
    # Names it was declared under before (its aliases), likewise.
    alias_names: frozenset[str] = frozenset()


@dataclass
class Declaration:
    resources: list[Declared]
    outputs: dict[str, Any]
    secret_outputs: frozenset[str]
    by_urn: dict[str, Declared] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Declared]:
        return [r for r in self.resources if r.typ == typ]


JOB_TYPE = "docker:index/container:Container"


class _LocalMocks(pulumi.runtime.Mocks):
    def __init__(self, state: StateFile | None) -> None:
        self.state = state

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        inputs = _unwrap(args.inputs)
        if args.typ in providers.TYPES:
            if self.state is None:
                raise RuntimeError("secrets are needed but no state file was given")
            return f"{args.name}-id", providers.provide(args.typ, args.name, inputs, self.state)
        if not args.custom:
            return "", {}
        if args.typ == JOB_TYPE and inputs.get("attach"):
            # The local applier waits for the job and checks its exit code itself (apply.py):
            # here the program sees a job that succeeded.
            return inputs["name"], {**inputs, "exitCode": 0, "containerLogs": ""}
        return inputs.get("name") or args.name, inputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[Any] | None]:
        raise RuntimeError(f"the eliza-db program makes no invokes, but called {args.token}")


class _CaptureMonitor(pulumi_mocks.MockMonitor):
    """MockMonitor that also records options the Mocks interface does not see."""

    def __init__(self, mocks: _LocalMocks) -> None:
        super().__init__(mocks)
        self.captured: list[Declared] = []

    def RegisterResource(self, request: Any) -> Any:  # the gRPC method name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]  # pulumi's
        if request.type == "pulumi:pulumi:Stack":
            return response
        raw = rpc.deserialize_properties(request.object)
        deps = set(request.dependencies)
        for prop_deps in request.propertyDependencies.values():
            deps.update(prop_deps.urns)
        self.captured.append(
            Declared(
                typ=request.type,
                name=request.name,
                urn=response.urn,
                inputs=_unwrap(raw),
                secret_inputs=frozenset(k for k, v in raw.items() if _has_secret(v)),
                plain_strings=tuple(_plain_strings(raw)),
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                delete_before_replace=bool(request.deleteBeforeReplace),
                replace_on_changes=frozenset(request.replaceOnChanges),
                ignore_changes=frozenset(request.ignoreChanges),
                dependencies=frozenset(deps),
                parent=request.parent,
                custom=bool(request.custom),
                # A provider reference is "<urn>::<id>".
                provider=request.provider.rsplit("::", 1)[0] if request.provider else "",
                alias_types=frozenset(
                    a.spec.type for a in request.aliases if a.HasField("spec") and a.spec.type
                ),
                alias_names=frozenset(
                    a.spec.name for a in request.aliases if a.HasField("spec") and a.spec.name
                ),
            )
        )
        return response


def _has_secret(value: Any) -> bool:
    if rpc.is_rpc_secret(value):
        return True
    if isinstance(value, dict):
        return any(_has_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_secret(v) for v in value)
    return False


def _plain_strings(value: Any) -> list[str]:
    if rpc.is_rpc_secret(value):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _plain_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _plain_strings(v)]
    return []


def _unwrap(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return _unwrap(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf carries every number as a double
    return value


def declare(settings: StackSettings, state: StateFile | None) -> Declaration:
    """Run the program for `settings` and return everything it declared."""
    from infra.program import ElizaDbStack  # after set_mocks, as Pulumi requires

    # Pulumi's runtime needs an event loop in the calling thread (a failover watcher runs this
    # from a thread of its own).
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    mocks = _LocalMocks(state)
    monitor = _CaptureMonitor(mocks)
    pulumi.runtime.set_mocks(
        mocks, project="elizadb", stack=settings.stack, preview=False, monitor=monitor
    )
    resolved: dict[str, tuple[Any, bool]] = {}

    async def resolve(outputs: dict[str, Any]) -> None:
        for key, value in outputs.items():
            out = pulumi.Output.from_input(value)
            resolved[key] = (await out.future(), await out.is_secret())

    @pulumi.runtime.test  # type: ignore[untyped-decorator]  # untyped in pulumi
    def run() -> pulumi.Output[None]:
        stack = ElizaDbStack(settings)
        return pulumi.Output.from_input(asyncio.ensure_future(resolve(stack.outputs)))

    run()
    declaration = Declaration(
        resources=monitor.captured,
        outputs={k: v for k, (v, _) in resolved.items()},
        secret_outputs=frozenset(k for k, (_, secret) in resolved.items() if secret),
    )
    declaration.by_urn = {r.urn: r for r in declaration.resources}
    return declaration
