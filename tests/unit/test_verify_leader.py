"""Under Patroni the leader is whichever node answers read-write: verify asks, and judges the
cluster as it is. Builtin stacks' outputs are taken as given."""

from __future__ import annotations

from collections.abc import Callable

from psycopg.conninfo import conninfo_to_dict

from tests.unit.test_verify_outputs import sample_outputs
from verify.leader import follow_leader
from verify.outputs import Endpoint, Outputs, load_outputs


def _patroni() -> Outputs:
    return load_outputs({**sample_outputs(), "haEngine": "patroni"})


def _writes(label: str) -> Callable[[Endpoint], bool]:
    return lambda node: node.label == label


def test_the_node_that_accepts_writes_is_taken_as_the_primary() -> None:
    found = follow_leader(_patroni(), _writes("replica-1"))
    assert found.primary.label == "replica-1"
    assert [r.label for r in found.replicas] == ["primary", "replica-2"]
    # Each replica keeps a read-only connection string that points at it.
    for replica, uri in zip(found.replicas, found.connections.readonly_replicas, strict=True):
        params = conninfo_to_dict(uri)
        assert (params["host"], params["port"]) == (replica.host, str(replica.port))
        assert params["user"] == "eliza_readonly"


def test_nothing_changes_when_the_deployed_primary_leads() -> None:
    outputs = _patroni()
    assert follow_leader(outputs, _writes("primary")) == outputs


def test_no_leader_or_two_leave_the_outputs_for_the_checks_to_judge() -> None:
    outputs = _patroni()
    assert follow_leader(outputs, lambda node: None) == outputs
    assert follow_leader(outputs, lambda node: node.label != "primary") == outputs


def test_a_builtin_stack_is_never_reinterpreted() -> None:
    outputs = load_outputs(sample_outputs())
    assert outputs.ha_engine == "builtin"

    def asked(node: Endpoint) -> bool:
        raise AssertionError("a builtin stack's nodes are not asked")

    assert follow_leader(outputs, asked) == outputs
