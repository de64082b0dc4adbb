"""pgbouncer.ini and its auth file."""

from __future__ import annotations

from infra.render import HEADER, paths
from infra.render.router import READ_WRITE_PORT
from infra.roles import POOLER_AUTH
from infra.settings import StackSettings
from infra.topology import PG_PORT, POOLER_PORT, Topology

AUTH_QUERY = "SELECT usename, passwd FROM pgbouncer.get_auth($1)"
# The session-mode pool is this alias of the Eliza database (see session_pool_name).
SESSION_SUFFIX = "_session"
# Seconds between server logins after one failed (PgBouncer takes fractions).
SERVER_LOGIN_RETRY_S = "0.5"


def session_pool_name(database: str) -> str:
    """The PgBouncer database name of the session-mode pool in front of `database`.

    Session-level state must stay on one server connection: @elizaos/plugin-sql takes
    pg_advisory_lock around its migrations and releases it later, which through transaction
    pooling may land on another server connection and leave the lock held."""
    return f"{database}{SESSION_SUFFIX}"


def render_pgbouncer_ini(settings: StackSettings, topo: Topology) -> str:
    pool = settings.pooler
    tls = settings.tls.enabled
    # Every database is served from the primary; clients authenticate by SCRAM against the
    # primary's own verifiers (auth_query), and PgBouncer reuses the client's SCRAM keys to log
    # into the server, so no user password is stored in the pooler.
    # PgBouncer has no read-write targeting (host=a,b round-robins). Under Patroni it names the
    # router, which forwards to whichever node leads; otherwise it names the current primary and
    # a failover repoints it.
    target = (
        f"host={topo.router_name} port={READ_WRITE_PORT}"
        if topo.router_name
        else f"host={topo.current_primary.name} port={PG_PORT}"
    )
    server = f"{target} auth_user={POOLER_AUTH.name}"
    databases = {
        "*": server,
        session_pool_name(settings.database): (
            f"{server} dbname={settings.database} pool_mode=session"
        ),
    }
    settings_map: dict[str, str] = {
        "admin_users": POOLER_AUTH.name,
        "auth_dbname": settings.database,
        "auth_file": paths.USERLIST,
        "auth_query": AUTH_QUERY,
        "auth_type": "scram-sha-256",
        "auth_user": POOLER_AUTH.name,
        "default_pool_size": str(pool.pool_size),
        # node-postgres and JDBC send these; PgBouncer would otherwise refuse the connection.
        "ignore_startup_parameters": "extra_float_digits,options",
        "listen_addr": "*",
        "listen_port": str(POOLER_PORT),
        "max_client_conn": str(pool.max_client_connections),
        # Protocol-level prepared statements in transaction mode (PgBouncer >= 1.21).
        "max_prepared_statements": "200",
        "pool_mode": pool.pool_mode,
        "server_connect_timeout": str(pool.connect_timeout_seconds),
        "server_idle_timeout": str(pool.idle_timeout_seconds),
        # After a failed server login PgBouncer waits this long before the next (default 15 s),
        # and meanwhile refuses new clients and holds the queued ones. Under Patroni a switchover
        # or failover fails a login or two while the router still points at the old leader:
        # with 15 s every measured planned switchover kept the pooler's clients from writing for
        # 15.2-15.3 s; with 0.5 s, 2-3 s. A retry costs one TCP connection to the router.
        "server_login_retry": SERVER_LOGIN_RETRY_S,
        "stats_users": POOLER_AUTH.name,
        "unix_socket_dir": "",
    }
    if tls:
        settings_map.update(
            {
                "client_tls_ca_file": paths.CA_CERT,
                "client_tls_cert_file": paths.SERVER_CERT,
                "client_tls_key_file": paths.SERVER_KEY,
                "client_tls_protocols": "tlsv1.2,tlsv1.3",
                "client_tls_sslmode": "require",
                "server_tls_ca_file": paths.CA_CERT,
                "server_tls_protocols": "tlsv1.2,tlsv1.3",
                "server_tls_sslmode": "verify-full",
            }
        )
    lines = [f"; {HEADER}", "[databases]"]
    lines += [f"{k} = {v}" for k, v in sorted(databases.items())]
    lines += ["", "[pgbouncer]"]
    lines += [f"{k} = {v}" for k, v in sorted(settings_map.items())]
    return "\n".join(lines) + "\n"


def render_userlist(auth_password: str) -> str:
    """PgBouncer needs the auth_user's own password in clear to log into the server."""
    escaped = auth_password.replace('"', '""')
    return f'"{POOLER_AUTH.name}" "{escaped}"\n'
