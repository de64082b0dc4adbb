"""The drill judges the election from the standbys' own reports, not from the election's
(issue 14): with the election deliberately broken to promote the least advanced standby, the
drill says the most advanced was not promoted, and its summary fails.

A stack of its own (p14el, ports 49100-49109): a broken election leaves a diverged standby
behind, which no other test should inherit. Asynchronous replication: under synchronous
replication the wrongly promoted node would wait forever for the diverged standby to confirm
its first commit, and the drill would stop on that instead of reporting the election."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from elizadb.drills import report
from elizadb.ops import failover as ops
from infra.topology import Node
from tests.integration.stacks import DeployedStack, deployed_stack, drill

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(tmp_path_factory.mktemp("p14el"), "p14el", 49100) as handle:
        yield handle


def _least_advanced(self: ops.Cluster, exclude: Node) -> tuple[Node, dict[Node, int]]:
    positions = self.standby_positions(exclude)
    return min(positions, key=lambda n: (positions[n], n.index)), positions


def test_a_broken_election_is_reported_as_such(
    stack: DeployedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops.Cluster, "elect", _least_advanced)
    # replica-1 is cut off before the fault, so it is really behind replica-2
    r = drill(stack, lagging="replica-1")
    assert r.positions["replica-2"] > r.positions["replica-1"], r.positions
    assert r.new_primary == "replica-1", r.as_dict()
    assert r.most_advanced == ["replica-2"]
    assert r.promoted_most_advanced is False
    assert report.summary([r])["most_advanced_promoted_every_time"] is False
    # the election saw the same order the drill did: it chose wrong, it was not misinformed
    assert r.election_positions["replica-2"] > r.election_positions["replica-1"]
