"""`elizadb up | down | status | outputs` for the local deploy."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from elizadb.engine import (
    Engines,
    Target,
    container_status,
    exec_in,
    in_recovery,
    query_rows,
)
from elizadb.errors import DeployError, EngineError
from elizadb.local.apply import CONTAINER, Applier, ApplyReport, Progress
from elizadb.local.capture import Declaration, declare
from elizadb.local.engine_change import check_engine_change
from elizadb.local.hosts import stack_engines
from elizadb.local.identity import check_owned
from elizadb.local.node_roll import roll_nodes
from elizadb.local.placement_change import check_placement_change
from elizadb.local.state import StateFile
from infra.render import paths
from infra.settings import StackSettings
from infra.topology import topology

SECRET_MASK = "[secret]"
# The resource names (infra/components/tls.py) of the server's key, request and certificate.
SERVER_TLS = frozenset({"tls-server-key", "tls-server-csr", "tls-server"})


def effective_settings(settings: StackSettings, state: StateFile) -> StackSettings:
    """The configured settings, following a failover: the node promoted last is the primary."""
    current = state.runtime.primary_node
    if not current or current == settings.primary_node:
        return settings
    nodes = {n.short for n in topology(settings).nodes}
    if current not in nodes:
        raise DeployError(
            f"the current primary is {current}, which this configuration would remove "
            f"(elizadb:replicas = {settings.replicas}); switch over to a node that stays first: "
            f"elizadb switchover --to primary"
        )
    return settings.model_copy(update={"primary_node": current})


def declare_stack(settings: StackSettings) -> Declaration:
    state = StateFile(settings.stack)
    declaration = declare(effective_settings(settings, state), state)
    state.save()
    return declaration


def guard(settings: StackSettings, engines: Target | None = None) -> None:
    """Refuse, before anything is touched, when an engine holds this stack's resources but the
    state at hand did not make them (identity.py)."""
    target = engines or stack_engines(settings)
    clients = target.all() if isinstance(target, Engines) else [("", target)]
    for _, client in clients:
        check_owned(client, settings.stack, StateFile(settings.stack))


def up(settings: StackSettings, progress: Progress, project_dir: Path) -> ApplyReport:
    engines = stack_engines(settings)
    guard(settings, engines)
    # A changed elizadb:ha.engine or placement is judged before the declaration touches the state.
    check_engine_change(settings, engines, progress)
    check_placement_change(settings, engines)
    declaration = declare_stack(settings)
    conforming = dict(StateFile(settings.stack).runtime.conforming)
    applier = Applier(engines, settings.stack, progress, conforming)
    rolled = ApplyReport()
    roll_nodes(applier, settings, declaration, rolled, progress)
    report = applier.apply(declaration)
    report.replaced[:0] = rolled.replaced
    report.unchanged = [n for n in report.unchanged if n not in rolled.replaced]
    report.built_image |= rolled.built_image
    _write_ca(declaration, project_dir)
    return report


def _write_ca(declaration: Declaration, project_dir: Path) -> None:
    """Clients' sslrootcert: the CA certificate is public, the key never leaves the state."""
    path = project_dir / declaration.outputs["caCertPath"]
    pem = declaration.outputs["caCert"]
    if not path.exists() or path.read_text() != pem:
        path.write_text(pem)
        os.chmod(path, 0o644)


def rotate_certs(settings: StackSettings, progress: Progress, project_dir: Path) -> ApplyReport:
    """Issue a new server key and certificate (same CA) and roll every node onto them. Data
    volumes are untouched; each server restarts once with the new files."""
    state = StateFile(settings.stack)
    forgotten = [key for key in list(state.data["resources"]) if key.split("::")[1] in SERVER_TLS]
    for key in forgotten:
        state.forget(key)
    state.save()
    progress(f"new server key and certificate ({len(forgotten)} state entries reissued)")
    return up(settings, progress, project_dir)


def down(settings: StackSettings, progress: Progress, delete_volumes: bool) -> list[str]:
    engines = stack_engines(settings)
    guard(settings, engines)
    return Applier(engines, settings.stack, progress).down(delete_volumes)


def outputs(settings: StackSettings, show_secrets: bool) -> dict[str, Any]:
    """The same JSON shape as `pulumi stack output --json`: secrets masked unless asked for."""
    declaration = declare_stack(settings)
    return {
        key: value if show_secrets or key not in declaration.secret_outputs else SECRET_MASK
        for key, value in declaration.outputs.items()
    }


def rerun_job(settings: StackSettings, progress: Progress) -> None:
    """Apply bootstrap.sql and the migrations again (`elizadb migrate`)."""
    engines = stack_engines(settings)
    # It applies the whole declaration: an engine or placement change is judged as `up` does.
    check_engine_change(settings, engines, progress)
    check_placement_change(settings, engines)
    declaration = declare_stack(settings)
    applier = Applier(engines, settings.stack, progress)
    jobs = [c for c in declaration.of_type(CONTAINER) if c.inputs.get("attach")]
    for job in jobs:
        applier.remove(job.inputs["name"])
    applier.apply(declaration)


@dataclass(frozen=True)
class NodeStatus:
    name: str
    declared_role: str
    state: str
    ready: bool
    in_recovery: bool | None
    replication: str


def status(settings: StackSettings) -> list[NodeStatus]:
    """Each node as it is now: the role it plays (asked of the server, not taken from its name),
    its replication as the node that is primary sees it, and where the pooler actually routes."""
    topo = topology(effective_settings(settings, StateFile(settings.stack)))
    client = stack_engines(settings)
    rows: list[NodeStatus] = []
    for node in topo.nodes:
        state = container_status(client, node.name) or "missing"
        ready = (
            state == "running"
            and exec_in(
                client, node.name, ["pg_isready", "-q", "-h", "/run/postgresql"], user="postgres"
            ).ok
        )
        role_now = in_recovery(client, node.name) if ready else None
        rows.append(NodeStatus(node.name, node.role, state, ready, role_now, "-"))
    primaries = [r.name for r in rows if r.in_recovery is False]
    streams: dict[str, str] = {}
    for name in primaries:
        for line in (
            query_rows(
                client,
                name,
                "SELECT application_name, state, sync_state, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication",
            )
            or []
        ):
            app, stream_state, sync, lag = line.split("|")
            streams[app] = f"{stream_state} from {name} ({sync}, {int(float(lag or 0))} B behind)"
    by_name = {n.name: n for n in topo.nodes}
    result = []
    for row in rows:
        if row.in_recovery is False:
            text = f"{sum(1 for r in rows if r.in_recovery)} standby(s), {len(streams)} streaming"
            if len(primaries) > 1:
                text += f"; {len(primaries)} nodes accept writes"
            row = replace(row, replication=text)
        elif row.in_recovery:
            application = by_name[row.name].application_name
            row = replace(row, replication=streams.get(application, "not streaming"))
        result.append(row)
    pooler_state = container_status(client, topo.pooler_name) or "missing"
    target = _pooler_target(client, topo.pooler_name) if pooler_state == "running" else None
    routes = f"-> {target}" if target else "-"
    if target == topo.router_name:
        routes += " (forwards to the leader)"
    elif target and target not in primaries:
        routes += " (not a node that accepts writes)"
    result.append(
        NodeStatus(
            topo.pooler_name, "pgbouncer", pooler_state, pooler_state == "running", None, routes
        )
    )
    return result


def _pooler_target(client: Target, pooler: str) -> str | None:
    """The server host the running pooler's configuration names (its [databases] entries)."""
    try:
        result = exec_in(client, pooler, ["cat", paths.PGBOUNCER_INI])
    except EngineError:
        return None
    hosts = {m.group(1) for m in re.finditer(r"\bhost=(\S+)", result.stdout)}
    return ", ".join(sorted(hosts)) or None
