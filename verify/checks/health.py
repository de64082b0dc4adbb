"""health: every node reachable, in the role the outputs declare, answering fast, with headroom."""

from __future__ import annotations

import statistics
import time

from verify import server_files
from verify.context import Context, row, scalar
from verify.model import Check, Findings, Outcome, Unreachable


def check_reachable(ctx: Context) -> Outcome:
    """Every node accepts a verified TLS connection as the superuser from the outputs."""
    seen = Findings()
    versions = set()
    for node in ctx.outputs.nodes:
        try:
            versions.add(ctx.node(node).info.server_version // 10000)
        except Unreachable as err:
            # This is the check that reports unreachable nodes: a failure, not a skip.
            seen.problem(f"{node} cannot be reached: {err.message}")
    return seen.outcome(
        f"{len(ctx.outputs.nodes)} node(s) reachable over verified TLS "
        f"(PostgreSQL {', '.join(map(str, sorted(versions)))})",
        "start the node's container (`elizadb status`, docker/podman ps -a) and read its log; "
        "a TLS or password error means the outputs no longer match the stack (`elizadb up` "
        "or `pulumi up`)",
    )


def check_role(ctx: Context) -> Outcome:
    """The primary is not in recovery and every replica is (no split brain, no lost standby), and
    the read-write connection string (agentPrimary) lands on the primary."""
    seen = Findings()
    for node in ctx.outputs.nodes:
        try:
            in_recovery = scalar(ctx.node(node), "SELECT pg_is_in_recovery()")
        except Unreachable as err:
            seen.unreachable(err)
            continue
        expected = node != ctx.outputs.primary
        if in_recovery != expected:
            actual = "a standby (in recovery)" if in_recovery else "a primary (accepts writes)"
            seen.problem(
                f"{node} is {actual}, but the outputs declare it a "
                f"{'replica' if expected else 'primary'}"
            )
    _check_read_write_target(ctx, seen)
    return seen.outcome(
        f"primary is primary, {len(ctx.outputs.replicas)} replica(s) in recovery; "
        "agentPrimary lands on it",
        "a promoted replica must be rebuilt from the primary (remove its container and data "
        "volume, then `elizadb up`), or, after a deliberate failover, redeploy so that the "
        "outputs name the new primary",
    )


# A server is identified by its system identifier and start time (a promoted replica shares the
# identifier, not the start time).
IDENTITY = "SELECT (SELECT system_identifier FROM pg_control_system()), pg_postmaster_start_time()"


def _check_read_write_target(ctx: Context, seen: Findings) -> None:
    """Clients reach the primary through agentPrimary, which may list several hosts for libpq to
    pick the read-write one: it must pick the primary of the outputs."""
    try:
        landed = row(ctx.agent(), IDENTITY)
        in_recovery = scalar(ctx.agent(), "SELECT pg_is_in_recovery()")
        primary = row(ctx.node(ctx.outputs.primary), IDENTITY)
    except Unreachable as err:
        seen.unreachable(err)
        return
    if in_recovery:
        seen.problem(
            "connections.agentPrimary lands on a standby (in recovery, started "
            f"{landed[1]:%F %T}): every write through it fails"
        )
    elif landed != primary:
        seen.problem(
            f"connections.agentPrimary reaches a read-write server other than {ctx.outputs.primary} "
            f"(started {landed[1]:%F %T}): two nodes accept writes"
        )


def check_latency(ctx: Context) -> Outcome:
    """The median `SELECT 1` round trip on every node is under select1_max_ms."""
    t = ctx.thresholds
    seen = Findings()
    medians: dict[str, float] = {}
    for node in ctx.outputs.nodes:
        try:
            conn = ctx.node(node)
        except Unreachable as err:
            seen.unreachable(err)
            continue
        samples = []
        for _ in range(t.select1_samples):
            start = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            samples.append((time.perf_counter() - start) * 1000)
        medians[node.label] = statistics.median(samples)
        if medians[node.label] > t.select1_max_ms:
            seen.problem(
                f"{node}: SELECT 1 takes {medians[node.label]:.1f} ms (median of "
                f"{t.select1_samples}), over {t.select1_max_ms:g} ms"
            )
    shown = ", ".join(f"{k} {v:.1f} ms" for k, v in medians.items())
    return seen.outcome(
        f"SELECT 1 median {shown}",
        "look for CPU or I/O saturation on the host and for long-running queries "
        "(pg_stat_activity); a slow network path shows as latency on every node",
    )


def connection_problem(label: str, used: int, limit: int, max_used: float) -> str | None:
    """None when `used` of the `limit` client slots is within the allowed fraction."""
    if limit <= 0:
        return f"{label}: no connection slots left for clients (limit {limit})"
    if used / limit > max_used:
        return (
            f"{label}: {used} of {limit} client connection slots in use "
            f"({used / limit:.0%}, over {max_used:.0%})"
        )
    return None


def check_connections(ctx: Context) -> Outcome:
    """Client connections on every node stay under connections_max_used of the slots
    (max_connections less the reserved ones)."""
    seen = Findings()
    shown = []
    for node in ctx.outputs.nodes:
        try:
            conn = ctx.node(node)
        except Unreachable as err:
            seen.unreachable(err)
            continue
        used, limit = row(
            conn,
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
            "       current_setting('max_connections')::int"
            "       - current_setting('superuser_reserved_connections')::int"
            "       - current_setting('reserved_connections')::int",
        )
        shown.append(f"{node.label} {used}/{limit}")
        problem = connection_problem(str(node), used, limit, ctx.thresholds.connections_max_used)
        if problem:
            seen.problem(problem)
    return seen.outcome(
        "connections " + ", ".join(shown),
        "find who holds the connections (pg_stat_activity by usename, application_name); route "
        "clients through the pooler, or raise max_connections",
    )


def check_disk(ctx: Context) -> Outcome:
    """The file system of every node's data directory has disk_min_free of its space free.

    PostgreSQL has no SQL function for free space, so this runs `df` on the server through
    COPY ... TO PROGRAM, which writes a temporary file: hence not in read-only mode.
    """
    seen = Findings()
    shown = []
    for node in ctx.outputs.nodes:
        try:
            conn = ctx.node(node)
        except Unreachable as err:
            seen.unreachable(err)
            continue
        data_dir = scalar(conn, "SELECT current_setting('data_directory')")
        usage = server_files.disk_usage(conn, data_dir)
        shown.append(f"{node.label} {usage.free_fraction:.0%} free")
        if usage.free_fraction < ctx.thresholds.disk_min_free:
            seen.problem(
                f"{node}: {usage.free_bytes / 2**30:.1f} GiB of {usage.total_bytes / 2**30:.1f} GiB "
                f"free on {data_dir} ({usage.free_fraction:.0%}, under "
                f"{ctx.thresholds.disk_min_free:.0%})"
            )
    return seen.outcome(
        "data volumes " + ", ".join(shown),
        "free space on the volume (old WAL held by an inactive slot, logs, bloat) or grow it "
        "before PostgreSQL stops accepting writes",
    )


CHECKS = (
    Check("health.reachable", check_reachable),
    Check("health.role", check_role),
    Check("health.latency", check_latency),
    Check("health.connections", check_connections),
    Check("health.disk", check_disk, writes="df output to a temporary file on each node"),
)
