"""The node roll's judgement of a whole cluster (elizadb/local/node_roll.py): it rolls only when
every declared node is a member, one leader runs and every other member streams."""

from __future__ import annotations

import pytest

from elizadb.local.node_roll import _whole
from elizadb.local.patroni import Member
from infra.settings import load_settings
from infra.topology import topology

TOPO = topology(load_settings("dev", {"ha": {"engine": "patroni"}, "replicas": 2}, "t"))


def _m(name: str, role: str, state: str) -> Member:
    return Member(name, role, state, 1, None)


WHOLE = [
    _m("elizadb-primary", "Leader", "running"),
    _m("elizadb-replica-1", "Sync Standby", "streaming"),
    _m("elizadb-replica-2", "Replica", "streaming"),
]


def test_one_running_leader_and_every_other_member_streaming_is_whole() -> None:
    assert _whole(WHOLE, TOPO)


@pytest.mark.parametrize(
    "found",
    [
        WHOLE[:2],  # a node is not a member (down, or never joined)
        [WHOLE[0], WHOLE[1], _m("elizadb-replica-2", "Replica", "starting")],
        [WHOLE[0], WHOLE[1], _m("elizadb-replica-2", "Replica", "stopped")],
        [_m("elizadb-primary", "Leader", "stopped"), *WHOLE[1:]],  # the leader is not running
        [*WHOLE[:2], _m("elizadb-replica-2", "Leader", "running")],  # two leaders
        [],  # no member answers
    ],
)
def test_anything_less_is_not_rolled(found: list[Member]) -> None:
    assert not _whole(found, TOPO)
