"""Which node the Patroni switchover drill hands the leadership to: the synchronous standby
(the only one Patroni accepts in synchronous mode), else the streaming replica least behind."""

from __future__ import annotations

import pytest

from elizadb.drills.hosts import members_whole, switchover_candidate
from elizadb.errors import DeployError
from elizadb.local.patroni import Member


def _member(name: str, role: str, state: str = "streaming", lag: float | None = 0.0) -> Member:
    return Member(name=name, role=role, state=state, timeline=3, lag_mb=lag)


def test_the_synchronous_standby_is_chosen_over_a_replica_closer_behind() -> None:
    found = [
        _member("a", "Leader", "running", None),
        _member("b", "Replica", lag=0.0),
        _member("c", "Sync Standby", lag=1.0),
    ]
    assert switchover_candidate(found).name == "c"


def test_without_synchronous_replication_the_replica_least_behind_is_chosen() -> None:
    found = [
        _member("a", "Leader", "running", None),
        _member("b", "Replica", lag=4.0),
        _member("c", "Replica", lag=0.5),
        _member("d", "Replica", state="starting", lag=0.0),  # not streaming: never chosen
    ]
    assert switchover_candidate(found).name == "c"


def test_no_streaming_replica_is_a_clear_error() -> None:
    found = [_member("a", "Leader", "running", None), _member("b", "Replica", state="stopped")]
    with pytest.raises(DeployError, match="no streaming replica"):
        switchover_candidate(found)


def test_a_drill_starts_only_on_a_whole_cluster() -> None:
    leader = _member("a", "Leader", "running", None)
    sync, replica = _member("b", "Sync Standby"), _member("c", "Replica")
    assert members_whole([leader, sync, replica], synchronous=True)
    assert not members_whole([leader, _member("b", "Replica"), replica], synchronous=True)
    assert members_whole([leader, _member("b", "Replica"), replica], synchronous=False)
    assert not members_whole([leader, sync, _member("c", "Replica", state="starting")], True)
    behind = Member(name="c", role="Replica", state="streaming", timeline=2, lag_mb=0.0)
    assert not members_whole([leader, sync, behind], synchronous=True)
    assert not members_whole([sync, replica], synchronous=True)
