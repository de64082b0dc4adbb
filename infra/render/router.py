"""haproxy.cfg of the router: the one place that knows which node is the leader, so that the
pooler follows a failover or switchover by itself, with no eliza-db process running.

Patroni decides who leads; each node's REST API answers `GET /primary` with 200 only on the
leader and `GET /replica` with 200 only on a running replica that may serve reads. HAProxy asks
every node about once a second (over TLS, verifying the node's certificate against the stack CA)
and forwards TCP to whichever answers. PgBouncer points at the router, not at a node. Two
listeners:

* read-write: the leader alone. When a node stops answering 200 its open sessions are cut
  (`on-marked-down shutdown-sessions`): a client of a demoted primary must not keep a session
  that can no longer write, nor wait on a dead host's TCP.
  A connection the node refuses (or that times out) marks it down at once (`observe layer4`,
  `error-limit 1`, `on-error mark-down`), and the router does not retry it (`retries 0`): the
  client, PgBouncer, retries itself (server_login_retry, infra/render/pgbouncer.py) and is then
  sent to whichever node answers by then. Measured in planned switchovers on test hosts: a
  demoted leader's postgres stops about 1 s before Patroni's API stops calling it primary, and
  with the router's own retries (1 s apart, on the same server) PgBouncer's login hung on it
  until its connect timeout, 2 s, after the new leader was ready.
* read-only: the running replicas, round-robin, with the leader as a backup so that reads keep
  working when no replica does.

The router passes TLS through: clients (PgBouncer) still verify the server's certificate, whose
names include the router's own name (topology.server_names).

Addresses are the nodes' fixed addresses, so HAProxy never depends on DNS while a node is down;
each server is verified by its name (`verifyhost`).
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.render import HEADER

READ_WRITE_PORT = 5000
READ_ONLY_PORT = 5001
# Readiness: 200 while a leader is known, 503 otherwise (the router's health check asks it).
HEALTH_PORT = 8404


@dataclass(frozen=True)
class RouterMember:
    name: str  # the node's name: its certificate carries it (verifyhost)
    address: str  # where the router reaches the node
    pg_port: int
    api_port: int


@dataclass(frozen=True)
class RouterConfig:
    members: tuple[RouterMember, ...]
    ca_file: str
    # Health checks: every `check_interval_ms` while a node is up; `fall` failures mark it
    # down, `rise` successes mark it up. With 1 s and 2, a demoted leader stops taking sessions
    # within about 2 s of Patroni changing its role (at once when it refuses a connection).
    check_interval_ms: int = 1000
    # While a node is down it is asked every `down_interval_ms`: how soon a new leader takes
    # sessions once Patroni calls it primary. 250 ms instead of 1 s cost each node's Patroni
    # 0.7 % of a CPU more (measured: 0.97 against 0.54 CPU-seconds a minute).
    down_interval_ms: int = 250
    fall: int = 2
    rise: int = 1
    max_connections: int = 1000


def render_haproxy_cfg(config: RouterConfig) -> str:
    members = sorted(config.members, key=lambda m: m.name)
    inter = config.check_interval_ms
    lines = [
        f"# {HEADER}",
        "global",
        f"    maxconn {config.max_connections}",
        # Each line with its own time (ms): a failover is read against Patroni's and PgBouncer's
        # logs, which carry theirs.
        "    log stdout format iso local0 info",
        "",
        "defaults",
        "    mode tcp",
        "    log global",
        "    option tcplog",
        "    timeout connect 3s",
        # Agents keep pooled sessions open for long: PgBouncer's own idle timeouts govern them.
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout check 2s",
        # A refused connection is not retried here (see the module's docstring): PgBouncer
        # retries sooner than the router's 1 s turn-around, and against the current leader.
        "    retries 0",
        (
            f"    default-server inter {inter}ms fastinter {max(inter // 2, 100)}ms "
            f"downinter {config.down_interval_ms}ms fall {config.fall} rise {config.rise} "
            "on-marked-down shutdown-sessions observe layer4 error-limit 1 on-error mark-down"
        ),
        "",
        "frontend health",
        "    mode http",
        f"    bind *:{HEALTH_PORT}",
        "    http-request return status 200 if { nbsrv(read_write) ge 1 }",
        "    http-request return status 503",
        "",
    ]
    lines += _listener("read_write", READ_WRITE_PORT, "/primary", members, config, backup=False)
    lines += _listener("read_only", READ_ONLY_PORT, "/replica", members, config, backup=True)
    return "\n".join(lines) + "\n"


def _listener(
    name: str,
    port: int,
    uri: str,
    members: list[RouterMember],
    config: RouterConfig,
    *,
    backup: bool,
) -> list[str]:
    lines = [
        f"listen {name}",
        f"    bind *:{port}",
        "    balance roundrobin",
        "    option httpchk",
        f"    http-check send meth GET uri {uri}",
        # The body first: HAProxy then reads Patroni's whole answer before it closes the
        # check's connection. Judged on the status alone it closed mid-answer, and Patroni logged
        # a ConnectionResetError traceback for about one check in eight (15 a minute per node).
        "    http-check expect string role",
        "    http-check expect status 200",
    ]
    for m in members:
        lines.append(
            f"    server {m.name} {m.address}:{m.pg_port} check port {m.api_port} check-ssl "
            f"verify required ca-file {config.ca_file} verifyhost {m.name}"
        )
    if backup:
        # Reads fall back to the leader when no replica serves: each node again, up exactly
        # while it is up in read_write (tracked, not checked twice).
        for m in members:
            lines.append(
                f"    server {m.name}-leader {m.address}:{m.pg_port} backup "
                f"track read_write/{m.name}"
            )
    lines.append("")
    return lines
