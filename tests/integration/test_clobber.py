"""A second checkout cannot clobber a running stack (issue 9). Against real containers: a stack
deployed with one state folder; `elizadb up` and `elizadb down` from another state folder (a
second clone) refuse with exit 2 before touching anything, and the stack keeps serving; after
`elizadb state export | import` the same `up` changes nothing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from infra.components.common import LABEL_STACK_ID, stack_filter
from tests.integration.stacks import DeployedStack, deployed_stack
from tests.integration.test_backup import write_stack_file

pytestmark = pytest.mark.integration
STACK, PORT_BASE = "p9clone", 48100
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(tmp_path_factory.mktemp("first"), STACK, PORT_BASE, replicas=0) as handle:
        yield handle


def elizadb(state_dir: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user of the other clone runs it: its own project and state folders."""
    return subprocess.run(
        [sys.executable, "-m", "elizadb", "-C", str(project), "--state-dir", str(state_dir), *args],
        cwd=project,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _containers(stack: DeployedStack) -> dict[str, tuple[str, str]]:
    listed = stack.client.containers.list(all=True, filters=stack_filter(STACK))
    return {c.name: (c.id, c.status) for c in listed}


def _serves(stack: DeployedStack) -> None:
    with psycopg.connect(stack.connections["owner"], connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM memories").fetchone() is not None


def test_a_second_clone_cannot_clobber_the_stack_and_can_adopt_it(
    stack: DeployedStack, tmp_path: Path
) -> None:
    first_state = stack.state_dir / "state"
    clone = tmp_path / "clone"
    clone.mkdir()
    write_stack_file(clone, stack.settings)
    clone_state = clone / ".elizadb"
    before = _containers(stack)
    running = {name for name, (_, status) in before.items() if status == "running"}
    jobs = {f"elizadb-{STACK}-bootstrap", f"elizadb-{STACK}-ready"}  # ran to completion
    assert running == set(before) - jobs, before
    labels = stack.client.containers.get(f"elizadb-{STACK}-primary").labels
    assert labels[LABEL_STACK_ID]

    for command in (["up", "--stack", STACK], ["down", "--stack", STACK]):
        refused = elizadb(clone_state, clone, *command)
        assert refused.returncode == 2, refused.stderr
        assert "Traceback" not in refused.stderr
        assert f"stack '{STACK}' already exists" in refused.stderr
        assert "elizadb state import" in refused.stderr
        assert _containers(stack) == before, f"`{' '.join(command)}` touched the stack"
    assert not (clone_state / f"{STACK}.state.json").exists()
    _serves(stack)

    exported = tmp_path / "p9clone.state"
    done = elizadb(first_state, clone, "state", "export", "--stack", STACK, "--out", str(exported))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    secret = stack.connections["owner"].split(":")[2].split("@")[0]
    assert secret not in done.stdout + done.stderr
    done = elizadb(clone_state, clone, "state", "import", "--from", str(exported))
    assert done.returncode == 0, done.stderr

    again = elizadb(clone_state, clone, "up", "--stack", STACK)
    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stderr, again.stderr
    assert _containers(stack) == before
    _serves(stack)
