"""How the drill judges an election (issue 14): from positions alone, ties included."""

from __future__ import annotations

from elizadb.drills.failover import DrillResult, most_advanced
from elizadb.ops.failover import SETTLE_PATIENCE_S, settled


def _result(new: str, positions: dict[str, int]) -> DrillResult:
    return DrillResult(
        kind="failover",
        run="r",
        synchronous=True,
        old_primary="primary",
        new_primary=new,
        most_advanced=most_advanced(positions),
        positions=positions,
        election_positions=positions,
        acked=1,
        missing=0,
        rto_s=1.0,
        events={},
        acks=[],
        primaries_after=1,
        rejoin_s=0.0,
        errors=0,
    )


def test_the_one_furthest_along_is_the_most_advanced() -> None:
    positions = {"replica-1": 100, "replica-2": 250}
    assert most_advanced(positions) == ["replica-2"]
    assert _result("replica-2", positions).promoted_most_advanced
    assert not _result("replica-1", positions).promoted_most_advanced


def test_on_a_tie_either_standby_is_the_most_advanced() -> None:
    positions = {"replica-1": 250, "replica-2": 250}
    assert most_advanced(positions) == ["replica-1", "replica-2"]
    assert _result("replica-1", positions).promoted_most_advanced
    assert _result("replica-2", positions).promoted_most_advanced


def test_a_standby_the_drill_could_not_read_is_not_the_most_advanced() -> None:
    # promoted, but never seen answering as a standby: the drill cannot call it right
    assert not _result("replica-1", {"replica-2": 250}).promoted_most_advanced
    assert most_advanced({}) == []


def test_positions_are_compared_only_once_each_standby_has_replayed_what_it_received() -> None:
    """On a busy machine a standby can hold WAL it has not replayed yet: elected on its replayed
    position, it would lose to a standby that has less, and could not follow the winner."""
    behind = {"replica-1": (100, 100), "replica-2": (150, 250)}
    assert not settled(behind, behind, agreed_for_s=0.1)
    caught_up = {"replica-1": (100, 100), "replica-2": (250, 250)}
    assert settled(caught_up, caught_up, agreed_for_s=0.1)


def test_positions_that_still_move_or_are_missing_are_not_settled() -> None:
    before = {"replica-1": (100, 100), "replica-2": (240, 240)}
    after = {"replica-1": (100, 100), "replica-2": (250, 250)}
    assert not settled(before, after, agreed_for_s=5.0)
    assert not settled({}, {}, agreed_for_s=5.0)


def test_a_standby_that_never_replays_its_last_bytes_is_taken_after_a_second_of_agreement() -> None:
    # An incomplete last record is received but never replayed.
    stuck = {"replica-1": (100, 100), "replica-2": (250, 260)}
    assert not settled(stuck, stuck, agreed_for_s=SETTLE_PATIENCE_S - 0.1)
    assert settled(stuck, stuck, agreed_for_s=SETTLE_PATIENCE_S)
