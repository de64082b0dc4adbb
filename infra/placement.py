"""Which Docker host each part of a stack runs on (elizadb:hosts and elizadb:placement).

Pure and independent of the settings model, so that validation (on raw values, to report every
problem at once) and the topology resolve a placement with the same function.

The parts are the PostgreSQL nodes ("primary", "replica-1", ...), the etcd members of a Patroni
stack ("etcd-1", ...) and "pooler", which stands for PgBouncer and what runs beside it: the
router of a Patroni stack, the bootstrap and readiness jobs and the backup agent. A part the
placement does not name goes round-robin over the hosts in name order (nodes from the first
host, etcd members from the first host), and the pooler to the first host.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Mapping, Sequence

# The host of a stack that declares none: the engine the CLI or the Pulumi provider is
# configured with (DOCKER_HOST, or the local socket), exactly as before hosts existed.
LOCAL_HOST = "local"
POOLER = "pooler"


def node_part(index: int) -> str:
    return "primary" if index == 0 else f"replica-{index}"


def etcd_part(index: int) -> str:
    return f"etcd-{index}"


def parts(replicas: int, etcd_members: int) -> tuple[str, ...]:
    """Every part a stack with this many replicas and etcd members has, in a fixed order."""
    return (
        *(node_part(i) for i in range(replicas + 1)),
        *(etcd_part(i) for i in range(1, etcd_members + 1)),
        POOLER,
    )


def resolve(
    hosts: Sequence[str], placement: Mapping[str, str], replicas: int, etcd_members: int
) -> dict[str, str]:
    """The host of every part: the placement's where it names one, round-robin otherwise."""
    names = sorted(hosts) or [LOCAL_HOST]
    where = {node_part(i): names[i % len(names)] for i in range(replicas + 1)}
    where.update({etcd_part(i): names[(i - 1) % len(names)] for i in range(1, etcd_members + 1)})
    where[POOLER] = names[0]
    where.update({k: v for k, v in placement.items() if k in where})
    return where


def spread_problems(where: Mapping[str, str], replicas: int, etcd_members: int) -> list[str]:
    """What a production stack on several hosts must not do: lose its quorum or two PostgreSQL
    nodes with one host while another host is free of them."""
    used = sorted(set(where.values()))
    if len(used) < 2:
        return []
    problems: list[str] = []
    members = [etcd_part(i) for i in range(1, etcd_members + 1)]
    per_host = Counter(where[m] for m in members)
    majority = etcd_members // 2 + 1
    for host, count in sorted(per_host.items()):
        if etcd_members > 1 and count >= majority:
            problems.append(
                f"host {host!r} holds {count} of the {etcd_members} etcd members, a majority: "
                "losing that one host stops every failover (etcd needs a majority to elect a "
                f"leader); place etcd members on {etcd_members} different hosts"
            )
    nodes = [node_part(i) for i in range(replicas + 1)]
    node_hosts = Counter(where[n] for n in nodes)
    free = [h for h in used if h not in node_hosts]
    crowded = sorted(h for h, c in node_hosts.items() if c > 1)
    if crowded and free:
        problems.append(
            f"host {crowded[0]!r} runs {node_hosts[crowded[0]]} PostgreSQL nodes while host "
            f"{free[0]!r} runs none: losing {crowded[0]!r} would take a primary and its standby "
            "at once; place the nodes on different hosts"
        )
    return problems


def reachable_address_problem(address: str) -> str | None:
    """Why peers on other hosts could not use `address`, or None."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "must be an IP address (peers on the other hosts reach this host's ports at it)"
    if ip.is_loopback or ip.is_unspecified:
        return (
            "must be an address the other hosts can reach, not a loopback or unspecified one "
            "(the nodes on other hosts connect to it)"
        )
    return None
