"""etcd member configuration: the distributed store Patroni elects its leader in.

One member for a single-host dev stack, three (or five) where hosts may be lost: etcd keeps
working while a majority of members answers, so three members survive the loss of one. Peers and
clients speak TLS only, verified against the stack CA, and etcd asks every client and peer for a
certificate signed by that CA (client-cert-auth): a process without one is refused at the
handshake. The rendered file holds paths, never keys, so it is an ordinary (0644) upload.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import yaml

from infra.errors import ConfigError
from infra.render import HEADER, paths

# Inside the etcd container (image/entrypoint.sh, mode etcd).
ETCD_CONF = f"{paths.ETC}/etcd.yml"
ETCD_DATA_DIR = "/var/lib/etcd/data"  # the member's volume is mounted at /var/lib/etcd
ETCD_PRIVATE_KEY = "/var/lib/etcd-private/server.key"  # copied there, mode 0600, owner etcd

CLIENT_PORT = 2379
PEER_PORT = 2380
MEMBER_COUNTS = (1, 3, 5)

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class _Named(Protocol):
    @property
    def name(self) -> str: ...


M = TypeVar("M", bound=_Named)


def find_member(members: Sequence[M], name: str, source: str) -> M:
    """The member called `name`, or a ConfigError that lists the known ones."""
    for member in members:
        if member.name == name:
            return member
    known = ", ".join(m.name for m in members)
    raise ConfigError(source, [f"member: {name!r} is not one of {known}"])


@dataclass(frozen=True)
class EtcdMember:
    """`name` is the member's name in the cluster; `host` is the DNS name (or address) peers and
    clients reach it by, and must be among the SANs of the certificate it serves; the ports are
    where they reach it there (the ports published on its Docker host, when the stack spans
    several hosts). The member itself always listens on CLIENT_PORT and PEER_PORT."""

    name: str
    host: str
    client_port: int = CLIENT_PORT
    peer_port: int = PEER_PORT


@dataclass(frozen=True)
class EtcdCluster:
    """Everything the members of one stack's etcd cluster share.

    Timings: a follower calls an election after `election_timeout_ms` without a heartbeat from
    the leader, so a lost etcd leader costs about that long plus one round of voting. Patroni's
    leader lease is renewed by the new etcd leader at its full TTL, so keep this well below
    Patroni's ttl. etcd wants the election timeout at least five heartbeats; ten is its advice.
    """

    members: tuple[EtcdMember, ...]
    token: str  # initial-cluster-token: unique per stack, so two stacks' members never merge
    listen_host: str = "0.0.0.0"  # inside the member's own network namespace
    heartbeat_ms: int = 100
    election_timeout_ms: int = 1000
    # Patroni keeps a few keys per member; history compaction keeps the store small.
    quota_backend_bytes: int = 2 * 1024**3
    auto_compaction_retention_hours: int = 1

    def __post_init__(self) -> None:
        problems = etcd_problems(self)
        if problems:
            raise ConfigError("etcd renderer inputs", problems)

    def member(self, name: str) -> EtcdMember:
        return find_member(self.members, name, "etcd renderer inputs")


def etcd_problems(cluster: EtcdCluster) -> list[str]:
    """Every problem with the inputs at once, each naming the field, the value and what is
    allowed."""
    problems: list[str] = []
    if len(cluster.members) not in MEMBER_COUNTS:
        problems.append(
            f"members: {len(cluster.members)} given; etcd needs an odd majority: "
            f"one of {', '.join(map(str, MEMBER_COUNTS))} members"
        )
    names = [m.name for m in cluster.members]
    for i, member in enumerate(cluster.members):
        if not _NAME.match(member.name):
            problems.append(
                f"members.{i}.name: {member.name!r} is not lower-case letters, digits and '-' "
                "(at most 63)"
            )
        if not member.host or any(c in member.host for c in " ,=/"):
            problems.append(f"members.{i}.host: {member.host!r} is not a host name or address")
        for key in ("client_port", "peer_port"):
            port = getattr(member, key)
            if not 1 <= port <= 65535:
                problems.append(f"members.{i}.{key}: {port} is outside 1..65535")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"members: names must be unique; repeated: {', '.join(duplicates)}")
    if not _TOKEN.match(cluster.token):
        problems.append(f"token: {cluster.token!r} is not 1-128 letters, digits, '.', '_' or '-'")
    if not 10 <= cluster.heartbeat_ms <= 5000:
        problems.append(f"heartbeat_ms: {cluster.heartbeat_ms} is outside 10..5000")
    if cluster.election_timeout_ms < 5 * cluster.heartbeat_ms:
        problems.append(
            f"election_timeout_ms: {cluster.election_timeout_ms} is below five heartbeats "
            f"({5 * cluster.heartbeat_ms} ms); etcd refuses that"
        )
    if cluster.election_timeout_ms > 50000:
        problems.append(f"election_timeout_ms: {cluster.election_timeout_ms} is above 50000")
    if cluster.quota_backend_bytes < 64 * 1024**2:
        problems.append(f"quota_backend_bytes: {cluster.quota_backend_bytes} is below 64 MiB")
    if cluster.auto_compaction_retention_hours < 1:
        problems.append(
            f"auto_compaction_retention_hours: {cluster.auto_compaction_retention_hours} is below 1"
        )
    return problems


def client_url(member: EtcdMember) -> str:
    return f"https://{member.host}:{member.client_port}"


def peer_url(member: EtcdMember) -> str:
    return f"https://{member.host}:{member.peer_port}"


def client_hosts(cluster: EtcdCluster) -> tuple[str, ...]:
    """host:port of every member, in declaration order: what Patroni's etcd3 section lists."""
    return tuple(f"{m.host}:{m.client_port}" for m in cluster.members)


def _transport_security() -> dict[str, object]:
    return {
        "cert-file": paths.SERVER_CERT,
        "key-file": ETCD_PRIVATE_KEY,
        "trusted-ca-file": paths.CA_CERT,
        # A client (or peer) must present a certificate signed by the stack CA.
        "client-cert-auth": True,
        "auto-tls": False,
    }


def render_etcd_conf(cluster: EtcdCluster, name: str) -> str:
    """etcd's --config-file for member `name`. `initial-*` keys are read only when the data
    directory is empty; a member that restarts keeps what its data says."""
    member = cluster.member(name)
    config: dict[str, object] = {
        "name": member.name,
        "data-dir": ETCD_DATA_DIR,
        "listen-client-urls": f"https://{cluster.listen_host}:{CLIENT_PORT}",
        "listen-peer-urls": f"https://{cluster.listen_host}:{PEER_PORT}",
        "advertise-client-urls": client_url(member),
        "initial-advertise-peer-urls": peer_url(member),
        "initial-cluster": ",".join(f"{m.name}={peer_url(m)}" for m in cluster.members),
        "initial-cluster-state": "new",
        "initial-cluster-token": cluster.token,
        "heartbeat-interval": cluster.heartbeat_ms,
        "election-timeout": cluster.election_timeout_ms,
        "client-transport-security": _transport_security(),
        "peer-transport-security": _transport_security(),
        "tls-min-version": "TLS1.2",
        # Patroni speaks the v3 API only; the v2 API (no TLS client auth of its own) stays off.
        "enable-v2": False,
        "quota-backend-bytes": cluster.quota_backend_bytes,
        "auto-compaction-mode": "periodic",
        "auto-compaction-retention": f"{cluster.auto_compaction_retention_hours}h",
        # A membership change that would lose quorum is refused.
        "strict-reconfig-check": True,
        "logger": "zap",
        "log-level": "info",
    }
    body = yaml.safe_dump(config, sort_keys=True, default_flow_style=False)
    return f"# {HEADER}\n# etcd member: {member.name}\n{body}"
