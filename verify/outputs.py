"""The stack outputs the suite takes every target from.

The shape is what `elizadb outputs --json --show-secrets` and `pulumi stack output --json
--show-secrets` print (see infra/program.py `stack_outputs`). `load_outputs` checks it once and
names every missing, masked or malformed key; everything downstream trusts `Outputs`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg.conninfo

from infra.settings import MAX_EMBEDDING_DIMENSIONS, VECTOR_OPERATORS
from verify.errors import OutputsError

MASK = "[secret]"
PROFILES = ("eliza-0.1", "eliza-1")


@dataclass(frozen=True)
class Endpoint:
    label: str  # "primary", "replica-1", "pooler": how results name it
    name: str  # container / network host name, also a certificate SAN
    host: str  # where clients reach it
    port: int

    def __str__(self) -> str:
        return f"{self.label} ({self.host}:{self.port})"


@dataclass(frozen=True)
class PatroniMember:
    """Where verify reads one member's Patroni REST API (GET only, TLS with the stack CA)."""

    name: str  # Patroni's member name, as GET /cluster reports it
    node: str  # the node's container name: the `name` of its endpoint in primary / replicas
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.name} ({self.host}:{self.port})"


@dataclass(frozen=True)
class PatroniDeclared:
    """A Patroni stack's REST endpoints and what its dynamic configuration must hold."""

    members: tuple[PatroniMember, ...]
    synchronous: bool
    synchronous_count: int
    ttl: int  # the leader lease, seconds
    parameters: Mapping[str, str]  # postgresql.parameters of the dynamic configuration


@dataclass(frozen=True)
class Connections:
    superuser: str
    owner: str
    agent_primary: str
    agent_pooler: str
    user_pooler: str
    pooler_admin: str
    readonly_replicas: tuple[str, ...]


@dataclass(frozen=True)
class Outputs:
    stack: str
    environment: str
    database: str
    embedding_dimensions: int
    tls: bool
    ca_cert: str
    primary: Endpoint
    replicas: tuple[Endpoint, ...]
    pooler: Endpoint
    connections: Connections
    backup_volume: str
    # Where the nodes mount the backup repository; outputs of stacks deployed before this key
    # existed used the image's one path. "" when the repository is on a remote pgBackRest host:
    # nothing is mounted, and the checks of the mount do not apply (Check.needs_backup_mount).
    backup_mount: str = "/var/lib/pgbackrest"
    # elizadb:schema.profile; outputs of stacks deployed before it existed are eliza-0.1.
    schema_profile: str = "eliza-0.1"
    # elizadb:ha.engine: under patroni the primary is whichever node leads now (verify/leader.py).
    ha_engine: str = "builtin"
    # The distance operators whose HNSW indexes the stack keeps (elizadb:vector.operators);
    # stacks deployed before the key existed built both.
    vector_operators: tuple[str, ...] = VECTOR_OPERATORS
    # Patroni stacks: their members' REST APIs and declared configuration. None for outputs of
    # a Patroni stack deployed before eliza-db published the REST API (the ha checks say so).
    patroni: PatroniDeclared | None = None

    @property
    def nodes(self) -> tuple[Endpoint, ...]:
        """The PostgreSQL servers: the primary, then the replicas."""
        return (self.primary, *self.replicas)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Everything a client connects to: the servers and the pooler."""
        return (*self.nodes, self.pooler)


_CONNECTION_KEYS = {
    "superuser": "superuser",
    "owner": "owner",
    "agentPrimary": "agent_primary",
    "agentPooler": "agent_pooler",
    "userPooler": "user_pooler",
    "poolerAdmin": "pooler_admin",
}


class _Reader:
    """Reads typed values from the raw JSON and records a problem for each bad one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(self, node: Any, key: str, kind: type, where: str = "") -> Any:
        """node[key] checked to be of `kind`; `where` is the path of node, for messages."""
        path = f"{where}.{key}" if where else key
        if not isinstance(node, Mapping) or key not in node:
            self.problems.append(f"{path}: missing")
            return None
        return self.check(node[key], path, kind)

    def check(self, value: Any, path: str, kind: type) -> Any:
        if value == MASK:
            self.problems.append(
                f"{path}: masked as {MASK!r}; export the outputs with --show-secrets"
            )
            return None
        # bool is an int in Python; a port or a dimension must not be true/false.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problems.append(
                f"{path}: expected {kind.__name__}, got {type(value).__name__} {value!r}"
            )
            return None
        return value

    def uri(self, node: Any, key: str, where: str) -> str:
        return self._conninfo(self.get(node, key, str, where), f"{where}.{key}")

    def uri_value(self, value: Any, path: str) -> str:
        return self._conninfo(self.check(value, path, str), path)

    def _conninfo(self, text: str | None, path: str) -> str:
        if text is None:
            return ""  # the problem is recorded already
        try:
            psycopg.conninfo.conninfo_to_dict(text)
        except psycopg.ProgrammingError as err:
            self.problems.append(f"{path}: not a libpq connection string ({err})")
            return ""
        return text

    def endpoint(self, node: Any, key: str | int, where: str, label: str) -> Endpoint:
        if isinstance(key, int):
            path, raw = f"{where}[{key}]", node[key]
        else:
            path, raw = key, node.get(key) if isinstance(node, Mapping) else None
        if not isinstance(raw, Mapping):
            self.problems.append(f"{path}: missing, or not an object with name, host and port")
            return Endpoint(label, "", "", 0)
        name = self.get(raw, "name", str, path)
        host = self.get(raw, "host", str, path)
        port = self.get(raw, "port", int, path)
        return Endpoint(label, name or "", host or "", port or 0)

    def patroni(self, raw: Any) -> PatroniDeclared | None:
        """The `patroni` key: members (name, node, host, port), synchronous, synchronousCount,
        ttl and parameters (name -> text)."""
        before = len(self.problems)
        members_raw = self.get(raw, "members", list, "patroni") or []
        members = []
        for i, item in enumerate(members_raw):
            path = f"patroni.members[{i}]"
            if not isinstance(item, Mapping):
                self.problems.append(f"{path}: expected an object with name, node, host and port")
                continue
            name, node, host = (self.get(item, key, str, path) for key in ("name", "node", "host"))
            port = self.get(item, "port", int, path)
            if port is not None and not 1 <= port <= 65535:
                self.problems.append(f"{path}.port: {port} is outside 1..65535")
            members.append(PatroniMember(name or "", node or "", host or "", port or 0))
        if not members_raw:
            self.problems.append("patroni.members: a Patroni stack has at least one member")
        synchronous = self.get(raw, "synchronous", bool, "patroni")
        count = self.get(raw, "synchronousCount", int, "patroni")
        ttl = self.get(raw, "ttl", int, "patroni")
        parameters = self.get(raw, "parameters", dict, "patroni") or {}
        for name, value in parameters.items():
            self.check(value, f"patroni.parameters.{name}", str)
        if len(self.problems) > before:
            return None
        return PatroniDeclared(
            tuple(members), synchronous, count, ttl, {k: str(v) for k, v in parameters.items()}
        )


def load_outputs(path_or_dict: str | Path | Mapping[str, Any]) -> Outputs:
    """Validate stack outputs (a JSON file or the parsed dict) into `Outputs`.

    Raises OutputsError listing every missing, masked or malformed key.
    """
    if isinstance(path_or_dict, Mapping):
        raw: Any = path_or_dict
        source = "the outputs given"
    else:
        source = str(path_or_dict)
        try:
            raw = json.loads(Path(path_or_dict).read_text())
        except OSError as err:
            raise OutputsError(source, [f"cannot read the file: {err.strerror or err}"]) from None
        except json.JSONDecodeError as err:
            raise OutputsError(source, [f"not JSON: {err}"]) from None
    if not isinstance(raw, Mapping):
        raise OutputsError(source, ["the outputs must be a JSON object"])

    r = _Reader()
    stack = r.get(raw, "stack", str)
    database = r.get(raw, "database", str)
    dims = r.get(raw, "embeddingDimensions", int)
    if dims is not None and not 1 <= dims <= MAX_EMBEDDING_DIMENSIONS:
        r.problems.append(f"embeddingDimensions: {dims} is outside 1..{MAX_EMBEDDING_DIMENSIONS}")
    tls = r.get(raw, "tls", bool)
    ca_cert = ""
    if tls:
        ca_cert = r.get(raw, "caCert", str) or ""
        if ca_cert and "BEGIN CERTIFICATE" not in ca_cert:
            r.problems.append("caCert: not a PEM certificate")
    environment = raw.get("environment", "")
    profile = raw.get("schemaProfile", "eliza-0.1")
    if profile not in PROFILES:
        r.problems.append(f"schemaProfile: {profile!r} is not one of {', '.join(PROFILES)}")
    operators = raw.get("vectorOperators", list(VECTOR_OPERATORS))
    if not isinstance(operators, list) or any(op not in VECTOR_OPERATORS for op in operators):
        r.problems.append(
            f"vectorOperators: {operators!r} is not a list of {', '.join(VECTOR_OPERATORS)}"
        )
        operators = []
    backup_volume = raw.get("backupVolume", "")
    backup_mount = r.check(raw.get("backupMount", Outputs.backup_mount), "backupMount", str)

    primary = r.endpoint(raw, "primary", "", "primary")
    replicas_raw = r.get(raw, "replicas", list) or []
    replicas = tuple(
        r.endpoint(replicas_raw, i, "replicas", f"replica-{i + 1}")
        for i in range(len(replicas_raw))
    )
    pooler = r.endpoint(raw, "pooler", "", "pooler")

    conns = r.get(raw, "connections", dict)
    uris = dict.fromkeys(_CONNECTION_KEYS.values(), "")
    readonly: list[str] = []
    if conns is not None:
        uris = {attr: r.uri(conns, key, "connections") for key, attr in _CONNECTION_KEYS.items()}
        listed = r.get(conns, "readonlyReplicas", list, "connections")
        if listed is not None:
            readonly = [
                r.uri_value(u, f"connections.readonlyReplicas[{i}]") for i, u in enumerate(listed)
            ]
            if len(readonly) != len(replicas):
                r.problems.append(
                    f"connections.readonlyReplicas: {len(readonly)} connection strings for "
                    f"{len(replicas)} replicas"
                )

    ha_engine = str(raw.get("haEngine", "builtin"))
    patroni = None
    if ha_engine == "patroni" and "patroni" in raw:
        patroni = r.patroni(raw["patroni"])
        if tls is False:
            r.problems.append("tls: false, but a Patroni stack's REST API and peers speak TLS")

    if r.problems:
        raise OutputsError(source, r.problems)
    return Outputs(
        stack=stack,
        environment=str(environment),
        database=database,
        embedding_dimensions=dims,
        tls=tls,
        ca_cert=ca_cert,
        primary=primary,
        replicas=replicas,
        pooler=pooler,
        connections=Connections(readonly_replicas=tuple(readonly), **uris),
        backup_volume=str(backup_volume),
        backup_mount=str(backup_mount),
        schema_profile=str(profile),
        ha_engine=ha_engine,
        vector_operators=tuple(operators),
        patroni=patroni,
    )
