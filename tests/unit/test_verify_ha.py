"""verify's ha checks (Patroni stacks): parsing Patroni's REST answers, judging them, and each
check's outcome, on answers recorded from a deployed Patroni 4.0 stack (tests/data/patroni/:
healthy, etcd stopped, a replica stopping and stopped, the dynamic configuration patched).
The REST client itself is tried against a local TLS server with a CA made here."""

from __future__ import annotations

import copy
import datetime
import email.utils
import http.server
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.unit.test_verify_outputs import sample_outputs
from verify import suite
from verify.checks import ha
from verify.context import Context
from verify.errors import OutputsError
from verify.outputs import Outputs, PatroniDeclared, load_outputs
from verify.patroni_api import (
    ApiNoAnswer,
    ApiUnreachable,
    ClusterMember,
    MemberStatus,
    Reply,
    get_json,
    parse_cluster,
    parse_config,
    parse_status,
)
from verify.thresholds import Thresholds

DATA = Path(__file__).resolve().parents[1] / "data" / "patroni"
HEALTHY = json.loads((DATA / "healthy.json").read_text())
LEADER, SYNC, REPLICA = "elizadb-replica-1", "elizadb-replica-2", "elizadb-primary"


def scenario(name: str) -> dict[str, dict[str, Any]]:
    replies: dict[str, dict[str, Any]] = json.loads((DATA / f"{name}.json").read_text())["replies"]
    return replies


def reply(recorded: dict[str, Any]) -> Reply:
    """A recorded answer as get_json returns it; a recorded failure raised as get_json does."""
    if "error" in recorded:
        if "Connection refused" in recorded["error"]:
            raise ApiUnreachable(recorded["error"])
        raise ApiNoAnswer(recorded["error"])
    when = email.utils.parsedate_to_datetime(recorded["date"]).timestamp()
    return Reply(recorded["body"], when)


def statuses(name: str) -> dict[str, MemberStatus]:
    found = {}
    for member, answers in scenario(name).items():
        try:
            found[member] = parse_status(reply(answers["/patroni"]))
        except ApiUnreachable:
            continue
    return found


def cluster(name: str, member: str = LEADER) -> tuple[ClusterMember, ...]:
    return parse_cluster(reply(scenario(name)[member]["/cluster"]))


def patroni_outputs(**changes: Any) -> dict[str, Any]:
    """The sample outputs as a Patroni stack's, with the recorded stack's `patroni` key."""
    raw = sample_outputs()
    raw["haEngine"] = "patroni"
    raw["patroni"] = {**copy.deepcopy(HEALTHY["declared"]), **changes}
    return raw


DECLARED = load_outputs(patroni_outputs()).patroni
assert DECLARED is not None
NAMES = [m.name for m in DECLARED.members]


# ---- outputs -----------------------------------------------------------------------------------


def test_the_patroni_key_loads_with_every_member_and_the_declared_configuration() -> None:
    assert isinstance(DECLARED, PatroniDeclared)
    assert NAMES == [REPLICA, LEADER, SYNC]
    assert (DECLARED.members[0].node, DECLARED.members[0].host, DECLARED.members[0].port) == (
        "elizadb-ithac-primary",
        "127.0.0.1",
        52210,
    )
    assert DECLARED.synchronous and DECLARED.synchronous_count == 1 and DECLARED.ttl == 20
    assert DECLARED.parameters["work_mem"] == "4MB"


def test_a_malformed_patroni_key_is_refused_key_by_key() -> None:
    raw = patroni_outputs(ttl="20", members=[{"name": "a", "node": "n", "host": "h", "port": 0}])
    raw["patroni"]["parameters"]["work_mem"] = 4
    with pytest.raises(OutputsError) as caught:
        load_outputs(raw)
    assert caught.value.problems == [
        "patroni.members[0].port: 0 is outside 1..65535",
        "patroni.ttl: expected int, got str '20'",
        "patroni.parameters.work_mem: expected str, got int 4",
    ]


def test_outputs_without_the_key_load_and_builtin_stacks_ignore_it() -> None:
    raw = patroni_outputs()
    del raw["patroni"]
    assert load_outputs(raw).patroni is None  # deployed before the REST API was published
    builtin = patroni_outputs()
    builtin["haEngine"] = "builtin"
    assert load_outputs(builtin).patroni is None


def test_a_patroni_stack_without_tls_is_refused() -> None:
    raw = patroni_outputs()
    raw["tls"] = False
    with pytest.raises(OutputsError) as caught:
        load_outputs(raw)
    assert "tls: false" in caught.value.problems[0]


# ---- parsing recorded answers ------------------------------------------------------------------


def test_get_patroni_gives_role_timeline_and_the_age_of_the_last_etcd_read() -> None:
    found = statuses("healthy")
    assert {n: (s.role, s.leads) for n, s in found.items()} == {
        REPLICA: ("replica", False),
        LEADER: ("primary", True),
        SYNC: ("replica", False),
    }
    assert all(s.state == "running" and s.timeline == 1 for s in found.values())
    # Judged against the member's own clock (its Date header): read this very second.
    assert all(s.dcs_age is not None and s.dcs_age <= 2 for s in found.values())
    # Two minutes after etcd stopped, every member had demoted and read nothing since.
    stale = statuses("etcd_stopped")
    assert all(s.role == "replica" and (s.dcs_age or 0) > 100 for s in stale.values())


def test_get_cluster_and_get_config_parse_and_a_wrong_shape_names_the_key() -> None:
    assert [(m.name, m.role, m.state, m.timeline) for m in cluster("healthy")] == [
        (REPLICA, "sync_standby", "streaming", 1),
        (LEADER, "leader", "running", 1),
        (SYNC, "replica", "streaming", 1),
    ]
    config = parse_config(reply(scenario("healthy")[LEADER]["/config"]))
    assert config["ttl"] == 20 and config["postgresql"]["parameters"]["work_mem"] == "4MB"
    with pytest.raises(ApiNoAnswer, match=r"members\[0\]: state is None, not a string"):
        parse_cluster(Reply({"members": [{"name": "a", "role": "leader"}]}, 0.0))
    with pytest.raises(ApiNoAnswer, match=r"postgresql\.parameters: expected a JSON object"):
        parse_config(Reply({"postgresql": {"parameters": ["work_mem"]}}, 0.0))
    with pytest.raises(ApiNoAnswer, match="dcs_last_seen is 'soon', not an integer"):
        parse_status(
            Reply({"role": "primary", "state": "running", "dcs_last_seen": "soon",
                   "patroni": {"name": "a"}}, 0.0)
        )  # fmt: skip


# ---- judging -----------------------------------------------------------------------------------


def test_dcs_judges_every_member_and_names_a_lost_etcd_once() -> None:
    assert ha.dcs_problems(statuses("healthy"), 20) == []
    (problem,) = ha.dcs_problems(statuses("etcd_stopped"), 20)
    assert problem.startswith("no member has reached etcd within the ttl of 20 s (last read: ")
    assert "lost its quorum" in problem
    # One member cut off alone, the others reading etcd: that member is named.
    mixed = {**statuses("healthy"), SYNC: statuses("etcd_stopped")[SYNC]}
    (alone,) = ha.dcs_problems(mixed, 20)
    assert alone.startswith(f"{SYNC} last read the cluster from etcd 1") and "take over" in alone
    never = {
        **statuses("healthy"),
        LEADER: replace(statuses("healthy")[LEADER], dcs_last_seen=None),
    }
    assert ha.dcs_problems(never, 20) == [
        f"the leader {LEADER} last read the cluster from etcd never (ttl 20 s): it is cut off from etcd"
    ]


def test_the_survey_asks_the_member_running_as_primary_first_and_only_recent_readers() -> None:
    found = statuses("healthy")
    assert ha.Survey(found, {}).fresh(20)[0] == LEADER
    assert ha.Survey(statuses("etcd_stopped"), {}).fresh(20) == []


def test_exactly_one_running_leader_of_the_stack_and_no_other_primary() -> None:
    members = cluster("healthy")
    assert ha.leader_problems(members, NAMES, [LEADER]) == []
    assert ha.the_leader(members) == members[1]
    as_replica = tuple(replace(m, role="replica") for m in members)
    assert ha.leader_problems(as_replica, NAMES, [])[0].startswith("the cluster has no leader (")
    two = (replace(members[0], role="leader"), *members[1:])
    assert ha.leader_problems(two, NAMES, [LEADER])[0].startswith("2 members hold the leader role")
    stopped = (members[0], replace(members[1], state="stopped"), members[2])
    assert ha.leader_problems(stopped, NAMES, []) == [
        f"the leader {LEADER} is stopped, not running"
    ]
    assert ha.the_leader(stopped) is None
    (two_primaries,) = ha.leader_problems(members, NAMES, [LEADER, SYNC])
    assert two_primaries == (
        f"{SYNC} runs as primary but does not hold the leader key ({LEADER} does): two primaries "
        "may accept writes"
    )
    assert "not a member of this stack" in ha.leader_problems(members, [REPLICA, SYNC], [])[0]


def test_every_other_member_streams_on_the_leaders_timeline() -> None:
    members = cluster("healthy")
    leader = members[1]
    assert ha.streaming_problems(members, leader, NAMES) == []
    stopping = cluster("replica_stopping")
    assert ha.streaming_problems(stopping, stopping[1], NAMES) == [
        f"{SYNC} (replica) is stopped, not streaming"
    ]
    gone = cluster("replica_stopped")
    (absent,) = ha.streaming_problems(gone, gone[0], NAMES)
    assert absent == (
        f"{REPLICA} is not in the cluster: it has not reported to etcd within the ttl (stopped, "
        "or cut off)"
    )
    behind = (replace(members[0], timeline=0), *members[1:])
    assert ha.streaming_problems(behind, leader, NAMES) == [
        f"{REPLICA} streams on timeline 0, the leader {LEADER} is on 1"
    ]
    stranger = (*members, replace(members[2], name="elizadb-replica-9"))
    assert ha.streaming_problems(stranger, leader, NAMES) == [
        "elizadb-replica-9 is a member of the cluster but not of this stack (replica streaming)"
    ]


def test_as_many_synchronous_standbys_as_declared() -> None:
    members = cluster("healthy")
    assert ha.sync_problems(members, 1) == []
    assert ha.sync_problems(cluster("replica_stopped"), 1) == []  # the sync standby still runs
    (problem,) = ha.sync_problems(members, 2)
    assert problem.startswith(
        "synchronous replication is declared (2 synchronous standby(s)) but 1"
    )
    no_sync = tuple(replace(m, role="replica") if m.role == "sync_standby" else m for m in members)
    assert ha.sync_problems(no_sync, 1)[0].endswith(
        f"but 0 member(s) stream as one ({REPLICA} replica streaming, {LEADER} leader running, "
        f"{SYNC} replica streaming)"
    )


ABSENT_WAL_KEEP_SIZE = (
    "postgresql.parameters.wal_keep_size: declared '256MB', absent from Patroni's configuration"
)


def test_the_dynamic_configuration_must_hold_exactly_what_is_declared() -> None:
    assert DECLARED is not None
    healthy = dict(parse_config(reply(scenario("healthy")[LEADER]["/config"])))
    assert ha.config_problems(healthy, DECLARED) == []
    patched = parse_config(reply(scenario("config_patched")[SYNC]["/config"]))
    assert ha.config_problems(patched, DECLARED) == [
        "postgresql.parameters.work_mem is '8MB' in Patroni's configuration, declared '4MB'"
    ]
    changed = copy.deepcopy(healthy)
    params = changed["postgresql"]["parameters"]
    params["max_connections"] = 100  # PATCH /config with a number: the same setting
    params["jit"] = False  # and a boolean: the same as "off"
    del params["wal_keep_size"]
    params["fsync"] = "off"
    changed["synchronous_mode"] = False
    del changed["ttl"]  # Patroni's default, 30
    assert ha.config_problems(changed, DECLARED) == [
        "synchronous_mode is False in Patroni's configuration, declared True",
        "ttl is 30 in Patroni's configuration, declared 20",
        "postgresql.parameters.fsync is 'off' in Patroni's configuration, not declared",
        ABSENT_WAL_KEEP_SIZE,
    ]


# ---- the checks, on recorded answers -----------------------------------------------------------


def serve(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Answer every REST request from scenario `name`, by the member the port belongs to; the
    requests made are returned (member and path), in order."""
    assert DECLARED is not None
    by_port = {m.port: m.name for m in DECLARED.members}
    answers = scenario(name)
    asked: list[str] = []

    def fake(host: str, port: int, path: str, ca_path: str, timeout_s: float) -> Reply:
        assert host == "127.0.0.1" and Path(ca_path).read_text() == OUTPUTS.ca_cert
        asked.append(f"{by_port[port]} {path}")
        return reply(answers[by_port[port]][path])

    monkeypatch.setattr(ha, "get_json", fake)
    return asked


OUTPUTS = load_outputs(patroni_outputs())


def outcomes(outputs: Outputs = OUTPUTS) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Each ha check's status, summary and root checks, as the runner runs it (an Unreachable
    raised is a skip on its root)."""
    with Context(outputs, read_only=True, thresholds=Thresholds()) as ctx:
        found = {}
        for check in ha.CHECKS:
            outcome, _ = suite._run_one(check, ctx)
            found[check.id] = (outcome.status, outcome.summary, outcome.depends_on)
        return found


def statuses_of(found: dict[str, tuple[str, str, tuple[str, ...]]]) -> dict[str, str]:
    return {check_id: status for check_id, (status, _, _) in found.items()}


def test_a_healthy_stack_passes_every_check_asking_each_member_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = serve(monkeypatch, "healthy")
    found = outcomes()
    assert set(statuses_of(found).values()) == {"pass"}, found
    assert found["ha.leader"][1] == f"{LEADER} leads (running, timeline 1)"
    assert found["ha.sync_standby"][1] == f"{REPLICA} synchronous standby (of 1 declared)"
    assert asked == [
        *(f"{n} /patroni" for n in NAMES),
        f"{LEADER} /cluster",  # the member running as primary is asked first
        f"{LEADER} /config",
    ]


def test_with_etcd_stopped_dcs_fails_and_the_rest_wait_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = serve(monkeypatch, "etcd_stopped")
    found = outcomes()
    assert found["ha.dcs"][0] == "fail"
    assert found["ha.dcs"][1].startswith("no member has reached etcd within the ttl of 20 s")
    for check_id in ("ha.leader", "ha.members_streaming", "ha.sync_standby", "ha.config"):
        assert found[check_id][0] == "skip" and found[check_id][2] == ("ha.dcs",), found
    # No member that read etcd long ago is kept waiting on it (Patroni holds such a request
    # for its etcd read timeout).
    assert not [a for a in asked if not a.endswith("/patroni")]


def test_a_member_that_read_etcd_recently_but_cannot_now_fails_dcs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first seconds of an etcd outage: the last reads are recent, GET /cluster hangs.
    asked = []
    broken = ApiNoAnswer("GET /cluster: no answer (TimeoutError: The read operation timed out)")

    def no_cluster(host: str, port: int, path: str, ca_path: str, timeout_s: float) -> Reply:
        if path != "/patroni":
            asked.append(f"{port} {path}")
            raise broken
        return reply(HEALTHY["replies"][NAMES[port - 52210]][path])

    monkeypatch.setattr(ha, "get_json", no_cluster)
    found = outcomes()
    assert found["ha.dcs"][0] == "fail"
    assert found["ha.dcs"][1].startswith("Patroni cannot read the cluster from etcd: no member")
    assert {found[i][2] for i in found if i != "ha.dcs"} == {("ha.dcs",)}
    assert asked == ["52211 /cluster", "52210 /cluster", "52212 /cluster"]  # each once


def test_a_stopped_replica_fails_members_streaming_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, says in (
        ("replica_stopping", f"{SYNC} (replica) is stopped, not streaming"),
        ("replica_stopped", f"{REPLICA} is not in the cluster"),
    ):
        serve(monkeypatch, name)
        found = outcomes()
        assert statuses_of(found) == {
            "ha.dcs": "pass",
            "ha.leader": "pass",
            "ha.members_streaming": "fail",
            "ha.sync_standby": "pass",
            "ha.config": "pass",
        }, found
        assert found["ha.members_streaming"][1].startswith(says)
        assert "not asked: its REST API at 127.0.0.1" in found["ha.dcs"][1]


def test_a_patched_configuration_fails_config_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    serve(monkeypatch, "config_patched")
    found = outcomes()
    assert {i for i, s in statuses_of(found).items() if s != "pass"} == {"ha.config"}
    assert found["ha.config"][1] == (
        "postgresql.parameters.work_mem is '8MB' in Patroni's configuration, declared '4MB'"
    )


def test_no_member_answering_points_at_health_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(host: str, port: int, path: str, ca_path: str, timeout_s: float) -> Reply:
        raise ApiUnreachable("ConnectionRefusedError: [Errno 111] Connection refused")

    monkeypatch.setattr(ha, "get_json", refused)
    found = outcomes()
    assert {(s, d) for s, _, d in found.values()} == {("skip", ("health.reachable",))}


def test_outputs_without_the_patroni_key_say_how_to_get_it() -> None:
    raw = patroni_outputs()
    del raw["patroni"]
    found = outcomes(load_outputs(raw))
    assert {s for s, _, _ in found.values()} == {"skip"}
    assert all("run `elizadb up`" in summary for _, summary, _ in found.values())


def test_the_ha_checks_run_on_patroni_stacks_only() -> None:
    builtin = load_outputs(sample_outputs())
    assert [c.id for c in suite.select(["ha"])] == [c.id for c in ha.CHECKS]
    assert not [c for c in ha.CHECKS if c.applies_to(builtin)]
    assert all(c.applies_to(OUTPUTS) for c in ha.CHECKS)
    assert suite.run_checks(builtin, only=["ha"]) == []


# ---- the REST client, against a local TLS server -----------------------------------------------


def _certificates(folder: Path) -> tuple[Path, Path]:
    """A CA (its certificate written to ca.crt) and a server certificate for 127.0.0.1 signed
    by it (certificate and key in server.pem)."""
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: str, key: Any, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = build("test CA", "test CA", ca_key, ca_key, True)
    server = build("node", "test CA", server_key, ca_key, False)
    pem = serialization.Encoding.PEM
    (folder / "ca.crt").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(
        server.public_bytes(pem)
        + server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return folder / "ca.crt", folder / "server.pem"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/patroni":
            body = json.dumps({"role": "primary", "state": "running", "patroni": {"name": "a"}})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())
        elif self.path == "/config":
            self.send_error(502)
        elif self.path == "/text":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>")
        else:  # what Patroni does when its etcd read fails: close without an answer
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    ca, server_pem = _certificates(tmp_path_factory.mktemp("tls"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_pem)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], ca
    httpd.shutdown()
    httpd.server_close()


def test_the_client_verifies_the_server_and_tells_no_session_from_no_answer(
    tls_server: tuple[int, Path], tmp_path: Path
) -> None:
    port, ca = tls_server
    got = get_json("127.0.0.1", port, "/patroni", str(ca), 5)
    assert parse_status(got).leads and got.server_time > 0
    with pytest.raises(ApiNoAnswer, match="GET /config: HTTP 502"):
        get_json("127.0.0.1", port, "/config", str(ca), 5)
    with pytest.raises(ApiNoAnswer, match="GET /text: the answer is not JSON"):
        get_json("127.0.0.1", port, "/text", str(ca), 5)
    with pytest.raises(ApiNoAnswer, match="GET /cluster: no answer"):
        get_json("127.0.0.1", port, "/cluster", str(ca), 5)
    # Another CA's client does not trust the server: no session at all.
    other, _ = _certificates(tmp_path)
    with pytest.raises(ApiUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        get_json("127.0.0.1", port, "/patroni", str(other), 5)
    # The certificate names 127.0.0.1, not localhost: the host name is checked.
    with pytest.raises(ApiUnreachable, match=r"Hostname mismatch|doesn't match"):
        get_json("localhost", port, "/patroni", str(ca), 5)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = unused.getsockname()[1]
    with pytest.raises(ApiUnreachable, match="Connection refused"):
        get_json("127.0.0.1", closed, "/patroni", str(ca), 5)
