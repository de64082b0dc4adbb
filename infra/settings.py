"""Stack settings: read from the project-namespaced keys of `Pulumi.<stack>.yaml`, typed,
defaulted and validated here, and nowhere else. Everything downstream trusts `StackSettings`.

Every problem is collected and reported at once (`ConfigError`), each with its key path, the bad
value and what is allowed, in the manner of Patroni's validator.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

from infra.errors import ConfigError
from infra.pg_parameters import memory_problem, parameter_problems
from infra.placement import (
    LOCAL_HOST,
    POOLER,
    etcd_part,
    node_part,
    parts,
    reachable_address_problem,
    resolve,
    spread_problems,
)
from infra.roles import Role, server_role
from infra.sizing import Resources, VectorNeed, derived_parameters, fit_problems

PROJECT = "elizadb"
# The embedding size of the memories tables, stated once: the bootstrap job receives both from
# the rendered job (ELIZADB_EMBEDDING_DIMS, ELIZADB_EMBEDDING_MAX_DIMS) and image/migrate.sh
# refuses what is outside them, so `elizadb validate` accepts exactly what a deploy can deploy.
DEFAULT_EMBEDDING_DIMENSIONS = 1536
# pgvector's HNSW index accepts at most 2000 dimensions for the `vector` type, and the migrations
# index the embeddings with HNSW.
MAX_EMBEDDING_DIMENSIONS = 2000
MAX_REPLICAS = 9
NAME_PREFIX = "elizadb"

# PostgreSQL parameters the kit sets itself. A user value for one of these would break TLS,
# replication or the rendered file layout, so it is refused rather than silently overridden
# (CloudNativePG's "fixed" parameters).
FORCED_PG_PARAMETERS: frozenset[str] = frozenset(
    {
        "archive_command",
        "cluster_name",
        "archive_mode",
        "config_file",
        "data_directory",
        "hba_file",
        "hot_standby",
        "ident_file",
        "listen_addresses",
        "password_encryption",
        "port",
        "primary_conninfo",
        "primary_slot_name",
        "recovery_target_timeline",
        "restore_command",
        "ssl",
        "ssl_ca_file",
        "ssl_cert_file",
        "ssl_key_file",
        "ssl_min_protocol_version",
        "synchronous_standby_names",
        "unix_socket_directories",
        "wal_level",
        "wal_log_hints",
    }
)

# Defaults the user may override. Memory and parallelism are derived from resources.memory and
# resources.cpus (infra/sizing.py), not listed here; max_slot_wal_keep_size stops a vanished
# replica's slot from filling the disk.
DEFAULT_PG_PARAMETERS: Mapping[str, str] = {
    # A quiet database still ships its newest WAL to the backup repository within a minute.
    "archive_timeout": "60s",
    "checkpoint_timeout": "5min",
    "hnsw.ef_search": "40",
    # How many index tuples pgvector's iterative scan (hnsw.iterative_scan, migration 0006) may
    # visit before it stops looking for rows that pass a filter; pgvector's default is 20000. A
    # search that cannot fill its LIMIT runs to this bound: @elizaos/adapter-postgres 0.1's
    # duplicate check (room, similarity >= 0.95, LIMIT 1) finds nothing for almost every new
    # memory, and in busy rooms the planner gives it to the L2 HNSW index. Measured on 100k
    # memories (bench/results/agent/dedupe): in the busiest room 218 ms alone at 20000, 30 ms at
    # 5000; at 16 connections twice the turns per second and half the turn p95. Filtered
    # searches kept their rows at 3000 and above; on one load 2000 lost all ten rows of 2 queries
    # in 1100 and 2500 seven of one query's in 4000; 1000 took recall@10 below 0.99. 5000 keeps
    # a margin over 3000. postgres.parameters overrides it, as it does ef_search.
    "hnsw.max_scan_tuples": "5000",
    "log_connections": "on",
    "log_disconnections": "on",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "log_min_duration_statement": "1000",
    "log_statement": "ddl",
    "max_connections": "100",
    "max_replication_slots": "10",
    "max_slot_wal_keep_size": "2GB",
    "max_wal_senders": "10",
    "max_wal_size": "1GB",
    # An exact search over the memories (no index, or a filter no index serves) spends its time
    # in vector distances, which pgvector prices as an ordinary operator: at PostgreSQL's 1000
    # the planner never runs it in parallel. At 300 it does, from about 100k memories of 1536
    # dimensions: an exact top-10 over 100k took 68 ms with one worker (1.46 M vectors/s, 0.87-
    # 0.95 M serially), while an agent turn's plans, all index scans, stayed as they were
    # (bench/results/agent/exact-scan, parallel-setup).
    "parallel_setup_cost": "300",
    "wal_keep_size": "256MB",
    # How soon a standby retries its primary: after a failover, synchronous commits on the new
    # primary wait until a standby has found it (the default, 5 s, is most of the RTO).
    "wal_retrieve_retry_interval": "500ms",
}

_PG_PARAM_NAME = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")
_SIZE = re.compile(r"^(\d+)([kmg])$")
# A Docker image reference: [registry[:port]/]path[:tag]; lower-case path components.
_IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)
_SERVER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_BACKUP_INTERVAL_SECONDS = 10
MIN_PASSWORD_LENGTH = 12
# 63 (PgBouncer's and PostgreSQL's longest name) less the session pool's "_session".
MAX_DATABASE_NAME = 55


class Environment(str, Enum):
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )


class ImageSettings(_Model):
    base: str = "debian:trixie-slim"
    repository: str = "localhost/elizadb-postgres"

    @field_validator("base", "repository")
    @classmethod
    def _image_ref(cls, value: str) -> str:
        if not _IMAGE_REF.match(value):
            raise ValueError("not a valid image reference (e.g. debian:trixie-slim)")
        return value


class NetworkSettings(_Model):
    bind_address: str = "127.0.0.1"
    # The stack network's IPv4 subnet (a /24 or larger). Every container gets a fixed address in
    # it, so a restarted node keeps its address and nothing depends on a stale DNS answer
    # (PgBouncer caches them). Default: a /24 in 10.200.0.0/13 derived from the stack name.
    subnet: str | None = None
    primary_port: int = Field(default=15432, ge=1, le=65535)
    replica_port_base: int = Field(default=15433, ge=1, le=65535)
    pooler_port: int = Field(default=16432, ge=1, le=65535)
    # Patroni stacks publish the REST API of node i at patroniApiPortBase + i (the primary is
    # 0): on bindAddress on one host (verify reads it), on each host's address on several. Only
    # a stack on several hosts (elizadb:hosts) publishes the client and peer ports of etcd
    # member i, at etcdClientPortBase + i - 1 and etcdPeerPortBase + i - 1, and pgBackRest's
    # TLS servers: the backup repository's (on the pooler's host) at backupPortBase, node i's
    # at backupPortBase + 1 + i.
    patroni_api_port_base: int = Field(default=18008, ge=1, le=65535 - MAX_REPLICAS)
    etcd_client_port_base: int = Field(default=12379, ge=1, le=65531)
    etcd_peer_port_base: int = Field(default=12479, ge=1, le=65531)
    backup_port_base: int = Field(default=18432, ge=1, le=65534 - MAX_REPLICAS)

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            net = ipaddress.IPv4Network(value)
        except ValueError:
            raise ValueError("must be an IPv4 subnet such as 10.210.7.0/24") from None
        if net.prefixlen > 24:
            raise ValueError("must be a /24 or larger (addresses .1 to .127 are assigned)")
        return str(net)

    @field_validator("bind_address")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                "must be an IP address of the Docker host, such as 127.0.0.1 "
                "(0.0.0.0 publishes on every interface)"
            ) from None
        return value


class ResourceSettings(_Model):
    memory: str = "1g"
    shm_size: str = "512m"
    # The CPUs a node may use: sizes parallel query and parallel index builds. Not a container
    # limit (see README, "Sizing").
    cpus: float = Field(default=2, ge=1, le=1024)

    @field_validator("memory", "shm_size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _SIZE.match(value.lower()):
            raise ValueError("must be a size like 512m or 2g")
        return value.lower()


# The distance operators an HNSW index can serve on memories.embedding, each by its own index
# (an HNSW index serves only its operator class's operator): cosine `<=>` is the seed guide's
# index, l2 `<->` is what @elizaos/adapter-postgres 0.1's searchMemoriesByEmbedding orders by.
VectorOperator = Literal["cosine", "l2"]
VECTOR_OPERATORS: tuple[VectorOperator, ...] = ("cosine", "l2")


class VectorSettings(_Model):
    # How many memories the stack is expected to hold; validation refuses a size whose HNSW
    # indexes the node's memory cannot cache or build. None: not stated, not checked.
    expected_memories: int | None = Field(default=None, ge=0, le=10**10)
    # The operators the stack's clients rank memories by: only their HNSW indexes are built and
    # maintained (each costs minutes to build on a populated table and work on every insert).
    # Default: both, as the guide's queries (cosine) and the 0.1 adapter (l2) need.
    operators: list[str] = Field(default_factory=lambda: [str(op) for op in VECTOR_OPERATORS])

    @field_validator("operators")
    @classmethod
    def _operators(cls, value: list[str]) -> list[str]:
        allowed = ", ".join(VECTOR_OPERATORS)
        if not value:
            raise ValueError(
                "an empty list would leave agents' vector searches without an index (every "
                "search would read every embedding); list the operators your clients order by, "
                f"from {allowed}"
            )
        unknown = [op for op in value if op not in VECTOR_OPERATORS]
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not an operator eliza-db indexes: use {allowed} "
                "(cosine serves ORDER BY embedding <=> q, l2 serves <->, which "
                "@elizaos/adapter-postgres 0.1 uses)"
            )
        if len(set(value)) != len(value):
            raise ValueError("lists an operator twice; name each once")
        return value


class PostgresSettings(_Model):
    parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)


class PoolerSettings(_Model):
    # The guide's client pool: max 20, idleTimeoutMillis 30000, connectionTimeoutMillis 2000.
    pool_size: int = Field(default=20, ge=1, le=10000)
    max_client_connections: int = Field(default=500, ge=1, le=100000)
    idle_timeout_seconds: int = Field(default=30, ge=1)
    connect_timeout_seconds: int = Field(default=2, ge=1)
    pool_mode: Literal["transaction", "session"] = "transaction"


def duration_seconds(text: str) -> int:
    """Seconds in a duration such as 45s, 30m, 24h or 7d (validated by _DURATION first)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


class BackupSettings(_Model):
    # Full backups kept; older fulls, the incrementals that depend on them and the WAL only
    # they need are expired after every backup.
    retention_full: int = Field(default=2, ge=1, le=100)
    # The backup agent's schedule: a full backup when the newest is this old (or none exists),
    # an incremental when the newest backup of any type is `incrEvery` old.
    full_every: str = "7d"
    incr_every: str = "1d"

    @field_validator("full_every", "incr_every")
    @classmethod
    def _interval(cls, value: str) -> str:
        if not _DURATION.match(value):
            raise ValueError("must be a duration like 45s, 30m, 24h or 7d")
        if duration_seconds(value) < MIN_BACKUP_INTERVAL_SECONDS:
            raise ValueError(f"must be at least {MIN_BACKUP_INTERVAL_SECONDS}s")
        return value

    @property
    def full_every_seconds(self) -> int:
        return duration_seconds(self.full_every)

    @property
    def incr_every_seconds(self) -> int:
        return duration_seconds(self.incr_every)


class MaintenanceSettings(_Model):
    # Off (None) by default: when set, `elizadb maintenance` deletes memories whose createdAt is
    # older than this many days.
    memory_retention_days: int | None = Field(default=None, ge=1, le=36500)


class ReplicationSettings(_Model):
    # None: on in production, off elsewhere.
    synchronous: bool | None = None
    synchronous_count: int = Field(default=1, ge=1)


HaEngine = Literal["builtin", "patroni"]
ETCD_MEMBER_COUNTS = (1, 3, 5)


class HaSettings(_Model):
    # Who decides failover. builtin: eliza-db's own operations (`elizadb failover`, `watch`);
    # patroni: Patroni on every node, electing its leader in etcd, with a router in front that
    # the pooler follows (README, "High availability with Patroni").
    engine: HaEngine = "builtin"
    # etcd members (patroni only): a majority must answer, so three survive the loss of one.
    # None: three in production, one elsewhere.
    etcd_members: int | None = None

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, value: object) -> object:
        if value not in ("builtin", "patroni"):
            raise ValueError(
                "must be builtin (eliza-db's own failover operations) or patroni (Patroni over "
                "etcd decides failover)"
            )
        return value

    @field_validator("etcd_members")
    @classmethod
    def _members(cls, value: int | None) -> int | None:
        if value is not None and value not in ETCD_MEMBER_COUNTS:
            raise ValueError(
                "must be 1, 3 or 5: etcd keeps working while a majority of its members answers, "
                "so an even count adds a member that can fail without adding one that may"
            )
        return value


_ENGINE_URL = re.compile(
    r"^(unix:///\S+|ssh://(?:[^@\s/]+@)?[^\s/:@]+(?::\d{1,5})?|tcp://[^\s/:]+:\d{1,5})$"
)
_HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class HostSettings(_Model):
    """A Docker host (Docker Engine, or Podman's compatible API) that runs part of the stack."""

    # unix:///path/to/socket, ssh://user@host (Docker's own SSH transport) or tcp://host:port
    # with client certificates. None: the engine the CLI or the provider is configured with
    # (DOCKER_HOST), as for a stack that declares no host.
    url: str | None = None
    # Where the other hosts reach this host's published ports (and where they are published,
    # unless bindAddress says otherwise). Needed when the stack spans several hosts.
    address: str | None = None
    # The address the ports are published on, when it differs from `address` (behind NAT).
    bind_address: str | None = None
    # For tcp://: a folder holding ca.pem, cert.pem and key.pem (Docker's DOCKER_CERT_PATH).
    cert_path: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not _ENGINE_URL.match(value):
            raise ValueError(
                "must be unix:///path/to/docker.sock, ssh://user@host or tcp://host:port "
                "(with certPath)"
            )
        return value

    @field_validator("address", "bind_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address, such as 10.0.0.11") from None
        return value

    @property
    def publish_address(self) -> str | None:
        return self.bind_address or self.address


class TlsSettings(_Model):
    enabled: bool = True
    # Where clients keep the stack's CA certificate (the `caCert` output); it is the
    # sslrootcert of every connection string in the outputs.
    root_cert_path: str = ""
    cert_validity_days: int = Field(default=365, ge=2, le=3650)


SchemaProfile = Literal["eliza-0.1", "eliza-1"]
PROFILES: tuple[SchemaProfile, ...] = ("eliza-0.1", "eliza-1")


class SchemaSettings(_Model):
    # Which ElizaOS the stack serves. eliza-0.1: the seed guide's schema, written by the kit's
    # sql/ migrations, for @elizaos/adapter-postgres 0.1. eliza-1: @elizaos/plugin-sql 1.x,
    # whose own runtime migrations write the tables; the kit provides everything around them
    # (sql/eliza-1/).
    profile: SchemaProfile = "eliza-0.1"
    # ElizaOS servers (their ELIZA_SERVER_ID values) that run with ENABLE_DATA_ISOLATION=true:
    # each gets a login role whose sessions are isolated to that server's rows (eliza-1 only).
    servers: list[str] = Field(default_factory=list)

    @field_validator("profile", mode="before")
    @classmethod
    def _profile(cls, value: object) -> object:
        if value not in PROFILES:
            raise ValueError(
                "must be eliza-0.1 (the seed guide's schema, for @elizaos/adapter-postgres 0.1) "
                "or eliza-1 (ElizaOS 1.x: @elizaos/plugin-sql writes its own tables)"
            )
        return value

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if not _SERVER_ID.match(s)]
        if bad:
            raise ValueError(
                f"{bad[0]!r} is not a usable ELIZA_SERVER_ID here: use 1-50 lower-case letters, "
                "digits and '-' (it names the server's database role)"
            )
        if len(set(value)) != len(value):
            raise ValueError("lists a server twice; name each ELIZA_SERVER_ID once")
        return value


class StackSettings(_Model):
    stack: str
    environment: Environment = Environment.DEVELOPMENT
    replicas: int = Field(default=2, ge=0, le=MAX_REPLICAS)
    embedding_dimensions: int = Field(default=DEFAULT_EMBEDDING_DIMENSIONS, ge=1)
    database: str = "eliza"
    # The node that is read-write now: "primary" until a failover or switchover promotes a
    # replica ("replica-1", ...). Only the pooler and the outputs follow it; node configuration
    # is role-neutral.
    primary_node: str = "primary"
    image: ImageSettings = Field(default_factory=ImageSettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    vector: VectorSettings = Field(default_factory=VectorSettings)
    pooler: PoolerSettings = Field(default_factory=PoolerSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    replication: ReplicationSettings = Field(default_factory=ReplicationSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    ha: HaSettings = Field(default_factory=HaSettings)
    # Named Docker hosts and which part of the stack runs on which (infra/placement.py). None
    # declared: everything on the engine the CLI or the provider is configured with.
    hosts: dict[str, HostSettings] = Field(default_factory=dict)
    placement: dict[str, str] = Field(default_factory=dict)
    # The superuser's password, when the operator chooses it (`pulumi config set --secret
    # elizadb:superuserPassword`, or a plain value in the stack file); generated otherwise. The
    # same key means the same under `pulumi up` and `elizadb up`.
    superuser_password: SecretStr | None = None

    @field_validator("superuser_password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value()
        if len(text) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"must be at least {MIN_PASSWORD_LENGTH} characters long")
        if any(not ch.isprintable() or ch.isspace() for ch in text):
            raise ValueError("must not contain spaces or control characters")
        return value

    # `schema` is a pydantic BaseModel attribute, hence the field name.
    schema_settings: SchemaSettings = Field(default_factory=SchemaSettings, alias="schema")

    @field_validator("embedding_dimensions")
    @classmethod
    def _embedding_dimensions(cls, value: int) -> int:
        if value > MAX_EMBEDDING_DIMENSIONS:
            raise ValueError(
                f"at most {MAX_EMBEDDING_DIMENSIONS}: the memories' embeddings are indexed with "
                f"HNSW, which accepts at most {MAX_EMBEDDING_DIMENSIONS} dimensions for pgvector's "
                "vector type (the bootstrap job would refuse it)"
            )
        return value

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        if not _IDENT.match(value):
            raise ValueError("must be a lower-case identifier (letters, digits, _)")
        if len(value) > MAX_DATABASE_NAME:
            raise ValueError(
                f"must be at most {MAX_DATABASE_NAME} characters: PgBouncer names its "
                f"session-mode pool {value}_session, and its names end at 63"
            )
        return value

    # Derived values: one place names every container, volume and file.
    @property
    def prefix(self) -> str:
        return f"{NAME_PREFIX}-{self.stack}"

    @property
    def profile(self) -> SchemaProfile:
        return self.schema_settings.profile

    @property
    def vector_operators(self) -> tuple[VectorOperator, ...]:
        """The operators whose HNSW indexes the bootstrap job keeps on memories.embedding, in
        a fixed order. None on eliza-1 stacks: @elizaos/plugin-sql's tables are its own, and it
        ranks by 1 - (dimN <=> q), which no HNSW index can serve."""
        if self.profile != "eliza-0.1":
            return ()
        return tuple(op for op in VECTOR_OPERATORS if op in self.vector.operators)

    @property
    def server_roles(self) -> tuple[Role, ...]:
        return tuple(server_role(s) for s in self.schema_settings.servers)

    @property
    def synchronous(self) -> bool:
        if self.replication.synchronous is None:
            return self.environment is Environment.PRODUCTION and self.replicas > 0
        return self.replication.synchronous

    @property
    def patroni(self) -> bool:
        return self.ha.engine == "patroni"

    @property
    def etcd_member_count(self) -> int:
        if self.ha.etcd_members is not None:
            return self.ha.etcd_members
        return 3 if self.environment is Environment.PRODUCTION else 1

    @property
    def host_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.hosts)) or (LOCAL_HOST,)

    def host(self, name: str) -> HostSettings:
        return self.hosts.get(name) or HostSettings()

    @property
    def placed(self) -> dict[str, str]:
        """The host of every part of the stack (infra/placement.py)."""
        members = self.etcd_member_count if self.patroni else 0
        return resolve(self.host_names, self.placement, self.replicas, members)

    @property
    def multi_host(self) -> bool:
        return len(set(self.placed.values())) > 1

    @property
    def advertise_host(self) -> str:
        """The address clients on the Docker host use to reach published ports."""
        bind = self.network.bind_address
        return "127.0.0.1" if ipaddress.ip_address(bind).is_unspecified else bind

    @property
    def root_cert_path(self) -> str:
        return self.tls.root_cert_path or f"{self.prefix}-ca.crt"

    def pg_parameters(self) -> dict[str, str]:
        """Defaults and the parameters sized from the resources, overlaid with the user's, as
        strings, sorted by name."""
        resources = Resources(size_mb(self.resources.memory), self.resources.cpus)
        return merged_parameters(resources, self.postgres.parameters)


def size_mb(text: str) -> int:
    """Megabytes in a size like 512m or 2g (validated by _SIZE first)."""
    match = _SIZE.match(text.lower())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    number, unit = int(match.group(1)), match.group(2)
    return {"k": max(1, number // 1024), "m": number, "g": number * 1024}[unit]


def merged_parameters(
    resources: Resources, user: Mapping[str, str | float | bool]
) -> dict[str, str]:
    """What every node runs with: the user's parameters win over the derived ones, which win
    over the defaults."""
    user_text = {k: _pg_value(v) for k, v in user.items()}
    connections = user_text.get("max_connections", DEFAULT_PG_PARAMETERS["max_connections"])
    try:
        max_connections = int(connections)
    except ValueError:
        max_connections = int(DEFAULT_PG_PARAMETERS["max_connections"])  # refused elsewhere
    merged = {**DEFAULT_PG_PARAMETERS, **derived_parameters(resources, max_connections)}
    merged.update(user_text)
    return dict(sorted(merged.items()))


def _pg_value(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def config_from_yaml_document(document: Any, source: str) -> dict[str, Any]:
    """The project's keys from a parsed `Pulumi.<stack>.yaml`, without the `elizadb:` prefix.

    Keys of other namespaces (`docker:host`) belong to providers and are left to them.
    """
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(source, ["the file must be a mapping with a `config:` key"])
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(source, [f"config: {config!r} — must be a mapping of keys to values"])
    return {
        key.split(":", 1)[1]: value
        for key, value in config.items()
        if isinstance(key, str) and key.startswith(f"{PROJECT}:")
    }


def config_from_pulumi_runtime(raw: Mapping[str, str]) -> dict[str, Any]:
    """The project's keys from Pulumi's runtime config (`project:key` → string, objects as JSON)."""
    values: dict[str, Any] = {}
    for key, text in raw.items():
        if not key.startswith(f"{PROJECT}:"):
            continue
        try:
            values[key.split(":", 1)[1]] = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            values[key.split(":", 1)[1]] = text
    return values


# Keys whose values are secrets: never echoed in an error message.
SECRET_KEYS: frozenset[str] = frozenset({"superuserPassword"})


def load_settings(stack: str, values: Mapping[str, Any], source: str) -> StackSettings:
    """Validate `values` (project keys, camelCase, without prefix) into settings, or raise
    ConfigError listing every problem."""
    problems: list[str] = []
    settings: StackSettings | None = None
    try:
        settings = StackSettings.model_validate({"stack": stack, **values})
    except ValidationError as exc:
        problems.extend(_describe(err) for err in exc.errors())
    problems.extend(_semantic_problems(stack, values))
    if problems or settings is None:
        raise ConfigError(source, problems)
    return settings


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = f"{PROJECT}:{loc[0]}" if loc else PROJECT
    for part in loc[1:]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _describe(err: Any) -> str:
    loc = tuple(err["loc"])
    path = _key_path(loc)
    value = "[secret]" if loc and loc[0] in SECRET_KEYS else err.get("input")
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key (value {value!r}); remove it or check its spelling"
    message = err["msg"].removeprefix("Value error, ")
    return f"{path} = {value!r}: {message}"


def _get(values: Mapping[str, Any], *path: str) -> Any:
    node: Any = values
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _raw(values: Mapping[str, Any], *path: str) -> Any:
    """The value at `path` (camelCase keys) as given, or the model's default when it is not:
    the cross-key rules below run on raw values (so that they are reported together with the
    per-field problems) without restating any default."""
    given = _get(values, *path)
    if given is not None:
        return given
    model: type[BaseModel] = StackSettings
    default: Any = None
    for key in path:
        field = next((f for name, f in model.model_fields.items() if key in (name, f.alias)), None)
        if field is None:
            return None
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            model = type(default)
    return default.value if isinstance(default, Enum) else default


def _raw_operators(values: Mapping[str, Any]) -> tuple[str, ...]:
    """The operators whose indexes will exist, from the raw values (invalid ones are reported
    per field and left out here); none on eliza-1 stacks, whose tables the kit does not index."""
    if _raw(values, "schema", "profile") != "eliza-0.1":
        return ()
    listed = _raw(values, "vector", "operators")
    if not isinstance(listed, list):
        return ()
    return tuple(op for op in VECTOR_OPERATORS if op in listed)


def _fit_problems(values: Mapping[str, Any], parameters: Any) -> list[str]:
    """Whether the parameters, and the vector indexes of the expected memories, fit the node's
    memory. Skipped when the sizes themselves are invalid (reported per field)."""
    memory = _raw(values, "resources", "memory")
    shm = _raw(values, "resources", "shmSize")
    cpus = _raw(values, "resources", "cpus")
    rows = _raw(values, "vector", "expectedMemories") or 0
    dims = _raw(values, "embeddingDimensions")
    if not (
        isinstance(memory, str)
        and _SIZE.match(memory.lower())
        and isinstance(shm, str)
        and _SIZE.match(shm.lower())
        and isinstance(cpus, int | float)
        and cpus >= 1
        and isinstance(rows, int)
        and isinstance(dims, int)
        and (parameters is None or isinstance(parameters, Mapping))
    ):
        return []
    container_mb = size_mb(memory)
    merged = merged_parameters(Resources(container_mb, cpus), parameters or {})
    problems: list[str] = []
    fit = memory_problem(merged, container_mb)
    if fit:
        problems.append(f"{PROJECT}:postgres.parameters: {fit}")
    need = VectorNeed(rows=rows, dimensions=dims, operators=_raw_operators(values))
    for key, why in fit_problems(need, merged, container_mb, size_mb(shm)):
        value = rows if key == "vector.expectedMemories" else shm
        problems.append(f"{PROJECT}:{key} = {value!r}: {why}")
    return problems


def _semantic_problems(stack: str, values: Mapping[str, Any]) -> list[str]:
    """Rules that span keys, checked on the raw values so that they are reported together with
    the per-field problems."""
    problems: list[str] = []
    if not re.match(r"^[a-z][a-z0-9-]{0,30}$", stack):
        problems.append(
            f"stack name {stack!r}: must be lower-case letters, digits and '-', starting with a "
            "letter (it is part of every container name)"
        )
    environment = _raw(values, "environment")
    if environment == Environment.PRODUCTION.value and _get(values, "tls", "enabled") is False:
        problems.append(
            f"{PROJECT}:tls.enabled = False: TLS cannot be turned off for a stack whose "
            f"{PROJECT}:environment is production; remove the key"
        )
    if _raw(values, "ha", "engine") == "patroni" and _raw(values, "tls", "enabled") is False:
        problems.append(
            f"{PROJECT}:tls.enabled = False: a Patroni stack (elizadb:ha.engine patroni) speaks "
            "TLS between every node, etcd member and the router; remove the key"
        )
    parameters = _get(values, "postgres", "parameters")
    if isinstance(parameters, Mapping):
        for name in sorted(parameters):
            path = f"{PROJECT}:postgres.parameters.{name}"
            if name in FORCED_PG_PARAMETERS:
                problems.append(
                    f"{path} = {parameters[name]!r}: this parameter is set by eliza-db itself "
                    "(TLS, replication or file layout depend on it) and cannot be overridden; "
                    "remove it"
                )
            elif not _PG_PARAM_NAME.match(str(name)):
                problems.append(f"{path}: {name!r} is not a PostgreSQL parameter name")
        checkable = {
            k: v
            for k, v in parameters.items()
            if k not in FORCED_PG_PARAMETERS and _PG_PARAM_NAME.match(str(k))
        }
        for name, problem in sorted(parameter_problems(checkable).items()):
            problems.append(
                f"{PROJECT}:postgres.parameters.{name} = {parameters[name]!r}: {problem}; "
                "fix or remove it (the image's PostgreSQL would refuse to start with it)"
            )
    problems.extend(_fit_problems(values, parameters))
    ports = {
        "network.primaryPort": _raw(values, "network", "primaryPort"),
        "network.poolerPort": _raw(values, "network", "poolerPort"),
    }
    replicas = _raw(values, "replicas")
    base = _raw(values, "network", "replicaPortBase")
    if isinstance(replicas, int) and isinstance(base, int) and replicas > 0:
        for i in range(replicas):
            ports[f"network.replicaPortBase+{i}"] = base + i
        if base + replicas - 1 > 65535:
            problems.append(
                f"{PROJECT}:network.replicaPortBase = {base}: with {replicas} replicas the last "
                "port would exceed 65535; choose a lower base"
            )
    # A Patroni stack publishes each node's REST API too (verify reads it).
    api_base = _raw(values, "network", "patroniApiPortBase")
    if _raw(values, "ha", "engine") == "patroni" and isinstance(api_base, int):
        for i in range((replicas if isinstance(replicas, int) else 0) + 1):
            ports[f"network.patroniApiPortBase+{i}"] = api_base + i
    seen: dict[Any, str] = {}
    for key, port in ports.items():
        if port in seen:
            problems.append(
                f"{PROJECT}:{key} = {port}: the same host port as {PROJECT}:{seen[port]}; "
                "every published port must differ"
            )
        seen.setdefault(port, key)
    primary_node = _raw(values, "primaryNode")
    if isinstance(replicas, int) and isinstance(primary_node, str):
        allowed = ["primary", *(f"replica-{i}" for i in range(1, replicas + 1))]
        if primary_node not in allowed:
            problems.append(
                f"{PROJECT}:primaryNode = {primary_node!r}: must name a node of the stack "
                f"({', '.join(allowed)})"
            )
    full_every, incr_every = (
        _raw(values, "backup", "fullEvery"),
        _raw(values, "backup", "incrEvery"),
    )
    if (
        isinstance(full_every, str)
        and isinstance(incr_every, str)
        and _DURATION.match(full_every)
        and _DURATION.match(incr_every)
        and duration_seconds(incr_every) >= duration_seconds(full_every)
    ):
        problems.append(
            f"{PROJECT}:backup.incrEvery = {incr_every!r}: must be shorter than "
            f"{PROJECT}:backup.fullEvery ({full_every!r}), or no incremental backup would ever run"
        )
    servers = _get(values, "schema", "servers")
    if servers and _raw(values, "schema", "profile") != "eliza-1":
        problems.append(
            f"{PROJECT}:schema.servers = {servers!r}: data isolation roles are for ElizaOS 1.x; "
            f"set {PROJECT}:schema.profile to eliza-1 or remove the key"
        )
    operators = _get(values, "vector", "operators")
    if operators is not None and _raw(values, "schema", "profile") == "eliza-1":
        problems.append(
            f"{PROJECT}:vector.operators = {operators!r}: eliza-1 stacks build no vector index "
            "(@elizaos/plugin-sql ranks by 1 - (dimN <=> q), an expression no HNSW index can "
            f"serve, on tables it creates itself); remove the key or set {PROJECT}:schema.profile "
            "to eliza-0.1"
        )
    problems.extend(_host_problems(values))
    sync = _get(values, "replication", "synchronous")
    if sync is True and isinstance(replicas, int):
        count = _raw(values, "replication", "synchronousCount")
        if isinstance(count, int) and count > replicas:
            problems.append(
                f"{PROJECT}:replication.synchronousCount = {count}: more synchronous standbys "
                f"than {PROJECT}:replicas ({replicas}); commits would never be acknowledged"
            )
    return problems


def _host_problems(values: Mapping[str, Any]) -> list[str]:
    """elizadb:hosts and elizadb:placement: every part on a declared host; several hosts only
    under Patroni, each reachable at its address; a production spread that survives a host."""
    hosts = _get(values, "hosts")
    placement = _get(values, "placement")
    if not isinstance(hosts, Mapping) or not isinstance(placement, Mapping | None):
        return []
    placement = placement or {}
    problems: list[str] = []
    for name in sorted(hosts):
        if not _HOST_NAME.match(str(name)):
            problems.append(
                f"{PROJECT}:hosts.{name}: the name must be lower-case letters, digits and '-', "
                "starting with a letter"
            )
        host = hosts[name]
        if isinstance(host, Mapping):
            url = host.get("url")
            cert_path = host.get("certPath")
            if isinstance(url, str) and url.startswith("tcp://") and not cert_path:
                problems.append(
                    f"{PROJECT}:hosts.{name}.url = {url!r}: a Docker API over TCP without client "
                    "certificates gives root on that host to whoever reaches the port; set "
                    f"{PROJECT}:hosts.{name}.certPath to a folder with ca.pem, cert.pem and key.pem"
                )
            if cert_path and not (isinstance(url, str) and url.startswith("tcp://")):
                problems.append(
                    f"{PROJECT}:hosts.{name}.certPath = {cert_path!r}: client certificates are "
                    "for a tcp:// url; remove the key or use tcp://host:port"
                )
    replicas = _raw(values, "replicas")
    patroni = _raw(values, "ha", "engine") == "patroni"
    members = _raw(values, "ha", "etcdMembers")
    production = _raw(values, "environment") == Environment.PRODUCTION.value
    if members is None and patroni:
        members = 3 if production else 1
    if not isinstance(replicas, int) or not isinstance(members, int | None):
        return problems
    members = members if patroni else 0
    allowed = parts(replicas, members or 0)
    for part in sorted(placement):
        where = placement[part]
        if part not in allowed:
            problems.append(
                f"{PROJECT}:placement.{part} = {where!r}: this stack has no such part; parts are "
                f"{', '.join(allowed)}"
            )
        elif where not in hosts:
            declared = ", ".join(sorted(hosts)) or "none"
            problems.append(
                f"{PROJECT}:placement.{part} = {where!r}: not a host of {PROJECT}:hosts "
                f"(declared: {declared}); declare it or name a declared host"
            )
    if problems:
        return problems
    where = resolve(sorted(hosts), placement, replicas, members or 0)
    used = sorted(set(where.values()))
    if len(used) < 2:
        return problems
    if not patroni:
        problems.append(
            f"{PROJECT}:hosts: the stack spans {len(used)} hosts ({', '.join(used)}) but "
            f"{PROJECT}:ha.engine is builtin, whose failover is decided from one machine and "
            "cannot tell a lost host from a partitioned one; set elizadb:ha.engine to patroni"
        )
    for name in used:
        host = hosts[name]
        address = host.get("address") if isinstance(host, Mapping) else None
        if address is None:
            problems.append(
                f"{PROJECT}:hosts.{name}.address: missing; a stack on several hosts needs the "
                "address at which the other hosts reach each one"
            )
        elif isinstance(address, str) and (why := reachable_address_problem(address)):
            problems.append(f"{PROJECT}:hosts.{name}.address = {address!r}: {why}")
    problems.extend(_published_port_problems(values, where, replicas, members or 0))
    if production:
        problems.extend(
            f"{PROJECT}:placement: {p}" for p in spread_problems(where, replicas, members or 0)
        )
    return problems


def _published_port_problems(
    values: Mapping[str, Any], where: Mapping[str, str], replicas: int, members: int
) -> list[str]:
    """On several hosts each host publishes the ports of the parts it runs, the Patroni REST
    API's, etcd's and pgBackRest's included: two of them on one host must differ."""
    net = {
        key: _raw(values, "network", key)
        for key in (
            "primaryPort",
            "replicaPortBase",
            "poolerPort",
            "patroniApiPortBase",
            "etcdClientPortBase",
            "etcdPeerPortBase",
            "backupPortBase",
        )
    }
    if not all(isinstance(v, int) for v in net.values()):
        return []
    ports: list[tuple[str, str, int]] = []  # host, what, port
    for i in range(replicas + 1):
        part = node_part(i)
        pg = net["primaryPort"] if i == 0 else net["replicaPortBase"] + i - 1
        ports += [
            (where[part], f"{part}'s PostgreSQL", pg),
            (where[part], f"{part}'s Patroni REST API", net["patroniApiPortBase"] + i),
            (where[part], f"{part}'s pgBackRest server", net["backupPortBase"] + 1 + i),
        ]
    for i in range(1, members + 1):
        part = etcd_part(i)
        ports += [
            (where[part], f"{part}'s client port", net["etcdClientPortBase"] + i - 1),
            (where[part], f"{part}'s peer port", net["etcdPeerPortBase"] + i - 1),
        ]
    ports.append((where[POOLER], "the pooler", net["poolerPort"]))
    ports.append((where[POOLER], "the backup repository", net["backupPortBase"]))
    problems: list[str] = []
    seen: dict[tuple[str, int], str] = {}
    for host, what, port in ports:
        if (host, port) in seen:
            problems.append(
                f"{PROJECT}:network: {what} and {seen[host, port]} would both publish port "
                f"{port} on host {host!r}; change elizadb:network's port bases"
            )
        seen.setdefault((host, port), what)
    return problems
