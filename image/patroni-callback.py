#!/usr/bin/python3
"""elizadb-patroni-callback NEARBY MEMBERS ACTION ROLE SCOPE — Patroni's on_start and
on_role_change callback on a stack spread over several hosts (infra/render/patroni.py).

NEARBY is host:port of the etcd member on this node's host, MEMBERS host:port of every etcd
member (comma-separated); Patroni appends ACTION, ROLE and SCOPE.

When this node has become Patroni's leader and the etcd member on its host leads etcd, the
etcd leadership is handed to a member on another host. Why: an etcd member that becomes leader
renews every lease at its full TTL (etcd's lessor does so on promotion), Patroni's leader key
included. Lose a host that holds both leaders and the replicas wait for the key to expire a
whole ttl after the new etcd leader was elected, a few seconds more than when only Patroni's
leader is lost. Nothing here decides a failover: the callback only moves etcd's own
leadership, which etcd hands over without a gap, and does nothing when it cannot.
"""

from __future__ import annotations

import json
import subprocess
import sys

CA = "/etc/elizadb/tls/ca.crt"
CERT = "/etc/elizadb/tls/server.crt"
KEY = "/var/lib/postgresql/private/server.key"
LEADER_ROLES = ("primary", "master")


def say(message: str) -> None:
    print(f"elizadb-patroni-callback: {message}", file=sys.stderr, flush=True)


def etcdctl(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "etcdctl",
            f"--endpoints=https://{endpoint}",
            f"--cacert={CA}",
            f"--cert={CERT}",
            f"--key={KEY}",
            "--dial-timeout=2s",
            "--command-timeout=5s",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def status(endpoint: str) -> tuple[int, int] | None:
    """(this member's ID, the leader's ID) as the member at `endpoint` reports them."""
    result = etcdctl(endpoint, "endpoint", "status", "-w", "json")
    if result.returncode != 0:
        return None
    try:
        found = json.loads(result.stdout)[0]["Status"]
        return int(found["header"]["member_id"]), int(found["leader"])
    except (ValueError, LookupError, TypeError):
        return None


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        say(f"usage: {__doc__.splitlines()[0]}")
        return 2
    nearby, members, action, role, _scope = argv
    if action not in ("on_start", "on_role_change") or role not in LEADER_ROLES:
        return 0
    answers = {ep: status(ep) for ep in members.split(",") if ep}
    mine = answers.get(nearby)
    if mine is None:
        say(f"the etcd member on this host ({nearby}) did not answer: nothing moved")
        return 0
    member_id, leader_id = mine
    if member_id != leader_id:
        return 0
    others = [a[0] for ep, a in sorted(answers.items()) if ep != nearby and a is not None]
    if not others:
        say("no other etcd member answered: the etcd leadership stays on this host")
        return 0
    # move-leader is asked of the current leader, which hands over once the target has caught up.
    result = etcdctl(nearby, "move-leader", format(others[0], "x"))
    if result.returncode != 0:
        say(f"move-leader failed: {(result.stderr or result.stdout).strip()}")
        return 0
    say(
        f"this node leads the cluster: etcd leadership moved off its host ({result.stdout.strip()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
