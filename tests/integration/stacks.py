"""Deploy real eliza-db stacks for integration tests, through the same local deploy path that
`elizadb up` takes, each test stack with its own name, ports and state folder.

In CI a missing container engine fails the test; elsewhere it skips with the reason
(tests/integration/needs.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from elizadb.config import BASE_IMAGE_ENV
from elizadb.drills.failover import DrillResult, run_drill
from elizadb.engine import Engines, Target
from elizadb.errors import DeployError
from elizadb.local import deploy
from elizadb.local.apply import Applier
from elizadb.local.hosts import stack_engines
from infra.program import PROJECT_ROOT
from infra.settings import StackSettings, load_settings
from tests.integration.needs import require_engine


def stack_settings(stack: str, port_base: int, **values: Any) -> StackSettings:
    """Settings for a test stack on ports port_base (primary), +1.. (replicas), +9 (pooler),
    +10.. (Patroni's REST API, published by Patroni stacks)."""
    network = {
        "primaryPort": port_base,
        "replicaPortBase": port_base + 1,
        "poolerPort": port_base + 9,
        "patroniApiPortBase": port_base + 10,
        **values.pop("network", {}),
    }
    image = dict(values.pop("image", {}))
    if os.environ.get(BASE_IMAGE_ENV):
        image.setdefault("base", os.environ[BASE_IMAGE_ENV])
    values.setdefault("postgres", {"parameters": {"shared_buffers": "64MB"}})
    values.setdefault("resources", {"memory": "512m", "shmSize": "256m"})
    return load_settings(stack, {"network": network, "image": image, **values}, f"test:{stack}")


def progress(message: str) -> None:
    sys.stderr.write(f"  [stack] {message}\n")


def run_to_end(client: Any, image: str, timeout_s: float = 120, **options: Any) -> str:
    """Run a one-shot helper container and return its log; fail with the log when it exits
    non-zero. Detached, waited for, then read: docker-py's blocking run follows the log, and
    Podman's follow can miss a container that exits at once and hang (seen in a CI rehearsal,
    300 s)."""
    container = client.containers.run(image, detach=True, **options)
    try:
        code = container.wait(timeout=timeout_s)["StatusCode"]
        log = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert code == 0, f"helper container exited {code}:\n{log}"
    return str(log)


@dataclass
class DeployedStack:
    settings: StackSettings
    outputs: dict[str, Any]
    client: Target
    state_dir: Path

    @property
    def connections(self) -> dict[str, Any]:
        return self.outputs["connections"]

    def up(self, settings: StackSettings | None = None) -> deploy.ApplyReport:
        if settings is not None:
            self.settings = settings
        report = deploy.up(self.settings, progress, self.state_dir)
        self.outputs = deploy.outputs(self.settings, show_secrets=True)
        # Holds connection strings with passwords: readable by its owner only.
        path = self.outputs_file()
        path.touch(mode=0o600)
        path.write_text(json.dumps(self.outputs))
        self._fix_root_cert()
        return report

    def _containers(self) -> list[Any]:
        prefix = f"elizadb-{self.settings.stack}-"
        clients = self.client.all() if isinstance(self.client, Engines) else [("", self.client)]
        # Filtered by name at the engine, and tolerant of a container removed between listing
        # and inspecting: other checkouts' stacks come and go meanwhile.
        return [
            c
            for _, client in clients
            for c in client.containers.list(all=True, filters={"name": prefix}, ignore_removed=True)
            if c.name.startswith(prefix)
        ]

    def container_identities(self) -> dict[str, tuple[str, str]]:
        """Each of this stack's containers by name: its id and when it last started, so that a
        test can tell that nothing was recreated or restarted (other stacks on the machine come
        and go and are no business of the test)."""
        return {c.name: (c.id, c.attrs["State"]["StartedAt"]) for c in self._containers()}

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of every container's log: what a failed deploy in CI leaves to read,
        since the stack is removed right after."""
        parts = []
        for container in sorted(self._containers(), key=lambda c: c.name):
            try:
                tail = container.logs(tail=lines).decode(errors="replace")
            except docker.errors.APIError as e:
                tail = f"(no log: {e})"
            parts.append(f"--- {container.name} ({container.status})\n{tail.rstrip()}")
        return "\n".join(parts)

    def outputs_file(self) -> Path:
        return self.state_dir / f"{self.settings.stack}.outputs.json"

    def _fix_root_cert(self) -> None:
        # Connection strings name the CA file relative to the project folder; tests run from
        # anywhere, so point them at the absolute path up() wrote.
        rel = self.outputs["caCertPath"]
        absolute = str(self.state_dir / rel)
        conns = self.outputs["connections"]
        for key, value in list(conns.items()):
            if isinstance(value, list):
                conns[key] = [
                    v.replace(f"sslrootcert={rel}", f"sslrootcert={absolute}") for v in value
                ]
            else:
                conns[key] = value.replace(f"sslrootcert={rel}", f"sslrootcert={absolute}")
        # The node-postgres forms carry the CA's absolute path in the project folder.
        in_project = f"sslrootcert={PROJECT_ROOT / rel}"
        nodes = self.outputs.get("nodeConnections", {})
        for group in (nodes, nodes.get("servers", {})):
            for key, value in list(group.items()):
                if isinstance(value, str):
                    group[key] = value.replace(in_project, f"sslrootcert={absolute}")

    def down(self, delete_volumes: bool = True) -> None:
        Applier(self.client, self.settings.stack, progress).down(delete_volumes)


@contextmanager
def deployed_stack(
    tmp_path: Path,
    stack: str,
    port_base: int,
    keep: bool = False,
    reuse: bool = False,
    **values: Any,
) -> Iterator[DeployedStack]:
    """The stack deployed with its state under tmp_path, removed at the end unless keep. A
    leftover of the same name is removed first, unless reuse: then `up` brings the stack whose
    state tmp_path already holds to the declaration (a no-op when it is running unchanged) and
    its volumes and data stay."""
    client = require_engine()
    # The local deploy finds its state through this variable; a stack deployed inside another
    # test's stack must give it back when it is done.
    outer_state_dir = os.environ.get("ELIZADB_STATE_DIR")
    os.environ["ELIZADB_STATE_DIR"] = str(tmp_path / "state")
    settings = stack_settings(stack, port_base, **values)
    # A stack on several hosts (elizadb:hosts) is driven through each host's engine.
    target: Target = stack_engines(settings) if settings.hosts else client
    handle = DeployedStack(settings, {}, target, tmp_path)
    if not reuse:
        handle.down(delete_volumes=True)  # a leftover of an earlier, killed run
    try:
        try:
            handle.up()
        except DeployError as e:
            e.add_note(f"the stack's containers when the deploy failed:\n{handle.log_tails()}")
            raise
        yield handle
    finally:
        if not keep:
            handle.down(delete_volumes=True)
        if outer_state_dir is None:
            os.environ.pop("ELIZADB_STATE_DIR", None)
        else:
            os.environ["ELIZADB_STATE_DIR"] = outer_state_dir


def drill(stack: DeployedStack, kind: str = "failover", lagging: str | None = None) -> DrillResult:
    """One short drill (1.5 s of writes before the fault, 1 s after) against a test stack."""
    outputs = deploy.outputs(stack.settings, show_secrets=True)
    ca = stack.state_dir / outputs["caCertPath"]
    return run_drill(
        stack.client,
        stack.settings,
        outputs,
        str(ca),
        progress,
        kind=kind,
        write_before_s=1.5,
        write_after_s=1.0,
        lagging=lagging,
    )
