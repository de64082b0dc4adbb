"""A Patroni cluster over a 3-member etcd, configured only by the renderers (infra/render/patroni.py
and infra/render/etcd.py), does what the highly available stack relies on: one leader and two
streaming replicas in slots of their own, a synchronous standby, TLS with client certificates
and a password on everything that changes state, a switchover with the old leader following,
parameters changed through the dynamic configuration, and a leader that survives the loss of
one etcd member. A killed leader (no acknowledged row lost, the old leader rewound) is proven on
the stack the kit deploys: tests/integration/test_patroni_stack.py.

Real containers of the stack image, real clients (Patroni's REST API over https, psycopg,
patronictl, etcdctl). Times are printed for the report (`-s`), never asserted.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import requests

from infra.render.patroni import PATRONI_YML, PATRONI_YML_UPLOAD, slot_name
from tests.integration.needs import require_engine
from tests.integration.patroni_cluster import (
    ETCD_NODES,
    PG_HOST_PORT,
    PG_NODES,
    Cluster,
    ensure_image,
    iter_nodes_but,
)

pytestmark = [pytest.mark.integration, pytest.mark.once]

# Bounded waits, generous for a loaded 2-CPU machine: a lost leader's lease alone runs 20 s.
BOOTSTRAP_S = 240.0
FAILOVER_S = 90.0
REJOIN_S = 180.0


def report(line: str) -> None:
    sys.stderr.write(f"  [patroni] {line}\n")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    client = require_engine()
    image, built_s = ensure_image(client)
    report(f"image {image}: " + ("present" if built_s is None else f"built in {built_s:.1f} s"))
    pki_dir = tmp_path_factory.mktemp("patroni-pki")
    made = Cluster.create(client, image, Path(pki_dir))
    try:
        started = time.monotonic()
        made.start()
        made.wait("a leader and two streaming replicas", lambda: _healthy(made), BOOTSTRAP_S)
        report(
            f"cluster bootstrap (3 etcd + 3 Patroni, to 2 streaming): "
            f"{time.monotonic() - started:.1f} s"
        )
        with made.connect(made.leader() or PG_NODES[0]) as conn:
            conn.execute("CREATE TABLE pt_writes (id bigint PRIMARY KEY, phase text NOT NULL)")
        yield made
    finally:
        made.remove_all()


def _healthy(cluster: Cluster) -> bool:
    members = cluster.members()
    leaders = [m for m in members if m["role"] == "leader" and m["state"] == "running"]
    streaming = [m for m in members if m["role"] != "leader" and m["state"] == "streaming"]
    return len(leaders) == 1 and len(streaming) == 2


# ---- a writer that tags every row and remembers what was acknowledged ----------------------


@dataclass
class Writer:
    cluster: Cluster
    phase: str
    # (when, row id, the host port of the server that acknowledged it)
    acked: list[tuple[float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.wait_acks(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def wait_acks(
        self, count: int, after: float = 0.0, not_by: str = "", timeout_s: float = FAILOVER_S
    ) -> float:
        """The time of the `count`-th acknowledgement after `after` (by a server other than
        `not_by`, when given)."""
        excluded = PG_HOST_PORT.get(not_by)

        def probe() -> float | None:
            later = [t for t, _, port in self.acked if t > after and port != excluded]
            return later[count - 1] if len(later) >= count else None

        return self.cluster.wait(f"{count} acknowledged writes ({self.phase})", probe, timeout_s)

    def _run(self) -> None:
        dsn = self.cluster.conninfo(target_session_attrs="read-write")
        next_id = int(time.time() * 1000) * 1000
        conn: psycopg.Connection[object] | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(dsn, autocommit=True)
                conn.execute(
                    "INSERT INTO pt_writes (id, phase) VALUES (%s, %s)", (next_id, self.phase)
                )
                # Committed, and with synchronous mode on, on a synchronous standby too.
                self.acked.append((time.monotonic(), next_id, conn.info.port))
                next_id += 1
                time.sleep(0.05)
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.1)
        if conn is not None:
            conn.close()

    def largest_gap(self, start: float, end: float) -> float:
        times = [t for t, _, _ in self.acked if start <= t <= end]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def _missing_on(cluster: Cluster, node: str, ids: list[int]) -> list[int]:
    with cluster.connect(node) as conn:
        found = {
            row[0] for row in conn.execute("SELECT id FROM pt_writes WHERE id = ANY(%s)", (ids,))
        }
    return [i for i in ids if i not in found]


# ---- the tests, in the order a drill would run them ----------------------------------------


def test_one_leader_two_streaming_replicas_in_their_own_slots(cluster: Cluster) -> None:
    leader = cluster.leader()
    assert leader is not None
    rows = cluster.query(
        leader,
        "SELECT application_name, state FROM pg_stat_replication ORDER BY application_name",
    )
    assert rows == [(n, "streaming") for n in sorted(iter_nodes_but(leader))]
    slots = cluster.query(
        leader, "SELECT slot_name, active FROM pg_replication_slots ORDER BY slot_name"
    )
    assert slots == [(slot_name(n), True) for n in sorted(iter_nodes_but(leader))]
    # patronictl, configured by the ctl and etcd3 sections, sees the same cluster.
    code, out = cluster.patronictl(PG_NODES[0], "list", "-f", "json")
    assert code == 0, out
    assert leader in out and out.count('"streaming"') == 2
    # The server refuses plain TCP (the hba policy), and every node runs with data checksums.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.conninfo((leader,)).replace("verify-full", "disable"))
    assert cluster.query(leader, "SHOW data_checksums") == [("on",)]
    # The passwords live only in patroni.yml: 0600 for postgres, the uploaded copy closed too.
    code, out = cluster.exec(leader, ["stat", "-c", "%a %U", PATRONI_YML, PATRONI_YML_UPLOAD])
    assert code == 0 and out.split("\n")[:2] == ["600 postgres", "600 root"], out


def _sync_standby(cluster: Cluster) -> str | None:
    names = [m["name"] for m in cluster.members() if m["role"] == "sync_standby"]
    return str(names[0]) if len(names) == 1 else None


def test_synchronous_mode_keeps_a_synchronous_standby(cluster: Cluster) -> None:
    standby = cluster.wait("a synchronous standby", lambda: _sync_standby(cluster), 60)
    leader = cluster.leader()
    assert leader is not None
    states = dict(
        cluster.query(leader, "SELECT application_name, sync_state FROM pg_stat_replication")
    )
    assert states[standby] in {"sync", "quorum"}, states
    (names,) = cluster.query(leader, "SHOW synchronous_standby_names")[0]
    assert standby in names


def test_unsafe_rest_calls_need_tls_a_client_certificate_and_the_password(
    cluster: Cluster,
) -> None:
    node = PG_NODES[0]
    # Read-only endpoints answer any client that trusts the CA.
    assert cluster.api_get(node, "/health").status_code == 200
    body = {"postgresql": {"parameters": {"work_mem": "5MB"}}}
    without_cert = cluster.api_unsafe("PATCH", node, "/config", body, cert=False)
    assert without_cert.status_code == 403, without_cert.text
    without_password = cluster.api_unsafe("PATCH", node, "/config", body, password=False)
    assert without_password.status_code == 401, without_password.text
    # Plain http on the TLS port gets no answer at all.
    with pytest.raises(requests.ConnectionError):
        requests.patch(
            cluster.api_url(node, "/config").replace("https:", "http:"), json=body, timeout=5
        )
    config = cluster.api_get(node, "/config").json()
    assert config["postgresql"]["parameters"]["work_mem"] == "4MB"


def test_etcd_refuses_a_client_without_a_certificate(cluster: Cluster) -> None:
    member = ETCD_NODES[0]
    since = int(time.time()) - 1
    code, out = cluster.etcdctl(member, "get", "--prefix", "/elizadb", "--keys-only", cert=False)
    assert code != 0, out
    # The client sees only a broken connection; the member says why it dropped it.
    log = cluster.container(member).logs(since=since).decode("utf-8", "replace")
    assert "didn't provide a certificate" in log, log[-2000:]
    code, out = cluster.etcdctl(member, "get", "--prefix", "/elizadb", "--keys-only")
    assert code == 0, out
    assert f"/elizadb/{cluster.patroni.scope}/leader" in out
    # Nor does it speak plain http.
    plain = ["etcdctl", f"--endpoints=http://{member}:2379", "--dial-timeout=3s"]
    code, out = cluster.exec(member, [*plain, "endpoint", "health"])
    assert code != 0, out


def _patch_parameter(cluster: Cluster, node: str, name: str, value: str) -> None:
    body = {"postgresql": {"parameters": {name: value}}}
    reply = cluster.api_unsafe("PATCH", node, "/config", body)
    assert reply.status_code == 200, reply.text


def test_patch_config_reloads_or_marks_pending_restart(cluster: Cluster) -> None:
    leader = cluster.leader()
    assert leader is not None
    (started,) = cluster.query(leader, "SELECT pg_postmaster_start_time()")[0]
    _patch_parameter(cluster, leader, "work_mem", "8MB")
    for node in PG_NODES:
        cluster.wait(
            f"work_mem 8MB on {node}",
            lambda node=node: cluster.query(node, "SHOW work_mem") == [("8MB",)],
            60,
        )
    assert cluster.query(leader, "SELECT pg_postmaster_start_time()") == [(started,)]
    _patch_parameter(cluster, leader, "max_connections", "120")
    for node in PG_NODES:
        cluster.wait(
            f"pending_restart on {node}",
            lambda node=node: cluster.api_get(node, "/patroni").json().get("pending_restart"),
            60,
        )
    assert cluster.query(leader, "SHOW max_connections") == [("100",)]


def test_switchover_moves_the_leader_and_the_old_leader_follows(cluster: Cluster) -> None:
    old = cluster.wait("a leader", cluster.leader, 30)
    candidate = cluster.wait("a synchronous standby", lambda: _sync_standby(cluster), 60)
    with Writer(cluster, "switchover") as writer:
        asked = time.monotonic()
        reply = cluster.api_unsafe(
            "POST", old, "/switchover", {"leader": old, "candidate": candidate}
        )
        assert reply.status_code == 200, reply.text
        cluster.wait("the candidate leads", lambda: cluster.leader() == candidate, FAILOVER_S)
        done = writer.wait_acks(20, after=asked)
    report(
        f"switchover {old} -> {candidate}: largest write gap "
        f"{writer.largest_gap(asked - 1, done):.2f} s"
    )
    cluster.wait("two streaming replicas again", lambda: _healthy(cluster), REJOIN_S)
    missing = _missing_on(cluster, candidate, [i for _, i, _ in writer.acked])
    assert not missing, f"{len(missing)} acknowledged rows missing after the switchover"


def test_losing_one_etcd_member_keeps_the_leader(cluster: Cluster) -> None:
    leader = cluster.wait("a leader", cluster.leader, 60)
    stopped = ETCD_NODES[0]
    cluster.container(stopped).kill()
    try:
        # Two lease lifetimes: long enough for a lost lease to show.
        ttl = cluster.patroni.timings.ttl
        time.sleep(2 * ttl)
        assert cluster.leader() == leader
        with cluster.connect(leader) as conn:
            conn.execute("INSERT INTO pt_writes (id, phase) VALUES (1, 'etcd-member-lost')")
    finally:
        cluster.container(stopped).start()
