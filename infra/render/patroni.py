"""patroni.yml for one PostgreSQL node of a highly available stack.

Patroni runs PostgreSQL on every node and elects the primary through a leader lease in etcd
(infra/render/etcd.py): one leader at a time, replicas streaming from it over TLS into a slot
per member, pg_rewind when an old primary comes back, and the cluster-wide PostgreSQL
parameters kept in its dynamic configuration (changed later with PATCH /config).

The file carries the superuser, replication, rewind and REST API passwords: it is uploaded as a
secret (`PATRONI_YML_UPLOAD`) and the entrypoint copies it to `PATRONI_YML`, mode 0600, owned by
postgres.

Parameters come in two sets, as for the non-Patroni nodes (infra/render/postgres.py):
forced ones (TLS, authentication, what replication and pg_rewind need) go into the node's
local `postgresql.parameters`, which take precedence over the dynamic configuration and so
cannot be changed through the REST API; tunables go into `bootstrap.dcs`, the dynamic
configuration written to etcd when the cluster is first initialised. Names Patroni manages
itself are refused as tunables.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from infra.errors import ConfigError
from infra.render import HEADER, paths
from infra.render.etcd import EtcdCluster, client_hosts, find_member
from infra.roles import REPLICATOR, SUPERUSER

PATRONI_YML_UPLOAD = f"{paths.ETC}/secrets/patroni.yml"
PATRONI_YML = f"{paths.PRIVATE}/patroni.yml"
# Patroni writes this one itself (from `authentication`) before each pg_basebackup/pg_rewind.
PATRONI_PGPASS = f"{paths.PRIVATE}/patroni.pgpass"
DATA_DIR = "/var/lib/postgresql/data/pg17"
BIN_DIR = "/usr/lib/postgresql/17/bin"
SOCKET_DIR = "/run/postgresql"

# Patroni's on_start and on_role_change callback (image/patroni-callback.py).
CALLBACK = "/usr/local/bin/elizadb-patroni-callback"

PG_PORT = 5432
API_PORT = 8008
REWIND_USER = "eliza_rewind"
API_USER = "patroni"

# Patroni's own floors for its timings (patroni/validator.py): it raises lower values itself.
MIN_TTL = 20
MIN_LOOP_WAIT = 1
MIN_RETRY_TIMEOUT = 3

# Set by Patroni from its own state; a value here would fight it.
MANAGED_BY_PATRONI = frozenset(
    {
        "cluster_name",
        "hba_file",
        "hot_standby",
        "ident_file",
        "listen_addresses",
        "port",
        "primary_conninfo",
        "primary_slot_name",
        "recovery_target_timeline",
        "restore_command",
        "synchronous_standby_names",
    }
)

_MEMBER = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PARAMETER = re.compile(r"^[a-z_][a-z0-9_.]*$")


@dataclass(frozen=True)
class Timings:
    """Leader lease timings, written once into the dynamic configuration.

    The primary renews its lease every `loop_wait` seconds; when the primary's host is lost,
    the lease runs out between `ttl - loop_wait` and `ttl` seconds later and a replica takes
    over at once (it watches the key). Patroni will not go below a 20 s ttl, so a lost host costs
    about 18-20 s plus the promotion. (A lost host that also held etcd's leader would add a new
    etcd election and a whole ttl: a new etcd leader renews every lease in full. On several
    hosts the leader's callback keeps etcd's leadership elsewhere, `_callbacks`.) A primary
    that cannot reach etcd retries each step for `retry_timeout` and then demotes itself;
    Patroni's rule loop_wait + 2 * retry_timeout <= ttl makes it demote before its lease can
    expire, which is what keeps two primaries from ever accepting writes. Defaults: ttl 20 (the floor), loop_wait 2 (a lease renewed ten times per
    ttl, cheap on three nodes), retry_timeout 6: 2 + 2 * 6 = 14 s, leaving 6 s for a slow
    machine before the lease could expire under a primary that has not yet demoted.
    """

    ttl: int = 20
    loop_wait: int = 2
    retry_timeout: int = 6

    def problems(self) -> list[str]:
        found: list[str] = []
        if self.ttl < MIN_TTL:
            found.append(f"timings.ttl: {self.ttl} is below Patroni's minimum of {MIN_TTL}")
        if self.loop_wait < MIN_LOOP_WAIT:
            found.append(f"timings.loop_wait: {self.loop_wait} is below {MIN_LOOP_WAIT}")
        if self.retry_timeout < MIN_RETRY_TIMEOUT:
            found.append(
                f"timings.retry_timeout: {self.retry_timeout} is below {MIN_RETRY_TIMEOUT}"
            )
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            found.append(
                f"timings: loop_wait + 2 * retry_timeout = "
                f"{self.loop_wait + 2 * self.retry_timeout} exceeds ttl {self.ttl}; Patroni "
                "requires loop_wait + 2 * retry_timeout <= ttl"
            )
        return found


@dataclass(frozen=True)
class PatroniMember:
    """`name` is the Patroni member name (its slot is derived from it, see `slot_name`);
    `host` is the DNS name (or address) peers reach it by, one of the SANs of the node
    certificate, and the ports are where they reach PostgreSQL and the REST API there (the
    ports published on its Docker host, when the stack spans several hosts). The node itself
    always listens on PG_PORT and API_PORT."""

    name: str
    host: str
    pg_port: int = PG_PORT
    api_port: int = API_PORT
    # The etcd member on the same host, on a stack spread over several hosts: when this node
    # leads, its callback moves etcd's leadership off the host (image/patroni-callback.py).
    etcd_nearby: str = ""


@dataclass(frozen=True)
class PatroniCluster:
    """What every node of one Patroni cluster shares."""

    scope: str  # the cluster's name in etcd
    members: tuple[PatroniMember, ...]
    etcd: EtcdCluster
    timings: Timings = field(default_factory=Timings)
    # Patroni then promotes only a synchronous standby, so no acknowledged commit is lost.
    synchronous_mode: bool = False
    synchronous_node_count: int = 1
    # Refuse writes rather than run without a synchronous standby (RPO 0 even when alone).
    synchronous_mode_strict: bool = False
    # An asynchronous replica further behind than this is never promoted.
    maximum_lag_on_failover_bytes: int = 1024 * 1024
    # Cluster-wide tunables (the stack's postgres.parameters), changeable through PATCH /config.
    parameters: Mapping[str, str] = field(default_factory=dict)
    # WAL archiving (pgBackRest's archive-push), empty to leave archiving off.
    archive_command: str = ""
    namespace: str = "/elizadb"
    listen_host: str = "0.0.0.0"  # inside the node's own network namespace
    replication_user: str = REPLICATOR.name
    rewind_user: str = REWIND_USER
    api_user: str = API_USER

    def __post_init__(self) -> None:
        problems = patroni_problems(self)
        if problems:
            raise ConfigError("patroni renderer inputs", problems)

    def member(self, name: str) -> PatroniMember:
        return find_member(self.members, name, "patroni renderer inputs")


@dataclass(frozen=True)
class PatroniSecrets:
    """Passwords written into patroni.yml (a 0600 file); never shown by repr."""

    superuser: str = field(repr=False)
    replication: str = field(repr=False)
    rewind: str = field(repr=False)
    api: str = field(repr=False)


def slot_name(member: str) -> str:
    """The physical slot Patroni keeps for `member` on the primary: the member name lower-cased
    with every character outside [a-z0-9_] turned into '_' (Patroni's own rule)."""
    return re.sub(r"[^a-z0-9_]", "_", member.lower())[:63]


def patroni_problems(cluster: PatroniCluster) -> list[str]:
    problems = cluster.timings.problems()
    etcd_names = [m.name for m in cluster.etcd.members]
    if not re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", cluster.scope):
        problems.append(f"scope: {cluster.scope!r} is not lower-case letters, digits and '-'")
    if not re.match(r"^/[a-z0-9/_-]*$", cluster.namespace):
        problems.append(f"namespace: {cluster.namespace!r} is not an absolute key path")
    if not cluster.members:
        problems.append("members: at least one member is needed")
    for i, member in enumerate(cluster.members):
        if not _MEMBER.match(member.name):
            problems.append(
                f"members.{i}.name: {member.name!r} is not lower-case letters, digits and '-'"
            )
        if not member.host or any(c in member.host for c in " ,:/"):
            problems.append(f"members.{i}.host: {member.host!r} is not a host name or address")
        for key in ("pg_port", "api_port"):
            port = getattr(member, key)
            if not 1 <= port <= 65535:
                problems.append(f"members.{i}.{key}: {port} is outside 1..65535")
        if member.etcd_nearby and member.etcd_nearby not in etcd_names:
            problems.append(
                f"members.{i}.etcd_nearby: {member.etcd_nearby!r} is not one of the etcd "
                f"members ({', '.join(etcd_names)})"
            )
    slots = [slot_name(m.name) for m in cluster.members]
    repeated = sorted({s for s in slots if slots.count(s) > 1})
    if repeated:
        problems.append(f"members: two members would share the slot {', '.join(repeated)}")
    if cluster.synchronous_mode:
        standbys = len(cluster.members) - 1
        if not 1 <= cluster.synchronous_node_count <= max(standbys, 1):
            problems.append(
                f"synchronous_node_count: {cluster.synchronous_node_count} is outside "
                f"1..{max(standbys, 1)} (the cluster has {standbys} standby(s))"
            )
    elif cluster.synchronous_mode_strict:
        problems.append("synchronous_mode_strict: needs synchronous_mode")
    if cluster.maximum_lag_on_failover_bytes < 0:
        problems.append(
            f"maximum_lag_on_failover_bytes: {cluster.maximum_lag_on_failover_bytes} is negative"
        )
    for name in sorted(cluster.parameters):
        if not _PARAMETER.match(name):
            problems.append(f"parameters.{name}: not a PostgreSQL parameter name")
        elif name in MANAGED_BY_PATRONI:
            problems.append(f"parameters.{name}: set by Patroni itself; remove it")
        elif name in _forced_parameters(cluster):
            problems.append(f"parameters.{name}: fixed by eliza-db (TLS, replication); remove it")
    roles = {
        "replication_user": cluster.replication_user,
        "rewind_user": cluster.rewind_user,
        "api_user": cluster.api_user,
    }
    for key, role in sorted(roles.items()):
        if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", role):
            problems.append(f"{key}: {role!r} is not a lower-case role name")
    if cluster.replication_user in {SUPERUSER, cluster.rewind_user}:
        problems.append("replication_user: must differ from the superuser and the rewind user")
    return problems


def _forced_parameters(cluster: PatroniCluster) -> dict[str, str]:
    """Fixed on every node, whatever the dynamic configuration says."""
    forced = {
        "password_encryption": "scram-sha-256",
        "ssl": "on",
        "ssl_cert_file": paths.SERVER_CERT,
        "ssl_key_file": paths.SERVER_KEY,
        "ssl_ca_file": paths.CA_CERT,
        "ssl_min_protocol_version": "TLSv1.2",
        "unix_socket_directories": SOCKET_DIR,
        "wal_level": "replica",
        # pg_rewind needs hint bits WAL-logged (initdb turns data checksums on as well).
        "wal_log_hints": "on",
        # With archive_mode = on only the primary archives: a promoted node takes over.
        "archive_mode": "on" if cluster.archive_command else "off",
    }
    if cluster.archive_command:
        forced["archive_command"] = cluster.archive_command
    return forced


def pg_hba_rows(cluster: PatroniCluster) -> list[str]:
    """First match wins: the node's own Patroni over the socket as the OS user postgres,
    nothing else locally, no TCP without TLS, SCRAM over TLS, and an explicit reject at the end.
    ("all" as a database does not cover replication connections, hence their own rows.)"""
    rows = [
        ("local", "all", SUPERUSER, "", "peer"),
        ("local", "all", "all", "", "reject"),
        ("local", "replication", "all", "", "reject"),
        ("hostnossl", "all", "all", "all", "reject"),
        ("hostnossl", "replication", "all", "all", "reject"),
        ("hostssl", "replication", cluster.replication_user, "all", "scram-sha-256"),
        ("hostssl", "replication", "all", "all", "reject"),
        ("hostssl", "all", cluster.replication_user, "all", "reject"),
        ("hostssl", "all", "all", "all", "scram-sha-256"),
        ("host", "all", "all", "all", "reject"),
    ]
    return [" ".join(c for c in row if c) for row in rows]


def _client_auth(user: str, password: str) -> dict[str, str]:
    return {
        "username": user,
        "password": password,
        "sslmode": "verify-full",
        "sslrootcert": paths.CA_CERT,
    }


def _dcs(cluster: PatroniCluster) -> dict[str, object]:
    t = cluster.timings
    dcs: dict[str, object] = {
        "ttl": t.ttl,
        "loop_wait": t.loop_wait,
        "retry_timeout": t.retry_timeout,
        "maximum_lag_on_failover": cluster.maximum_lag_on_failover_bytes,
        "synchronous_mode": cluster.synchronous_mode,
        "synchronous_mode_strict": cluster.synchronous_mode_strict,
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            # A node that cannot rewind (or whose timeline diverged past repair) is cloned
            # afresh from the leader rather than left out of the cluster.
            "remove_data_directory_on_rewind_failure": True,
            "remove_data_directory_on_diverged_timelines": True,
            "parameters": {k: cluster.parameters[k] for k in sorted(cluster.parameters)},
        },
    }
    if cluster.synchronous_mode:
        dcs["synchronous_node_count"] = cluster.synchronous_node_count
    return dcs


def _callbacks(cluster: PatroniCluster, member: PatroniMember) -> dict[str, str]:
    """Patroni's callbacks: only where an etcd member shares the node's host. Patroni appends
    the action, the role and the scope to the command."""
    if not member.etcd_nearby:
        return {}
    nearby = find_member(cluster.etcd.members, member.etcd_nearby, "patroni renderer inputs")
    command = shlex.join(
        [CALLBACK, f"{nearby.host}:{nearby.client_port}", ",".join(client_hosts(cluster.etcd))]
    )
    return {"on_role_change": command, "on_start": command}


def render_patroni_yml(cluster: PatroniCluster, name: str, secrets: PatroniSecrets) -> str:
    """patroni.yml for member `name` (mode 0600: it holds passwords)."""
    member = cluster.member(name)
    tls = {"certfile": paths.SERVER_CERT, "keyfile": paths.SERVER_KEY}
    config: dict[str, object] = {
        "scope": cluster.scope,
        "namespace": cluster.namespace,
        "name": member.name,
        "log": {"level": "INFO"},
        "restapi": {
            "listen": f"{cluster.listen_host}:{API_PORT}",
            "connect_address": f"{member.host}:{member.api_port}",
            **tls,
            "cafile": paths.CA_CERT,
            # Read-only endpoints (health, role) answer any TLS client, so that a load balancer
            # can probe them; every endpoint that changes something (switchover, restart,
            # PATCH /config) needs a certificate from the stack CA and the password below.
            "verify_client": "optional",
            "authentication": {"username": cluster.api_user, "password": secrets.api},
        },
        # What patronictl and Patroni itself use to call members' REST APIs: the node
        # certificate (it carries clientAuth) and the stack CA; basic auth falls back to the
        # restapi credentials above.
        "ctl": {**tls, "cacert": paths.CA_CERT, "insecure": False},
        "etcd3": {
            "hosts": list(client_hosts(cluster.etcd)),
            "protocol": "https",
            "cacert": paths.CA_CERT,
            "cert": paths.SERVER_CERT,
            "key": paths.SERVER_KEY,
        },
        "bootstrap": {
            "dcs": _dcs(cluster),
            "initdb": [
                "data-checksums",
                {"encoding": "UTF8"},
                {"locale": "C.UTF-8"},
                {"auth-local": "peer"},
                {"auth-host": "scram-sha-256"},
            ],
        },
        "postgresql": {
            "listen": f"{cluster.listen_host}:{PG_PORT}",
            "connect_address": f"{member.host}:{member.pg_port}",
            "data_dir": DATA_DIR,
            "bin_dir": BIN_DIR,
            "pgpass": PATRONI_PGPASS,
            # Patroni's own superuser session goes over the socket (peer, as OS user postgres).
            "use_unix_socket": True,
            "use_unix_socket_repl": False,
            "authentication": {
                "superuser": _client_auth(SUPERUSER, secrets.superuser),
                "replication": _client_auth(cluster.replication_user, secrets.replication),
                "rewind": _client_auth(cluster.rewind_user, secrets.rewind),
            },
            "basebackup": [{"checkpoint": "fast"}],
            "parameters": dict(sorted(_forced_parameters(cluster).items())),
            "pg_hba": pg_hba_rows(cluster),
            **({"callbacks": callbacks} if (callbacks := _callbacks(cluster, member)) else {}),
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }
    body = yaml.safe_dump(config, sort_keys=True, default_flow_style=False)
    return f"# {HEADER}\n# patroni member: {member.name}\n{body}"
