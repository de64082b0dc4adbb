"""The config job's decisions (infra/patroni_roll.py), from what Patroni and PostgreSQL report.
The roll itself, against a real cluster, is tests/integration/test_patroni_roll.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra import patroni_roll
from infra.patroni_roll import (
    Roll,
    RollError,
    Running,
    Spec,
    State,
    parameter_patch,
    parse_states,
    rejected,
    restart_reasons,
    revert_patch,
    switchover_candidate,
    unobserved,
    whole_problem,
)

PATRONI_DATA = Path(__file__).parents[1] / "data" / "patroni"


def _state(name: str, role: str = "replica", state: str = "streaming", lag: int = 0) -> State:
    return State(name, role, state, timeline=1, lag=lag)


def test_the_patch_sets_what_changed_and_removes_what_is_no_longer_declared() -> None:
    current = {"work_mem": "4MB", "max_connections": 100, "jit": "off"}
    desired = {"work_mem": "6MB", "max_connections": "100", "shared_buffers": "96MB"}
    patch = parameter_patch(current, desired)
    # 100 and "100" are one value to Patroni (it compares strings).
    assert patch == {"work_mem": "6MB", "shared_buffers": "96MB", "jit": None}
    assert revert_patch(current, patch) == {
        "jit": "off",
        "shared_buffers": None,
        "work_mem": "4MB",
    }
    assert parameter_patch(current, {k: str(v) for k, v in current.items()}) == {}


def test_the_cluster_is_whole_only_with_one_running_leader_and_every_member_streaming() -> None:
    names = ["a", "b", "c"]
    good = [_state("a", "leader", "running"), _state("b", "sync_standby"), _state("c")]
    assert whole_problem(good, names) == ""
    assert "c" in whole_problem(good[:2], names)
    stopped = [*good[:2], _state("c", state="stopped")]
    assert whole_problem(stopped, names) == "not streaming from the leader: c (stopped)"
    other_timeline = [*good[:2], State("c", "replica", "streaming", timeline=2, lag=0)]
    assert "c (streaming)" in whole_problem(other_timeline, names)
    assert whole_problem([_state("a", "leader", "stopped"), *good[1:]], names) == (
        "0 running leaders"
    )
    # Before a switchover in synchronous mode: Patroni hands the leadership to a synchronous
    # standby only, and names one a few loops after the members stream.
    unnamed = [good[0], _state("b"), _state("c")]
    assert whole_problem(unnamed, names) == ""
    assert whole_problem(unnamed, names, synchronous=True) == "no synchronous standby named yet"
    assert whole_problem(good, names, synchronous=True) == ""


def test_a_member_has_taken_the_values_when_its_file_holds_them() -> None:
    patch = {"work_mem": "6MB", "jit": None, "max_connections": "200"}
    files: dict[str, tuple[str, str | None]] = {"work_mem": ("4MB", None), "jit": ("off", None)}
    # Nothing taken yet: the file has the old values, max_connections neither runs nor waits.
    assert unobserved(patch, files, {"max_connections": "100"}, set()) == [
        "jit",
        "max_connections",
        "work_mem",
    ]
    files = {"work_mem": ("6MB", None)}
    # A command-line parameter of Patroni's is taken once Patroni flags it for the restart.
    assert unobserved(patch, files, {"max_connections": "100"}, {"max_connections"}) == []
    assert unobserved(patch, files, {"max_connections": "200"}, set()) == []


def test_a_value_waiting_for_a_restart_is_not_a_refused_one() -> None:
    patch = {"shared_buffers": "96MB", "work_mem": "lots"}
    files: dict[str, tuple[str, str | None]] = {
        "shared_buffers": ("96MB", "setting could not be applied"),
        "work_mem": ("lots", "setting could not be applied"),
    }
    assert rejected(patch, files, {"shared_buffers"}) == {
        "work_mem": "setting could not be applied"
    }


def test_only_a_real_difference_asks_for_a_restart() -> None:
    running = {
        "shared_buffers": Running("64MB", "8192", "16384"),
        "shared_preload_libraries": Running("", "", ""),
        "huge_pages": Running("try", "try", "try"),
    }
    files: dict[str, tuple[str, str | None]] = {"shared_buffers": ("96MB", None)}
    # PostgreSQL still flags shared_preload_libraries after its value went back (a reverted
    # roll): it runs its default and the file no longer names it.
    pending = {"shared_buffers", "shared_preload_libraries"}
    assert restart_reasons(files, running, pending, {}) == {"shared_buffers"}
    files = {"shared_buffers": ("64MB", None)}
    assert restart_reasons(files, running, pending, {}) == set()
    patroni = {"max_connections": ("100", "200"), "max_wal_senders": ("10", "10")}
    assert restart_reasons(files, running, set(), patroni) == {"max_connections"}


def test_the_leadership_goes_to_the_synchronous_standby_or_the_most_advanced_replica() -> None:
    leader = _state("a", "leader", "running")
    states = [leader, _state("b", lag=0), _state("c", "sync_standby", lag=5)]
    assert switchover_candidate(states).name == "c"
    states = [leader, _state("b", lag=9), _state("c", lag=2)]
    assert switchover_candidate(states).name == "c"
    with pytest.raises(RollError, match="no streaming standby"):
        switchover_candidate([leader, _state("b", state="starting")])


def test_states_are_read_from_patronis_cluster_answer() -> None:
    recorded = json.loads((PATRONI_DATA / "healthy.json").read_text())
    states = parse_states(recorded["replies"]["elizadb-primary"]["/cluster"]["body"])
    assert [s.name for s in states if s.leads] == ["elizadb-replica-1"]
    names = ["elizadb-primary", "elizadb-replica-1", "elizadb-replica-2"]
    assert whole_problem(states, names) == ""
    answer = {
        "members": [
            {
                "name": "n1",
                "role": "replica",
                "state": "streaming",
                "timeline": 3,
                "lag": 0,
                "pending_restart": True,
                "pending_restart_reason": {
                    "max_connections": {"old_value": "100", "new_value": "200"}
                },
            }
        ]
    }
    (state,) = parse_states(answer)
    assert state.pending_reasons == {"max_connections": ("100", "200")}


class _Flapping:
    """A cluster whose only standby is not streaming for the first `flaps` looks."""

    def __init__(self, flaps: int) -> None:
        self.members: list[object] = []
        self.looks = 0
        self.flaps = flaps

    def states(self) -> list[State]:
        self.looks += 1
        standby = "starting" if self.looks <= self.flaps else "streaming"
        return [_state("a", role="leader", state="running"), _state("b", state=standby)]


def test_the_switchover_waits_for_a_standby_that_stopped_streaming_for_a_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(patroni_roll.time, "sleep", lambda _: None)
    spec = Spec(members=[], parameters={}, database="eliza", synchronous=False, timeout_s=60)
    cluster = _Flapping(flaps=3)
    roll = Roll(cluster, spec)  # type: ignore[arg-type]
    assert roll._candidate(patroni_roll.time.monotonic()).name == "b"
    assert cluster.looks == 4
    # Never back within the bound: refused, saying what each member was doing.
    monkeypatch.setattr(patroni_roll, "REFUSED_FOR_S", -1)
    never = Roll(_Flapping(flaps=10**6), spec)  # type: ignore[arg-type]
    with pytest.raises(RollError, match="b: replica, starting, timeline 1"):
        never._candidate(patroni_roll.time.monotonic())
