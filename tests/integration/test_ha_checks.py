"""verify's ha checks on a deployed Patroni stack (elizadb:ha.engine patroni on one host: three
nodes in synchronous mode and one etcd member), read from the stack's outputs alone.

Each test breaks the stack in one way, runs the ha checks until the one that exists for the
fault fails, and then expects exactly that failure among them (and the skips that name it as
their cause); the fault is undone when the block ends, whatever the assertions did, and the
checks must all pass again:

* a replica's container stopped: ha.members_streaming;
* the dynamic configuration patched (`patronictl edit-config`): ha.config;
* the etcd member stopped: ha.dcs at once (Patroni cannot read etcd), the other ha checks skip
  on it, and after the ttl the stale reads say so too.

The whole suite passes on the stack before the faults and after them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from elizadb import engine
from elizadb.local import patroni
from infra.render.patroni import PATRONI_YML
from infra.topology import topology
from tests.integration.stacks import DeployedStack, deployed_stack
from tests.integration.test_verify_faults import expect, stopped_container
from verify.checks import ha
from verify.model import CheckResult
from verify.report import render_table
from verify.suite import load_outputs, run_checks

# Once in CI for time: verify's judgement of a Patroni stack does not depend on the engine.
pytestmark = [pytest.mark.integration, pytest.mark.once]

STACK = "ithac"
PORT = 52200
HA_CHECKS = {c.id for c in ha.CHECKS}
Results = dict[str, CheckResult]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(
        tmp_path_factory.mktemp("hac"),
        STACK,
        PORT,
        ha={"engine": "patroni"},
        replication={"synchronous": True},
    ) as handle:
        # Patroni elects and clones by itself after the deploy: give it a moment.
        until(handle, "every ha check passing", all_pass, timeout_s=120)
        yield handle


def until(
    stack: DeployedStack,
    what: str,
    done: Callable[[Results], bool],
    timeout_s: float,
    only: tuple[str, ...] = ("ha.",),
) -> Results:
    """The results of the checks `only` selects (the ha checks by default), run again until
    `done` holds for them."""
    deadline = time.monotonic() + timeout_s
    while True:
        results = {r.id: r for r in run_checks(load_outputs(stack.outputs), only=only)}
        if done(results):
            return results
        if time.monotonic() > deadline:
            pytest.fail(
                f"not {what} within {timeout_s:g} s:\n{render_table(list(results.values()))}"
            )
        time.sleep(1.0)


def all_pass(results: Results) -> bool:
    return set(results) >= HA_CHECKS and all(r.status == "pass" for r in results.values())


def fails(check_id: str, text: str = "") -> Callable[[Results], bool]:
    def done(results: Results) -> bool:
        found = results.get(check_id)
        return found is not None and found.status == "fail" and text in found.summary

    return done


def members(stack: DeployedStack) -> list[patroni.Member]:
    """Patroni's own view (`patronictl list` in a node), independent of verify."""
    return patroni.members(stack.client, topology(stack.settings))


def container_of(stack: DeployedStack, member: str) -> str:
    return patroni.node_of(topology(stack.settings), member).name


def test_the_whole_suite_passes_on_the_patroni_stack_ha_checks_included(
    stack: DeployedStack,
) -> None:
    results = until(stack, "every check passing", all_pass, timeout_s=60, only=())
    leader = next(m.name for m in members(stack) if m.leads)
    assert results["ha.leader"].summary.startswith(f"{leader} leads (running, timeline ")


def test_a_stopped_replica_fails_ha_members_streaming(stack: DeployedStack) -> None:
    # The asynchronous replica: stopping the synchronous standby would also move that role.
    replica = next(m.name for m in members(stack) if m.role == "Replica")
    with stopped_container(stack, container_of(stack, replica)):
        results = until(stack, f"{replica} missed", fails("ha.members_streaming"), 60)
        expect(results, {"ha.members_streaming"}, says={"ha.members_streaming": replica})
    until(stack, f"{replica} streaming again", all_pass, timeout_s=120)


@contextmanager
def patched_parameter(stack: DeployedStack, name: str, value: str) -> Iterator[None]:
    """`patronictl edit-config` sets a parameter of the dynamic configuration, as an operator
    would; the declared value is set back when the block ends."""
    declared = stack.outputs["patroni"]["parameters"][name]
    leader = next(m.name for m in members(stack) if m.leads)

    def edit(to: str) -> None:
        result = engine.exec_in(
            stack.client,
            container_of(stack, leader),
            ["patronictl", "-c", PATRONI_YML, "edit-config", "-p", f"{name}={to}", "--force"],
            user="postgres",
        )
        assert result.ok, result.tail()

    edit(value)
    try:
        yield
    finally:
        edit(declared)


def test_a_patched_dynamic_configuration_fails_ha_config(stack: DeployedStack) -> None:
    assert stack.outputs["patroni"]["parameters"]["work_mem"] == "4MB"
    with patched_parameter(stack, "work_mem", "8MB"):
        results = until(stack, "the change seen", fails("ha.config"), 30)
        expect(
            results,
            {"ha.config"},
            says={
                "ha.config": "postgresql.parameters.work_mem is '8MB' in Patroni's configuration, declared '4MB'"
            },
        )
    until(stack, "the declared configuration back", all_pass, timeout_s=30)


def test_a_stopped_etcd_fails_ha_dcs_and_the_other_ha_checks_wait_on_it(
    stack: DeployedStack,
) -> None:
    (etcd,) = topology(stack.settings).etcd
    waiting = HA_CHECKS - {"ha.dcs"}
    with stopped_container(stack, etcd.name):
        # At once: the members read etcd a moment ago, but none can now.
        results = until(stack, "etcd missed", fails("ha.dcs"), 60)
        expect(
            results,
            {"ha.dcs"},
            skips=waiting,
            says={"ha.dcs": "Patroni cannot read the cluster from etcd"},
        )
        # After the ttl (20 s) no member's last read is recent any more.
        stale = "no member has reached etcd within the ttl of 20 s"
        results = until(stack, "the reads stale", fails("ha.dcs", stale), 60)
        expect(results, {"ha.dcs"}, skips=waiting, says={"ha.dcs": "lost its quorum"})
    until(stack, "a leader elected again", all_pass, timeout_s=180)
    # And the rest of the stack follows: the pooler reaches the new leader, the replicas it.
    until(stack, "every check passing", all_pass, timeout_s=120, only=())
