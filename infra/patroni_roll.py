"""Apply a Patroni stack's PostgreSQL parameters and roll the restarts they need.

Runs inside the stack image as the config job (infra/components/patroni_config.py), with
python3's standard library and psql only, so it is uploaded rather than imported: keep it free
of eliza-db imports. `pulumi up` and `elizadb up` run the same job, so a change rolls the same
way on both paths.

The parameters live in Patroni's dynamic configuration (etcd), not in the nodes' patroni.yml: a
change replaces no container. The job

1. waits for a whole cluster (one running leader, every other member streaming): a roll
   that starts on a degraded cluster could take its last good node down;
2. PATCHes /config with the difference; every member writes and reloads it by itself;
3. waits until each member's postgresql.conf holds the new values (pg_file_settings), and
   stops, restoring the previous values, when PostgreSQL rejects one;
4. restarts the replicas that need it one at a time, each back to streaming before the next;
   a replica that does not start with the new values stops the roll before any other node is
   touched, and the previous values are restored;
5. switches over to a restarted standby (the synchronous one, when there is one) when the
   leader needs a restart: the old leader comes back as a replica, on the new values.

A new cluster (no parameter in Patroni's configuration yet, and the stack's database not yet
made: the bootstrap job runs after this one) has its leader restarted in place instead: nothing
is connected to it yet. A cluster Patroni took over with its data (a builtin stack moved to
Patroni) has clients: it rolls like any other change.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ROLL_DIR = "/etc/elizadb/roll"
CLUSTER_JSON = f"{ROLL_DIR}/cluster.json"
SECRETS_JSON = f"{ROLL_DIR}/secrets/secrets.json"
CA_CERT = "/etc/elizadb/tls/ca.crt"
CLIENT_CERT = "/etc/elizadb/tls/server.crt"
CLIENT_KEY = "/etc/elizadb/tls/server.key"
# How long a switchover Patroni refuses for want of a fit candidate (HTTP 412) is asked again.
REFUSED_FOR_S = 60

# Patroni passes these to postgres on its command line (patroni/postgresql/config.py): they are
# never in postgresql.conf, and a change to any of them needs a restart.
CMDLINE_PARAMETERS = frozenset(
    {
        "hot_standby",
        "max_connections",
        "max_locks_per_transaction",
        "max_prepared_transactions",
        "max_replication_slots",
        "max_wal_senders",
        "max_worker_processes",
        "track_commit_timestamp",
        "wal_keep_size",
        "wal_level",
        "wal_log_hints",
    }
)


class RollError(Exception):
    """The roll stopped; the message says where, why and what was put back."""


@dataclass(frozen=True)
class Member:
    """One node as the job reaches it: `name` is its Patroni member name, `tls_name` the name
    its certificate is checked against, `address` where its ports are."""

    name: str
    tls_name: str
    address: str
    api_port: int
    pg_port: int


@dataclass(frozen=True)
class State:
    """One member as GET /cluster reports it."""

    name: str
    role: str  # leader, sync_standby, replica, ...
    state: str  # running, streaming, starting, stopped, start failed, ...
    timeline: int | None
    lag: int | None
    # What Patroni says waits for the restart (its own command-line parameters among them):
    # name -> (running value, configured value).
    pending_reasons: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def leads(self) -> bool:
        return self.role in ("leader", "primary")


def parse_states(cluster: Mapping[str, Any]) -> list[State]:
    found = []
    for m in cluster.get("members", []):
        lag = m.get("lag")
        found.append(
            State(
                name=str(m["name"]),
                role=str(m.get("role", "")),
                state=str(m.get("state", "")),
                timeline=int(m["timeline"]) if m.get("timeline") is not None else None,
                lag=int(lag) if isinstance(lag, int) else None,
                pending_reasons={
                    name: (str(diff.get("old_value")), str(diff.get("new_value")))
                    for name, diff in (m.get("pending_restart_reason") or {}).items()
                },
            )
        )
    return found


def whole_problem(states: list[State], expected: list[str], synchronous: bool = False) -> str:
    """Why the cluster is not whole, or "" when it is: every expected member present, one
    running leader, every other member streaming from it on its timeline, and in synchronous
    mode a synchronous standby named (Patroni hands the leadership to no other)."""
    by_name = {s.name: s for s in states}
    missing = [n for n in expected if n not in by_name]
    if missing:
        return f"member(s) {', '.join(missing)} not in the cluster"
    leaders = [s for s in states if s.leads and s.state == "running"]
    if len(leaders) != 1:
        return f"{len(leaders)} running leaders"
    behind = [
        f"{s.name} ({s.state})"
        for s in states
        if not s.leads and (s.state != "streaming" or s.timeline != leaders[0].timeline)
    ]
    if behind:
        return f"not streaming from the leader: {', '.join(behind)}"
    if synchronous and not any(s.role == "sync_standby" for s in states):
        return "no synchronous standby named yet"
    return ""


def parameter_patch(current: Mapping[str, Any], desired: Mapping[str, str]) -> dict[str, Any]:
    """The PATCH body's parameters: what changes, and None for what goes (Patroni's rule: a
    None value removes the key). Values compare as strings, as Patroni compares them."""
    patch: dict[str, Any] = {
        name: value
        for name, value in sorted(desired.items())
        if name not in current or str(current[name]) != str(value)
    }
    patch.update({name: None for name in sorted(current) if name not in desired})
    return patch


def revert_patch(before: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The PATCH that puts back what `patch` changed."""
    return {name: before.get(name) for name in sorted(patch)}


def unobserved(
    patch: Mapping[str, Any],
    file_settings: Mapping[str, tuple[str, str | None]],
    current: Mapping[str, str],
    pending: set[str],
) -> list[str]:
    """Parameters of `patch` a member has not taken yet. `file_settings` is the last value (and
    error) of each parameter in the member's postgresql.conf, `current` its running values,
    `pending` what Patroni says waits for a restart."""
    left = []
    for name, value in sorted(patch.items()):
        if name in CMDLINE_PARAMETERS:
            # Not in the file; either running already or flagged for the restart. (A removed
            # one falls back to Patroni's default, which only the restart shows.)
            if value is not None and current.get(name) != str(value) and name not in pending:
                left.append(name)
        elif value is None:
            if name in file_settings:
                left.append(name)
        elif file_settings.get(name, ("", None))[0] != str(value):
            left.append(name)
    return left


def rejected(
    patch: Mapping[str, Any],
    file_settings: Mapping[str, tuple[str, str | None]],
    pending: set[str],
) -> dict[str, str]:
    """Parameters of `patch` PostgreSQL refused, with its reason. PostgreSQL marks a value that
    waits for a restart as "could not be applied" too: those are pending, not refused."""
    return {
        name: error
        for name in sorted(patch)
        if (error := file_settings.get(name, ("", None))[1]) is not None and name not in pending
    }


@dataclass(frozen=True)
class Running:
    """A parameter as PostgreSQL runs it: formatted as SHOW prints it, raw, and its built-in
    default (raw)."""

    shown: str
    raw: str
    boot: str


def restart_reasons(
    file_settings: Mapping[str, tuple[str, str | None]],
    running: Mapping[str, Running],
    pending: set[str],
    patroni: Mapping[str, tuple[str, str]],
) -> set[str]:
    """What a member really needs a restart for. PostgreSQL keeps a parameter's pending-restart
    flag even after its file value goes back to the running one (a reverted roll leaves it
    set), so a flag counts only where the file asks for something else than what runs; for
    Patroni's command-line parameters, where its configured value differs from the running one.
    Equal values written differently ('1GB', '1024MB') count as different: one restart more,
    never one less."""
    reasons = set()
    for name in sorted(pending):
        now = running.get(name)
        in_file = file_settings.get(name)
        if now is None:
            reasons.add(name)
        elif in_file is None:
            if now.raw != now.boot:
                reasons.add(name)
        elif in_file[0] != now.shown:
            reasons.add(name)
    reasons.update(
        name for name, (old, new) in patroni.items() if name in CMDLINE_PARAMETERS and old != new
    )
    return reasons


def switchover_candidate(states: list[State]) -> State:
    """Where the leadership goes: a synchronous standby when there is one (Patroni hands it to no
    other in synchronous mode), otherwise the streaming replica furthest ahead."""
    standbys = [s for s in states if not s.leads and s.state == "streaming"]
    if not standbys:
        raise RollError("no streaming standby to switch over to")
    sync = [s for s in standbys if s.role == "sync_standby"]
    return sorted(sync or standbys, key=lambda s: (s.lag or 0, s.name))[0]


# -- I/O ------------------------------------------------------------------------------------


_STARTED = time.monotonic()


def say(message: str) -> None:
    """One line of the job's log (the deploy shows these), timed from the job's start."""
    print(f"roll: [{time.monotonic() - _STARTED:5.1f} s] {message}", flush=True)


class _VerifiedConnection(http.client.HTTPSConnection):
    """HTTPS to an address, with the certificate checked against the member's name."""

    def __init__(self, member: Member, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(member.address, member.api_port, context=context, timeout=timeout)
        self._tls_name = member.tls_name
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self._tls_name)


class Cluster:
    """Patroni's REST API (client certificate and password: the endpoints that change things
    ask for both) and each member's PostgreSQL, through psql as the superuser over TLS."""

    def __init__(
        self, members: list[Member], api_user: str, api_password: str, superuser_password: str
    ):
        self.members = members
        credentials = f"{api_user}:{api_password}".encode()
        self._auth = "Basic " + base64.b64encode(credentials).decode()
        self._pg_password = superuser_password
        self._ctx = ssl.create_default_context(cafile=CA_CERT)
        self._ctx.load_cert_chain(CLIENT_CERT, CLIENT_KEY)

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def call(
        self, member: Member, method: str, path: str, body: object = None, timeout: float = 10
    ) -> tuple[int, str]:
        conn = _VerifiedConnection(member, self._ctx, timeout)
        try:
            headers = {"Authorization": self._auth, "Content-Type": "application/json"}
            data = json.dumps(body) if body is not None else None
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            conn.close()

    def ask(self, method: str, path: str, body: object = None) -> Any:
        """Any member that answers: they all speak for the cluster."""
        failures = []
        for member in self.members:
            try:
                status, text = self.call(member, method, path, body)
            except OSError as e:
                failures.append(f"{member.name}: {e}")
                continue
            if status == 200:
                return json.loads(text)
            failures.append(f"{member.name}: HTTP {status} {text.strip()[:200]}")
        raise RollError(f"{method} {path} failed on every member: {'; '.join(failures)}")

    def states(self) -> list[State]:
        return parse_states(self.ask("GET", "/cluster"))

    def sql(self, member: Member, query: str) -> Any:
        conninfo = (
            f"host={member.tls_name} hostaddr={socket.gethostbyname(member.address)} "
            f"port={member.pg_port} dbname=postgres user=postgres sslmode=verify-full "
            f"sslrootcert={CA_CERT} connect_timeout=5"
        )
        done = subprocess.run(
            ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", conninfo, "-c", query],
            env={**os.environ, "PGPASSWORD": self._pg_password},
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise RollError(f"psql on {member.name}: {done.stderr.strip()}")
        return json.loads(done.stdout or "null")


def member_settings(
    cluster: Cluster, member: Member, names: list[str]
) -> tuple[dict[str, tuple[str, str | None]], dict[str, Running], set[str]]:
    """For `names` and whatever PostgreSQL flags as waiting for a restart: what the member's
    postgresql.conf holds (the last entry wins, as in PostgreSQL), what runs, and the flags."""
    listed = "'{" + ",".join(names) + "}'::text[]"
    wanted = (
        f"(name = ANY({listed}) OR name IN (SELECT name FROM pg_settings WHERE pending_restart))"
    )
    row = cluster.sql(
        member,
        "SELECT json_build_object("
        "'file', (SELECT json_object_agg(name, json_build_array(setting, error) ORDER BY seqno)"
        f"  FROM pg_file_settings WHERE sourcefile LIKE '%/postgresql.conf' AND {wanted}),"
        "'running', (SELECT json_object_agg(name, json_build_array(current_setting(name),"
        f"  setting, boot_val)) FROM pg_settings WHERE {wanted}),"
        "'pending', (SELECT json_agg(name) FROM pg_settings WHERE pending_restart))",
    )
    # json_object_agg keeps every duplicate key in order; json.loads keeps the last: the one
    # PostgreSQL applies.
    files = {k: (str(v[0]), v[1]) for k, v in (row["file"] or {}).items()}
    running = {
        k: Running(str(v[0]), str(v[1]), str(v[2])) for k, v in (row["running"] or {}).items()
    }
    return files, running, set(row["pending"] or [])


def wait_until(what: str, check: Callable[[], str], timeout_s: float) -> None:
    """Poll `check` (which returns what is still wrong, or "") until it is happy."""
    deadline = time.monotonic() + timeout_s
    problem = ""
    while time.monotonic() < deadline:
        try:
            problem = check()
        except (OSError, RollError, ValueError) as e:
            problem = str(e)
        if not problem:
            return
        time.sleep(1)
    raise RollError(f"{what}: still not so after {timeout_s:.0f} s ({problem})")


@dataclass(frozen=True)
class Spec:
    """cluster.json: what the job is given (infra/components/patroni_config.py roll_spec)."""

    members: list[Member]
    parameters: dict[str, str]
    database: str
    synchronous: bool
    timeout_s: float


class Roll:
    def __init__(self, cluster: Cluster, spec: Spec) -> None:
        self.cluster = cluster
        self.spec = spec
        self.desired = spec.parameters
        self.timeout_s = spec.timeout_s
        self.expected = [m.name for m in cluster.members]

    def whole(self, why: str, synchronous: bool = False) -> list[State]:
        wait_until(
            f"a whole cluster {why}",
            lambda: whole_problem(self.cluster.states(), self.expected, synchronous),
            self.timeout_s,
        )
        return self.cluster.states()

    def _new_cluster(self) -> bool:
        """No client has a database here yet: the stack's is made by the bootstrap job, after."""
        leader = next(s for s in self.cluster.states() if s.leads)
        literal = "'" + self.spec.database.replace("'", "''") + "'"
        query = f"SELECT to_json(EXISTS (SELECT FROM pg_database WHERE datname = {literal}))"
        return self.cluster.sql(self.cluster.member(leader.name), query) is False

    def observe(self, member: Member, patch: dict[str, Any]) -> set[str]:
        """Wait until `member` took `patch`; returns what it needs a restart for."""
        names = sorted(patch)
        reasons: set[str] = set()

        def check() -> str:
            files, running, pending = member_settings(self.cluster, member, names)
            bad = rejected(patch, files, pending)
            if bad:
                raise _Rejected(member.name, bad)
            state = next((s for s in self.cluster.states() if s.name == member.name), None)
            patroni = state.pending_reasons if state else {}
            reasons.clear()
            reasons.update(restart_reasons(files, running, pending, patroni))
            current = {name: r.shown for name, r in running.items()}
            left = unobserved(patch, files, current, pending | set(patroni))
            return f"{member.name} has not yet taken {', '.join(left)}" if left else ""

        wait_until(f"{member.name} taking the new parameters", check, self.timeout_s)
        return reasons

    def restart(self, member: Member) -> float:
        started = time.monotonic()
        status, text = self.cluster.call(member, "POST", "/restart", {}, timeout=self.timeout_s)
        if status != 200:
            raise _StartFailed(member.name, f"HTTP {status} {text.strip()[:300]}")
        wait_until(
            f"{member.name} back after its restart",
            lambda: _back(self.cluster.states(), member.name),
            self.timeout_s,
        )
        return time.monotonic() - started

    def run(self) -> int:
        self.whole("before the roll")
        config = self.cluster.ask("GET", "/config")
        before: dict[str, Any] = dict((config.get("postgresql") or {}).get("parameters") or {})
        first = not before and self._new_cluster()
        patch = parameter_patch(before, self.desired)
        if patch:
            say(f"setting {len(patch)} parameter(s): {', '.join(sorted(patch))}")
            self.cluster.ask("PATCH", "/config", {"postgresql": {"parameters": patch}})
        else:
            # Nothing to set; a roll that stopped half-way still has restarts to finish.
            say("parameters unchanged in Patroni's configuration")
        try:
            needs = {m.name: self.observe(m, patch) for m in self.cluster.members}
            return self._restarts(needs, first)
        except (_Rejected, _StartFailed) as failure:
            self._put_back(before, patch, failure)
            raise RollError(str(failure)) from None

    def _restarts(self, needs: dict[str, set[str]], first: bool) -> int:
        states = self.cluster.states()
        leader = next(s for s in states if s.leads)
        waiting = [s for s in states if needs[s.name]]
        if not waiting:
            say("no restart needed")
            return 0
        replicas = [s for s in waiting if not s.leads]
        # The synchronous standby last: until then it holds every commit while the others go.
        for s in sorted(replicas, key=lambda s: (s.role == "sync_standby", s.name)):
            took = self.restart(self.cluster.member(s.name))
            say(f"restarted {s.name} ({', '.join(sorted(needs[s.name]))}) in {took:.1f} s")
        if leader in waiting:
            if first:
                took = self.restart(self.cluster.member(leader.name))
                say(f"restarted the new cluster's leader {leader.name} in place in {took:.1f} s")
            else:
                self._switchover(leader)
        self.whole("after the roll")
        say("done")
        return 0

    def _switchover(self, leader: State) -> None:
        self.whole("before the switchover", synchronous=self.spec.synchronous)
        started = time.monotonic()
        while True:
            candidate = self._candidate(started)
            status, text = self.cluster.call(
                self.cluster.member(leader.name),
                "POST",
                "/switchover",
                {"leader": leader.name, "candidate": candidate.name},
                timeout=self.timeout_s,
            )
            # 412: no member Patroni holds fit yet. A standby just restarted streams before
            # Patroni names it synchronous again, a loop or two later: ask again for a while.
            if status != 412 or time.monotonic() - started > REFUSED_FOR_S:
                break
            time.sleep(1)
        if status != 200:
            raise RollError(
                f"Patroni refused the switchover from {leader.name} to {candidate.name}: "
                f"HTTP {status} {text.strip()[:300]}; the replicas run the new parameters, "
                f"{leader.name} still the old ones until it restarts"
            )
        wait_until(
            f"{candidate.name} leading and {leader.name} streaming",
            lambda: _led_by(self.cluster.states(), candidate.name, leader.name),
            self.timeout_s,
        )
        say(
            f"switched over from {leader.name} to {candidate.name} in "
            f"{time.monotonic() - started:.1f} s"
        )
        # Its demotion restarted it as a replica, on the new values; unless it was rewound
        # without one, in which case the restart is still owed.
        if self.observe(self.cluster.member(leader.name), {}):
            took = self.restart(self.cluster.member(leader.name))
            say(f"restarted {leader.name} in {took:.1f} s")

    def _candidate(self, started: float) -> State:
        """The standby to switch over to. One just restarted can stop streaming for a moment
        after the cluster was whole (seen once, on a cluster restored from a builtin stack's
        backup): asked again for a while, then refused with what each member was doing."""
        while True:
            states = self.cluster.states()
            try:
                return switchover_candidate(states)
            except RollError:
                if time.monotonic() - started > REFUSED_FOR_S:
                    members = "; ".join(
                        f"{s.name}: {s.role}, {s.state}, timeline {s.timeline}" for s in states
                    )
                    raise RollError(f"no streaming standby to switch over to ({members})") from None
            time.sleep(1)

    def _put_back(self, before: dict[str, Any], patch: dict[str, Any], failure: Exception) -> None:
        say(f"stopping the roll: {failure}")
        self.cluster.ask(
            "PATCH", "/config", {"postgresql": {"parameters": revert_patch(before, patch)}}
        )
        say("the previous parameters are back in Patroni's configuration")
        name = getattr(failure, "member", "")
        if name:
            # Patroni starts a stopped replica again by itself, now with the old values.
            try:
                wait_until(
                    f"{name} back on the previous parameters",
                    lambda: _back(self.cluster.states(), name),
                    self.timeout_s,
                )
                say(f"{name} is back on the previous parameters")
            except RollError as e:
                say(str(e))


class _Rejected(Exception):
    def __init__(self, member: str, errors: dict[str, str]) -> None:
        self.member = ""  # nothing was restarted: nothing to bring back
        listed = "; ".join(f"{k}: {v}" for k, v in errors.items())
        super().__init__(f"PostgreSQL on {member} rejected {listed}; no node was restarted")


class _StartFailed(Exception):
    def __init__(self, member: str, detail: str) -> None:
        self.member = member
        super().__init__(
            f"{member} did not start with the new parameters ({detail}); no other node was "
            f"touched. See its log (`docker logs` of its container), fix "
            f"elizadb:postgres.parameters and deploy again"
        )


def _back(states: list[State], name: str) -> str:
    state = next((s for s in states if s.name == name), None)
    if state is None:
        return f"{name} missing from the cluster"
    wanted = "running" if state.leads else "streaming"
    return "" if state.state == wanted else f"{name} is {state.state}"


def _led_by(states: list[State], leader: str, follower: str) -> str:
    by_name = {s.name: s for s in states}
    if leader not in by_name or not by_name[leader].leads or by_name[leader].state != "running":
        return f"{leader} does not lead yet"
    if follower not in by_name or by_name[follower].state != "streaming":
        return f"{follower} is not streaming yet"
    return ""


def main() -> int:
    with open(CLUSTER_JSON) as f:
        spec = json.load(f)
    with open(SECRETS_JSON) as f:
        secrets = json.load(f)
    given = Spec(
        members=[Member(**m) for m in spec["members"]],
        parameters=dict(spec["parameters"]),
        database=str(spec["database"]),
        synchronous=bool(spec["synchronous"]),
        timeout_s=float(spec["timeout_s"]),
    )
    cluster = Cluster(given.members, secrets["api_user"], secrets["api"], secrets["superuser"])
    try:
        return Roll(cluster, given).run()
    except RollError as e:
        print(f"roll: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
