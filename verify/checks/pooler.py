"""pooler: PgBouncer answers over TLS, sends clients to the current primary, keeps no queue of
waiting clients, and is configured for SCRAM and verified TLS on both legs.

Pool state and configuration come from PgBouncer's admin console (SHOW POOLS / DATABASES /
CONFIG / SERVERS) as pgbouncer_auth, the console user in the outputs.
"""

from __future__ import annotations

from typing import Any

from verify.context import Context, row
from verify.model import Check, Findings, Outcome, Unreachable
from verify.thresholds import Thresholds

# The server's identity is its system identifier and start time (a promoted replica shares the
# identifier, not the start time); the address is for the message only, as a server may be
# reached on several.
IDENTITY = (
    "SELECT pg_is_in_recovery(), host(inet_server_addr()),"
    "       (SELECT system_identifier FROM pg_control_system()),"
    "       pg_postmaster_start_time()"
)


def check_reachable(ctx: Context) -> Outcome:
    """The pooler accepts eliza_agent and eliza_user over verified TLS (SCRAM through
    auth_query) and runs a query for the agent; its admin console answers."""
    seen = Findings()
    for role in ("agent", "user"):
        try:
            conn = ctx.pooled(role)
        except Unreachable as err:
            seen.problem(f"the pooler refuses {role} ({ctx.outputs.pooler}): {err.message}")
            continue
        if not conn.pgconn.ssl_in_use:
            seen.problem(f"the pooler connection as {role} is not encrypted")
    if not seen.problems:
        ctx.pooled_fetch("agent", "SELECT 1")
        try:
            ctx.admin_show("VERSION")
        except Unreachable as err:
            seen.problem(f"the admin console refuses pgbouncer_auth: {err.message}")
    return seen.outcome(
        f"{ctx.outputs.pooler} accepts agent and user over TLS",
        "start the pooler container and read its log; an authentication error points at "
        "pgbouncer.get_auth() and the pgbouncer_auth password (`elizadb up` resets both)",
    )


def check_routes_to_primary(ctx: Context) -> Outcome:
    """A query through the pooler runs on the primary of the outputs: the same server (system
    identifier and start time), not in recovery."""
    seen = Findings()
    try:
        pooled = ctx.pooled_fetch("agent", IDENTITY)[0]
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    try:
        direct = row(ctx.node(ctx.outputs.primary), IDENTITY)
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    if pooled[0]:
        seen.problem(f"the pooler sends clients to a server in recovery ({pooled[1]}): writes fail")
    elif (pooled[2], pooled[3]) != (direct[2], direct[3]):
        seen.problem(
            f"the pooler sends clients to {pooled[1]} (started {pooled[3]:%F %T}), "
            f"not to the primary {direct[1]} (started {direct[3]:%F %T})"
        )
    hosts = {
        row["host"] for row in ctx.admin_show("DATABASES") if row["name"] == ctx.outputs.database
    }
    if hosts:
        seen.note(f"[databases] host {', '.join(sorted(h for h in hosts if h))}")
    return seen.outcome(
        "the pooler reaches the primary",
        "point PgBouncer's [databases] at the primary (`elizadb up` renders pgbouncer.ini) and "
        "RELOAD it on the admin console",
    )


def _waited(pool: dict[str, Any]) -> float:
    """How long the oldest waiting client of the pool has waited, in seconds."""
    return float(pool["maxwait"]) + float(pool.get("maxwait_us") or 0) / 1e6


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value >= 0.1 else f"{value * 1000:.0f} ms"


def _over(pool: dict[str, Any], t: Thresholds) -> bool:
    return (
        pool["cl_waiting"] > t.pooler_max_waiting_clients
        or _waited(pool) > t.pooler_max_wait_seconds
    )


def _queue(pool: dict[str, Any], t: Thresholds) -> str:
    return (
        f"pool {pool['database']}/{pool['user']}: {pool['cl_waiting']} client(s) waiting, "
        f"the oldest for {_seconds(_waited(pool))} ({pool['cl_active']} active, "
        f"{pool['sv_active']} server connections busy; thresholds "
        f"{t.pooler_max_waiting_clients} clients, {t.pooler_max_wait_seconds:g} s)"
    )


def _client_pools(pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pools if p["database"] != "pgbouncer"]  # not the admin console itself


def pool_problems(pools: list[dict[str, Any]], t: Thresholds) -> list[str]:
    """Pools where clients queue: more waiting than allowed, or waiting too long."""
    return [_queue(p, t) for p in _client_pools(pools) if _over(p, t)]


def pool_warnings(pools: list[dict[str, Any]], t: Thresholds) -> list[str]:
    """Pools where clients queue within the thresholds: every server connection of the pool is
    busy and the next client waits. Agents feel it as latency before anything fails."""
    return [
        _queue(p, t)
        for p in _client_pools(pools)
        if (p["cl_waiting"] > 0 or _waited(p) > 0) and not _over(p, t)
    ]


def check_pools(ctx: Context) -> Outcome:
    """No pool has clients queueing beyond the thresholds (cl_waiting, maxwait) and no database
    is paused or disabled. Warns when clients queue at all (cl_waiting or maxwait above 0)."""
    seen = Findings()
    try:
        pools = ctx.admin_show("POOLS")
        databases = ctx.admin_show("DATABASES")
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    for problem in pool_problems(pools, ctx.thresholds):
        seen.problem(problem)
    for warning in pool_warnings(pools, ctx.thresholds):
        seen.warn(warning)
    for db in databases:
        if db.get("paused") or db.get("disabled"):
            seen.problem(
                f"database {db['name']} is {'paused' if db.get('paused') else 'disabled'}"
                " in PgBouncer"
            )
    waiting = sum(p["cl_waiting"] for p in pools)
    return seen.outcome(
        f"{len(pools)} pool(s), {waiting} client(s) waiting",
        "clients wait when every server connection of the pool is busy: look for long "
        "transactions (SHOW SERVERS, pg_stat_activity) or raise elizadb:pooler.poolSize; RESUME "
        "a paused database, ENABLE a disabled one",
        "every server connection of the pool was busy: look for long transactions (SHOW "
        "SERVERS, pg_stat_activity), or raise elizadb:pooler.poolSize if the primary has the "
        "connections (max_connections) and the CPUs to run them",
    )


def config_problems(config: dict[str, str], servers: list[dict[str, Any]]) -> list[str]:
    problems = []
    if config.get("auth_type") != "scram-sha-256":
        problems.append(f"auth_type is {config.get('auth_type')}, not scram-sha-256")
    if config.get("client_tls_sslmode") not in ("require", "verify-ca", "verify-full"):
        problems.append(
            f"client_tls_sslmode is {config.get('client_tls_sslmode')}: clients may "
            "connect without TLS"
        )
    if config.get("server_tls_sslmode") not in ("verify-ca", "verify-full"):
        problems.append(
            f"server_tls_sslmode is {config.get('server_tls_sslmode')}: the pooler "
            "does not verify the server it sends passwords to"
        )
    for server in servers:
        if not server.get("tls"):
            problems.append(
                f"server connection {server['user']}@{server['database']} to "
                f"{server['addr']} is not encrypted"
            )
    return problems


def check_config(ctx: Context) -> Outcome:
    """PgBouncer authenticates clients by SCRAM, requires TLS from them, verifies the server's
    certificate, and every open server connection is encrypted."""
    seen = Findings()
    try:
        config = {row["key"]: row["value"] for row in ctx.admin_show("CONFIG")}
        servers = ctx.admin_show("SERVERS")
    except Unreachable as err:
        seen.unreachable(err)
        return seen.outcome("", "")
    for problem in config_problems(config, servers):
        seen.problem(problem)
    return seen.outcome(
        f"auth {config.get('auth_type')}, client TLS {config.get('client_tls_sslmode')}, "
        f"server TLS {config.get('server_tls_sslmode')} ({len(servers)} server connection(s))",
        "restore the rendered pgbouncer.ini (`elizadb up`) and RELOAD on the admin console",
    )


CHECKS = (
    Check("pooler.reachable", check_reachable),
    Check("pooler.routes_to_primary", check_routes_to_primary),
    Check("pooler.pools", check_pools, warns=True),
    Check("pooler.config", check_config),
)
