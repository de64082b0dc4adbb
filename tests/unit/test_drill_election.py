"""How the drill judges an election (issue 14): from positions alone, ties included."""

from __future__ import annotations

from elizadb.drills.failover import DrillResult, most_advanced


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
