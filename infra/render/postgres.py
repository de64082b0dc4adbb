"""postgresql.conf and pg_hba.conf for every node of a stack."""

from __future__ import annotations

from infra.render import HEADER, paths
from infra.render.pgbackrest import archive_command, restore_command
from infra.roles import REPLICATOR, SUPERUSER
from infra.settings import StackSettings
from infra.topology import PG_PORT, Node, Topology


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def primary_conninfo(settings: StackSettings, topo: Topology, node: Node) -> str:
    """How a standby finds the primary: every node is listed and libpq picks the one that is
    read-write (PostgreSQL reports in_hot_standby at connection start), so after a failover the
    standbys follow the new primary with no configuration change (scaling does change it). TLS is verified against the
    stack CA; the password comes from the private passfile, never from the config."""
    sslmode = "verify-full" if settings.tls.enabled else "disable"
    parts = [
        f"host={','.join(n.name for n in topo.nodes)}",
        # Fixed addresses, so that no name is looked up (the name of a stopped container is
        # forwarded to upstream DNS and blocks the WAL receiver, and with it a promotion). Only
        # deployed nodes are listed: each address that does not answer costs the WAL receiver
        # seconds per round, which is what a standby spends finding a new primary.
        f"hostaddr={','.join(topo.address(n) for n in topo.nodes)}",
        f"port={','.join(str(PG_PORT) for _ in topo.nodes)}",
        "target_session_attrs=read-write",
        f"user={REPLICATOR.name}",
        f"passfile={paths.PGPASS}",
        f"sslmode={sslmode}",
        f"sslrootcert={paths.CA_CERT}",
        f"application_name={node.application_name}",
        "connect_timeout=2",
        # The WAL receiver connects asynchronously, where connect_timeout does not apply: a
        # fenced primary's address would hold each attempt for minutes of SYN retries.
        "tcp_user_timeout=1000",
    ]
    return " ".join(parts)


def synchronous_standby_names(settings: StackSettings, topo: Topology) -> str:
    """Every possible node is named, so the setting holds whichever node is primary (a primary is
    never its own standby) and however many replicas there are."""
    if not settings.synchronous:
        return ""
    names = ", ".join(f'"{n.application_name}"' for n in topo.possible_nodes)
    return f"ANY {settings.replication.synchronous_count} ({names})"


def render_postgresql_conf(settings: StackSettings, topo: Topology, node: Node) -> str:
    """Role-neutral: whether a node is primary or standby is decided by standby.signal in its
    data directory, never by this file, so a promoted node stays primary across restarts."""
    forced: dict[str, str] = {
        "cluster_name": _quote(node.short),
        "listen_addresses": _quote("*"),
        "port": str(PG_PORT),
        "unix_socket_directories": _quote("/run/postgresql"),
        "hba_file": _quote(paths.PG_HBA_CONF),
        "password_encryption": _quote("scram-sha-256"),
        "ssl": "on" if settings.tls.enabled else "off",
        "ssl_cert_file": _quote(paths.SERVER_CERT),
        "ssl_key_file": _quote(paths.SERVER_KEY),
        "ssl_ca_file": _quote(paths.CA_CERT),
        "ssl_min_protocol_version": _quote("TLSv1.2"),
        "wal_level": "replica",
        "hot_standby": "on",
        # pg_rewind needs hint bits WAL-logged (data checksums are on as well).
        "wal_log_hints": "on",
        "synchronous_standby_names": _quote(synchronous_standby_names(settings, topo)),
        # Read only while a standby; present on every node, since any node may become one.
        "primary_conninfo": _quote(primary_conninfo(settings, topo, node)),
        "primary_slot_name": _quote(node.slot),
        # A standby follows the newest timeline, i.e. a promoted peer.
        "recovery_target_timeline": _quote("latest"),
        # WAL archiving into the stack's pgBackRest repository (infra/render/pgbackrest.py). On
        # every node: with archive_mode = on only the primary archives, so whichever node is
        # promoted starts archiving by itself; standbys and restores fetch from the archive.
        "archive_mode": "on",
        "archive_command": _quote(archive_command()),
        "restore_command": _quote(restore_command()),
    }
    tunables = {
        name: value if _is_plain(value) else _quote(value)
        for name, value in settings.pg_parameters().items()
    }
    lines = [f"# {HEADER}", f"# node: {node.name}", "", "# set by eliza-db"]
    lines += [f"{k} = {v}" for k, v in sorted(forced.items())]
    lines += ["", "# defaults and Pulumi.<stack>.yaml elizadb:postgres.parameters"]
    lines += [f"{k} = {v}" for k, v in tunables.items()]
    return "\n".join(lines) + "\n"


def _is_plain(value: str) -> bool:
    return value.replace(".", "", 1).isdigit() or value in {"on", "off", "true", "false"}


def render_pg_hba(settings: StackSettings) -> str:
    """First match wins: refuse plain TCP outright (when TLS is on), admit only SCRAM over TLS,
    and end with an explicit reject. No `trust` anywhere."""
    tcp = "hostssl" if settings.tls.enabled else "host"
    rows: list[tuple[str, ...]] = [
        # In-container administration: the entrypoint and health checks, as the OS user postgres.
        ("local", "all", SUPERUSER, "", "peer"),
        ("local", "all", "all", "", "reject"),
    ]
    if settings.tls.enabled:
        rows.append(("hostnossl", "all", "all", "all", "reject"))
    rows += [
        (tcp, "replication", REPLICATOR.name, "all", "scram-sha-256"),
        (tcp, "all", REPLICATOR.name, "all", "reject"),
        (tcp, "all", "all", "all", "scram-sha-256"),
        ("host", "all", "all", "all", "reject"),
    ]
    lines = [f"# {HEADER}", "# TYPE  DATABASE  USER  ADDRESS  METHOD"]
    lines += ["  ".join(f"{c:<12}" for c in row).rstrip() for row in rows]
    return "\n".join(lines) + "\n"
