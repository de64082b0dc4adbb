"""Changes a user makes in Pulumi.<stack>.yaml apply the same under `pulumi up` and `elizadb up`
(issue 9, item 5), against real containers: a new resources.memory replaces the containers
(the program asks Pulumi for that too: Podman's API cannot update a container in place), with
the data kept; a new network.subnet moves the whole stack onto a new network, which keeps
serving."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.integration.stacks import DeployedStack, deployed_stack, stack_settings

pytestmark = pytest.mark.integration
STACK, PORT_BASE = "p9mem", 48300
PRIMARY = f"elizadb-{STACK}-primary"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(tmp_path_factory.mktemp("inplace"), STACK, PORT_BASE, replicas=0) as handle:
        yield handle


def _connect(stack: DeployedStack) -> psycopg.Connection:  # type: ignore[type-arg]
    # A replaced container is ready inside before its published port forwards: Podman has been
    # seen to take up to ~30 s after a restart or replace (the deploy's readiness job checks the
    # node from inside the network). A bounded wait, then the last error.
    deadline = time.monotonic() + 60
    while True:
        try:
            return psycopg.connect(
                stack.connections["superuser"], connect_timeout=5, autocommit=True
            )
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _write_and_read(stack: DeployedStack, value: str) -> None:
    with _connect(stack) as c:
        c.execute("CREATE TABLE IF NOT EXISTS p9_probe (v text)")
        c.execute("INSERT INTO p9_probe VALUES (%s)", (value,))
        rows = c.execute("SELECT v FROM p9_probe ORDER BY v").fetchall()
    assert (value,) in rows


def test_a_new_memory_limit_replaces_the_container_and_keeps_the_data(
    stack: DeployedStack,
) -> None:
    _write_and_read(stack, "before-memory")
    before = stack.client.containers.get(PRIMARY)
    assert before.attrs["HostConfig"]["Memory"] == 512 * 1024**2
    report = stack.up(
        stack_settings(
            STACK, PORT_BASE, replicas=0, resources={"memory": "768m", "shmSize": "256m"}
        )
    )
    assert PRIMARY in report.replaced
    after = stack.client.containers.get(PRIMARY)
    assert after.id != before.id
    assert after.attrs["HostConfig"]["Memory"] == 768 * 1024**2
    assert after.attrs["HostConfig"]["MemorySwap"] == 768 * 1024**2  # no swap on top
    assert not stack.up().changed
    _write_and_read(stack, "after-memory")


def test_a_new_subnet_moves_the_stack_onto_a_new_network(stack: DeployedStack) -> None:
    subnet = "10.213.77.0/24"
    report = stack.up(
        stack_settings(
            STACK,
            PORT_BASE,
            replicas=0,
            resources={"memory": "768m", "shmSize": "256m"},
            network={"subnet": subnet},
        )
    )
    # Its containers leave the old network first: all are made again on the new one.
    assert PRIMARY in report.created + report.replaced
    primary = stack.client.containers.get(PRIMARY)
    address = next(iter(primary.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    _write_and_read(stack, "after-subnet")  # the data volume came along
    assert not stack.up().changed
