"""ha: the high-availability layer of a stack whose failover Patroni decides (output haEngine
patroni): etcd reachable with a quorum, exactly one leader, every other member streaming from it,
a synchronous standby where one is declared, and Patroni's dynamic configuration as declared.

Everything is read from Patroni's REST API at the endpoints the outputs give (`patroni.members`),
GET only (verify/patroni_api.py):

* GET /patroni on every member: its role and when it last read the cluster from etcd
  (`dcs_last_seen`, judged against the member's own clock);
* GET /cluster and GET /config from one member that reached etcd within the ttl, the leader
  first: Patroni answers both from etcd. When no member has reached etcd, they are not asked (a
  member whose etcd read fails keeps the request for its read timeout, about 6 s) and the checks
  that need them skip, naming ha.dcs.

A member whose REST API cannot be reached is down (Patroni is its container's main process):
health.reachable reports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from verify.context import NODE_ROOT, Context
from verify.model import Check, Findings, Outcome, Unreachable, skipped
from verify.outputs import PatroniDeclared, PatroniMember
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

T = TypeVar("T")
DCS_ROOT = "ha.dcs"
LEADER_ROOT = "ha.leader"
# GET /cluster's roles of a standby that confirms commits: synchronous mode, quorum mode.
SYNC_ROLES = frozenset({"sync_standby", "quorum_standby"})
# Patroni's own defaults for keys the dynamic configuration may leave out.
CONFIG_DEFAULTS: Mapping[str, Any] = {
    "synchronous_mode": False,
    "synchronous_node_count": 1,
    "ttl": 30,
}


class _NotPublished(Exception):
    """The outputs of a Patroni stack deployed before eliza-db published its REST API."""


@dataclass(frozen=True)
class Survey:
    """GET /patroni on every member of the outputs."""

    statuses: Mapping[str, MemberStatus]  # by member name: those that answered
    missed: Mapping[str, str]  # by member name: why it did not

    def fresh(self, ttl: int) -> list[str]:
        """The members that read the cluster from etcd within `ttl` seconds: the one that runs
        as primary first, then the most recent."""
        within = [s for s in self.statuses.values() if (a := s.dcs_age) is not None and a <= ttl]
        within.sort(key=lambda s: (not s.leads, s.dcs_age))
        return [s.name for s in within]


def _declared(ctx: Context) -> PatroniDeclared:
    if ctx.outputs.patroni is None:
        raise _NotPublished
    return ctx.outputs.patroni


def _get(ctx: Context, member: PatroniMember, path: str) -> Reply:
    return get_json(
        member.host, member.port, path, ctx.ca_path, ctx.thresholds.patroni_api_timeout_s
    )


def _read_survey(ctx: Context) -> Survey:
    statuses: dict[str, MemberStatus] = {}
    missed: dict[str, str] = {}
    for member in _declared(ctx).members:
        try:
            status = parse_status(_get(ctx, member, "/patroni"))
        except ApiUnreachable as err:
            missed[member.name] = (
                f"its REST API at {member.host}:{member.port} is unreachable ({err})"
            )
            continue
        except ApiNoAnswer as err:
            missed[member.name] = str(err)
            continue
        if status.name != member.name:
            missed[member.name] = (
                f"{member.host}:{member.port} answers as member {status.name!r}, not "
                f"{member.name!r}: the outputs do not match the stack"
            )
            continue
        statuses[member.name] = status
    return Survey(statuses, missed)


def _survey(ctx: Context) -> Survey:
    """Every member's GET /patroni; Unreachable (health.reachable) when none answered."""
    survey = ctx.memo("ha.survey", lambda: _read_survey(ctx))
    if not survey.statuses:
        raise Unreachable(
            "Patroni's REST API",
            NODE_ROOT,
            "no member answered GET /patroni: "
            + "; ".join(f"{n}: {w}" for n, w in survey.missed.items()),
        )
    return survey


def _from_etcd(ctx: Context, path: str, parse: Callable[[Reply], T]) -> T:
    """GET `path` (which Patroni answers from etcd) from the first member that reached etcd
    within the ttl; Unreachable (ha.dcs) when none did or none answered."""
    declared = _declared(ctx)
    survey = _survey(ctx)
    fresh = survey.fresh(declared.ttl)
    if not fresh:
        raise Unreachable(
            f"GET {path}",
            DCS_ROOT,
            f"no member has read the cluster from etcd within the ttl of {declared.ttl} s",
        )
    by_name = {m.name: m for m in declared.members}
    # A member that could not answer one such request keeps the next for as long (the same
    # etcd read fails): it is asked once per run.
    failed: dict[str, str] = ctx.memo("ha.etcd_failed", dict)
    for name in fresh:
        if name in failed:
            continue
        try:
            return parse(_get(ctx, by_name[name], path))
        except (ApiUnreachable, ApiNoAnswer) as err:
            failed[name] = str(err)
    raise Unreachable(
        f"GET {path}",
        DCS_ROOT,
        "no member that read etcd within the ttl answers from it now: "
        + "; ".join(f"{n}: {why}" for n, why in failed.items()),
    )


def _cluster(ctx: Context) -> tuple[ClusterMember, ...]:
    return ctx.memo("ha.cluster", lambda: _from_etcd(ctx, "/cluster", parse_cluster))


def _config(ctx: Context) -> Mapping[str, Any]:
    return ctx.memo("ha.config", lambda: _from_etcd(ctx, "/config", parse_config))


def _not_published(check: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
    """A Patroni stack's outputs without the `patroni` key: say how to get it, check nothing."""

    def run(ctx: Context) -> Outcome:
        try:
            return check(ctx)
        except _NotPublished:
            return skipped(
                "the outputs have no `patroni` key (the stack was deployed before eliza-db "
                "published Patroni's REST API): run `elizadb up` (or `pulumi up`) and export the "
                "outputs again"
            )

    run.__doc__ = check.__doc__
    return run


# ---- judging (pure) ----------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.0f} s ago"


def dcs_problems(statuses: Mapping[str, MemberStatus], ttl: int) -> list[str]:
    """Each member that has not read the cluster from etcd within `ttl`; one problem when
    none has: etcd then answers no one."""
    stale = {n: s for n, s in statuses.items() if s.dcs_age is None or s.dcs_age > ttl}
    if stale and len(stale) == len(statuses):
        seen = ", ".join(f"{n} {_age(s.dcs_age)}" for n, s in sorted(stale.items()))
        everyone = (
            f"no member has reached etcd within the ttl of {ttl} s (last read: {seen}): etcd has "
            "lost its quorum or cannot be reached, and the cluster can neither keep nor elect a "
            "leader"
        )
        return [everyone]
    return [
        f"{'the leader ' if s.leads else ''}{n} last read the cluster from etcd "
        f"{_age(s.dcs_age)} (ttl {ttl} s): it is cut off from etcd"
        + ("" if s.leads else " and cannot take over")
        for n, s in sorted(stale.items())
    ]


def the_leader(members: Sequence[ClusterMember]) -> ClusterMember | None:
    """The one running leader, or None."""
    leaders = [m for m in members if m.role == "leader"]
    if len(leaders) == 1 and leaders[0].state == "running":
        return leaders[0]
    return None


def _roster(members: Sequence[ClusterMember]) -> str:
    return ", ".join(f"{m.name} {m.role} {m.state}" for m in members) or "no members"


def leader_problems(
    members: Sequence[ClusterMember], declared: Sequence[str], primaries: Sequence[str]
) -> list[str]:
    """Exactly one member holds the leader key, runs, is one of the stack's, and is the only
    member that runs as primary (`primaries`: GET /patroni roles)."""
    leaders = [m for m in members if m.role == "leader"]
    if not leaders:
        return [f"the cluster has no leader ({_roster(members)})"]
    if len(leaders) > 1:
        return [f"{len(leaders)} members hold the leader role ({_roster(leaders)})"]
    leader = leaders[0]
    problems = []
    if leader.state != "running":
        problems.append(f"the leader {leader.name} is {leader.state}, not running")
    if leader.name not in declared:
        problems.append(
            f"the leader {leader.name} is not a member of this stack ({', '.join(declared)})"
        )
    problems += [
        f"{name} runs as primary but does not hold the leader key ({leader.name} does): two "
        "primaries may accept writes"
        for name in primaries
        if name != leader.name
    ]
    return problems


def streaming_problems(
    members: Sequence[ClusterMember], leader: ClusterMember, declared: Sequence[str]
) -> list[str]:
    """Every declared member but the leader streams on the leader's timeline; the cluster has
    no member the stack does not declare."""
    by_name = {m.name: m for m in members}
    problems = []
    for name in declared:
        member = by_name.get(name)
        if name == leader.name:
            continue
        if member is None:
            problems.append(
                f"{name} is not in the cluster: it has not reported to etcd within the ttl "
                "(stopped, or cut off)"
            )
        elif member.state != "streaming":
            problems.append(f"{name} ({member.role}) is {member.state}, not streaming")
        elif member.timeline != leader.timeline:
            problems.append(
                f"{name} streams on timeline {member.timeline}, the leader {leader.name} is on "
                f"{leader.timeline}"
            )
    problems += [
        f"{m.name} is a member of the cluster but not of this stack ({m.role} {m.state})"
        for m in members
        if m.name not in declared
    ]
    return problems


def sync_problems(members: Sequence[ClusterMember], count: int) -> list[str]:
    """At least `count` members stream as synchronous standbys."""
    synced = [m for m in members if m.role in SYNC_ROLES and m.state == "streaming"]
    if len(synced) >= count:
        return []
    missing = (
        f"synchronous replication is declared ({count} synchronous standby(s)) but "
        f"{len(synced)} member(s) stream as one ({_roster(members)})"
    )
    return [missing]


def _setting(value: Any) -> str | None:
    """A configuration value as PostgreSQL reads it: Patroni keeps what PATCH /config was
    given, so 100 and "100", true and "on" mean the same."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def config_problems(config: Mapping[str, Any], declared: PatroniDeclared) -> list[str]:
    """Every difference between Patroni's dynamic configuration and the declared one:
    synchronous_mode, synchronous_node_count (when synchronous), ttl and each parameter."""
    wanted: dict[str, Any] = {"synchronous_mode": declared.synchronous, "ttl": declared.ttl}
    if declared.synchronous:
        wanted["synchronous_node_count"] = declared.synchronous_count
    problems = []
    for key, want in wanted.items():
        have = config.get(key, CONFIG_DEFAULTS.get(key))
        if have != want:
            problems.append(f"{key} is {have!r} in Patroni's configuration, declared {want!r}")
    actual = {
        name: _setting(value)
        for name, value in config.get("postgresql", {}).get("parameters", {}).items()
    }
    for name in sorted(set(actual) | set(declared.parameters)):
        have, want = actual.get(name), declared.parameters.get(name)
        key = f"postgresql.parameters.{name}"
        if have is None:
            problems.append(f"{key}: declared {want!r}, absent from Patroni's configuration")
        elif want is None:
            problems.append(f"{key} is {have!r} in Patroni's configuration, not declared")
        elif have != want:
            problems.append(f"{key} is {have!r} in Patroni's configuration, declared {want!r}")
    return problems


# ---- the checks --------------------------------------------------------------------------------


@_not_published
def check_dcs(ctx: Context) -> Outcome:
    """etcd has a quorum, as judged through Patroni: every member that answers read the cluster
    from etcd within the leader lease's ttl (GET /patroni dcs_last_seen, against the member's
    own clock), the leader among them, and one of them reads it now (GET /cluster).

    Patroni reads the cluster from a watch on one etcd member, so a recent read alone shows that
    that member answers; the leader's is evidence of a quorum because in the same loop the
    leader renews its lease, an etcd write that needs a majority, and demotes itself when it
    cannot (failsafe_mode is off)."""
    declared = _declared(ctx)
    survey = _survey(ctx)
    seen = Findings()
    for problem in dcs_problems(survey.statuses, declared.ttl):
        seen.problem(problem)
    if survey.fresh(declared.ttl):
        # Within the ttl of an outage the reads are still recent: what tells is whether one of
        # those members can read etcd now.
        try:
            _cluster(ctx)
        except Unreachable as err:
            seen.problem(f"Patroni cannot read the cluster from etcd: {err.message}")
    for name, why in survey.missed.items():
        seen.note(f"{name} not asked: {why}")
    leaders = [s for s in survey.statuses.values() if s.leads]
    shown = leaders or list(survey.statuses.values())
    ages = ", ".join(f"{s.name} {_age(s.dcs_age)}" for s in shown)
    return seen.outcome(
        f"Patroni reaches etcd ({'leader ' if leaders else 'no member leads; '}{ages}; "
        f"ttl {declared.ttl} s)",
        "start the etcd members that are down (`elizadb status` shows their health); with "
        "several, a majority must run and reach each other. A member cut off alone: restore "
        "its network to etcd",
    )


@_not_published
def check_leader(ctx: Context) -> Outcome:
    """Exactly one member holds Patroni's leader key, runs, belongs to the stack, and is the
    only member that runs as primary."""
    declared = _declared(ctx)
    seen = Findings()
    members = _cluster(ctx)  # Unreachable: a skip on ha.dcs (or health.reachable)
    primaries = [s.name for s in _survey(ctx).statuses.values() if s.leads]
    for problem in leader_problems(members, [m.name for m in declared.members], primaries):
        seen.problem(problem)
    leader = the_leader(members)
    return seen.outcome(
        f"{leader.name} leads (running, timeline {leader.timeline})" if leader else "",
        "Patroni elects a leader by itself, within the ttl, among the members that reach etcd "
        "and are healthy: see ha.dcs and ha.members_streaming, and the nodes' logs (`docker "
        "logs <node>`); `elizadb status` shows Patroni's view",
    )


@_not_published
def check_members_streaming(ctx: Context) -> Outcome:
    """Every member of the stack other than the leader streams from it, on its timeline, and
    the cluster has no member the stack does not declare."""
    declared = _declared(ctx)
    seen = Findings()
    members = _cluster(ctx)  # Unreachable: a skip on ha.dcs (or health.reachable)
    leader = the_leader(members)
    if leader is None:
        seen.not_checked("the members", LEADER_ROOT, "no single running leader to stream from")
        return seen.outcome("", "")
    names = [m.name for m in declared.members]
    for problem in streaming_problems(members, leader, names):
        seen.problem(problem)
    return seen.outcome(
        f"{len(names) - 1} member(s) streaming from {leader.name} on timeline {leader.timeline}",
        "start the member's container: Patroni rejoins it by itself (rewinding or cloning it "
        "when it diverged); if it stays out, its log says why (`docker logs <node>`)",
    )


@_not_published
def check_sync_standby(ctx: Context) -> Outcome:
    """Where synchronous replication is declared, as many members as declared stream as
    synchronous standbys: Patroni then promotes only one of them, and loses no acknowledged
    commit."""
    declared = _declared(ctx)
    seen = Findings()
    if not declared.synchronous:
        return seen.outcome("none required (elizadb:replication.synchronous is off)", "")
    members = _cluster(ctx)  # Unreachable: a skip on ha.dcs (or health.reachable)
    if the_leader(members) is None:
        seen.not_checked("the standbys", LEADER_ROOT, "no single running leader to confirm to")
        return seen.outcome("", "")
    for problem in sync_problems(members, declared.synchronous_count):
        seen.problem(problem)
    synced = [m.name for m in members if m.role in SYNC_ROLES]
    return seen.outcome(
        f"{', '.join(synced)} synchronous standby (of {declared.synchronous_count} declared)",
        "Patroni picks synchronous standbys among the streaming members by itself: bring "
        "replicas back (see ha.members_streaming); until one streams, no standby confirms the "
        "commits and Patroni has no member it may promote if the leader fails",
    )


@_not_published
def check_config(ctx: Context) -> Outcome:
    """Patroni's dynamic configuration (GET /config) holds what the stack declares:
    synchronous_mode (and synchronous_node_count), the ttl, and exactly the declared
    postgresql.parameters with their values."""
    declared = _declared(ctx)
    seen = Findings()
    config = _config(ctx)  # Unreachable: a skip on ha.dcs (or health.reachable)
    for problem in config_problems(config, declared):
        seen.problem(problem)
    return seen.outcome(
        f"as declared: synchronous_mode {declared.synchronous}, ttl {declared.ttl} s, "
        f"{len(declared.parameters)} parameters",
        "someone changed the dynamic configuration (patronictl edit-config or PATCH /config): "
        "run the stack's config job again to put the declared values back and roll the "
        "restarts they need (`elizadb migrate`, or `pulumi up --replace` with the config "
        "job's URN); to keep a value, declare it in elizadb:postgres.parameters and deploy",
    )


PATRONI = ("patroni",)
CHECKS = (
    Check("ha.dcs", check_dcs, engines=PATRONI),
    Check("ha.leader", check_leader, engines=PATRONI),
    Check("ha.members_streaming", check_members_streaming, engines=PATRONI),
    Check("ha.sync_standby", check_sync_standby, engines=PATRONI),
    Check("ha.config", check_config, engines=PATRONI),
)
