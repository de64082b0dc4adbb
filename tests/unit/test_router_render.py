"""The router's haproxy.cfg: every node checked over TLS against the stack CA by its own name,
the leader alone behind the read-write port, replicas (then the leader) behind the read-only
port, sessions cut when a node stops leading, and the same text for the same nodes."""

from __future__ import annotations

import re

from infra.render.router import (
    READ_ONLY_PORT,
    READ_WRITE_PORT,
    RouterConfig,
    RouterMember,
    render_haproxy_cfg,
)
from tests.unit.hashseeds import outputs_under_hash_seeds

CA = "/etc/elizadb/tls/ca.crt"
MEMBERS = (
    RouterMember("elizadb-t-replica-1", "10.9.0.11", 5432, 8008),
    RouterMember("elizadb-t-primary", "10.9.0.10", 5432, 8008),
    RouterMember("elizadb-t-replica-2", "10.9.0.12", 5432, 8008),
)


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            current = line
            sections[current] = []
        elif line.strip() and current:
            sections[current].append(line.strip())
    return sections


def test_the_read_write_port_forwards_to_whichever_node_answers_primary() -> None:
    listen = _sections(render_haproxy_cfg(RouterConfig(MEMBERS, CA)))["listen read_write"]
    assert f"bind *:{READ_WRITE_PORT}" in listen
    assert "http-check send meth GET uri /primary" in listen
    assert "http-check expect status 200" in listen
    servers = [line for line in listen if line.startswith("server ")]
    assert len(servers) == 3
    for m in MEMBERS:
        assert (
            f"server {m.name} {m.address}:5432 check port 8008 check-ssl verify required "
            f"ca-file {CA} verifyhost {m.name}"
        ) in servers


def test_reads_go_to_replicas_and_fall_back_to_the_leader() -> None:
    listen = _sections(render_haproxy_cfg(RouterConfig(MEMBERS, CA)))["listen read_only"]
    assert f"bind *:{READ_ONLY_PORT}" in listen
    assert "http-check send meth GET uri /replica" in listen
    backups = [line for line in listen if " backup " in line]
    assert sorted(backups) == sorted(
        f"server {m.name}-leader {m.address}:5432 backup track read_write/{m.name}" for m in MEMBERS
    )


def test_a_node_that_stops_leading_loses_its_sessions_within_two_checks() -> None:
    text = render_haproxy_cfg(RouterConfig(MEMBERS, CA, check_interval_ms=1000, fall=2))
    defaults = " ".join(_sections(text)["defaults"])
    assert "on-marked-down shutdown-sessions" in defaults
    assert re.search(r"inter 1000ms .*fall 2 rise 1", defaults), defaults


def test_a_down_node_is_asked_four_times_a_second_so_a_new_leader_starts_soon() -> None:
    defaults = " ".join(_sections(render_haproxy_cfg(RouterConfig(MEMBERS, CA)))["defaults"])
    assert re.search(r"inter 1000ms .*downinter 250ms", defaults), defaults
    custom = render_haproxy_cfg(RouterConfig(MEMBERS, CA, down_interval_ms=500))
    assert "downinter 500ms" in custom


def test_a_refused_connection_marks_the_node_down_and_the_pooler_retries_not_the_router() -> None:
    """A demoted leader's postgres refuses connections before Patroni stops calling it primary:
    the first refused connection takes it out, and the router hands the failure back at once
    (PgBouncer asks again within its server_login_retry) instead of retrying the same node."""
    defaults = _sections(render_haproxy_cfg(RouterConfig(MEMBERS, CA)))["defaults"]
    assert "retries 0" in defaults
    server = next(line for line in defaults if line.startswith("default-server "))
    assert "observe layer4 error-limit 1 on-error mark-down" in server


def test_checks_read_patronis_whole_answer_before_judging_its_status() -> None:
    """Judged on the status line alone, HAProxy closed the check mid-answer and Patroni logged a
    ConnectionResetError traceback; a body rule first makes it read the answer."""
    for name in ("listen read_write", "listen read_only"):
        listen = _sections(render_haproxy_cfg(RouterConfig(MEMBERS, CA)))[name]
        body = listen.index("http-check expect string role")
        assert body < listen.index("http-check expect status 200"), listen


def test_log_lines_carry_their_own_time() -> None:
    glob = _sections(render_haproxy_cfg(RouterConfig(MEMBERS, CA)))["global"]
    assert "log stdout format iso local0 info" in glob


def test_the_health_port_answers_200_only_with_a_leader() -> None:
    health = _sections(render_haproxy_cfg(RouterConfig(MEMBERS, CA)))["frontend health"]
    assert "http-request return status 200 if { nbsrv(read_write) ge 1 }" in health
    assert health[-1] == "http-request return status 503"


def test_the_same_nodes_in_any_order_render_the_same_file_under_every_hash_seed() -> None:
    script = (
        "from infra.render.router import RouterConfig, RouterMember, render_haproxy_cfg\n"
        "ms = [RouterMember(f'n{i}', f'10.0.0.{i}', 5432, 8008) for i in (3, 1, 2)]\n"
        "print(render_haproxy_cfg(RouterConfig(tuple(ms), '/ca')))\n"
        "print(render_haproxy_cfg(RouterConfig(tuple(reversed(ms)), '/ca')))\n"
    )
    outputs = set(outputs_under_hash_seeds(script).values())
    assert len(outputs) == 1
    text = next(iter(outputs))
    half = len(text) // 2  # two renders, each followed by print()'s newline
    assert text[:half] == text[half:]
