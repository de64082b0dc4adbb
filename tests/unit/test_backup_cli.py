"""The backup, restore, dump and maintenance commands refuse bad usage with exit code 2 and a
message, without a traceback and before any container is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def elizadb(*args: str) -> subprocess.CompletedProcess[str]:
    # No engine: any attempt to reach one would fail differently (exit 1, "no container engine").
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}
    return subprocess.run(
        [sys.executable, "-m", "elizadb", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restore", "--latest"], "one of the arguments --into-stack --in-place is required"),
        (["restore", "--in-place"], "one of the arguments --to-time --latest is required"),
        (["restore", "--latest", "--in-place"], "add --yes-destroy-current-data to confirm"),
        (["restore", "--latest", "--in-place", "--into-stack", "x"], "not allowed with argument"),
        (
            ["restore", "--latest", "--to-time", "2025-01-01T00:00:00Z", "--in-place"],
            "not allowed with argument",
        ),
        (
            [
                "restore",
                "--to-time",
                "2025-01-01 00:00",
                "--in-place",
                "--yes-destroy-current-data",
            ],
            "give the time zone",
        ),
        (
            ["restore", "--latest", "--into-stack", "x", "--yes-destroy-current-data"],
            "goes with --in-place only",
        ),
        (["restore", "--latest", "--into-stack", "nosuchstack"], "no such stack file"),
        (["backup", "--type", "weekly"], "invalid choice: 'weekly'"),
        (["dump"], "the following arguments are required: --out"),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(args: list[str], message: str) -> None:
    result = elizadb(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_commands_are_listed_in_help() -> None:
    result = elizadb("--help")
    for command in ("backup", "backups", "dump", "restore", "maintenance"):
        assert command in result.stdout


def test_without_an_engine_the_error_says_so() -> None:
    result = elizadb("backups")
    assert result.returncode == 1
    assert "no container engine answers" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        # Into itself: refused, naming --in-place.
        (["--stack", "hat", "--into-stack", "hat"], 2, "use --in-place"),
        # Any engine into any engine, on one host or several: it gets as far as asking the
        # engines (of the new stack's hosts first, which must hold nothing of it).
        (["--stack", "plain", "--into-stack", "hat"], 1, "no container engine answers"),
        (["--stack", "hat", "--into-stack", "plain"], 1, "no container engine answers"),
        (["--stack", "plain", "--into-stack", "spread"], 1, "nonexistent-a.sock"),
        (["--stack", "spread", "--into-stack", "plain"], 1, "no container engine answers"),
    ],
)
def test_a_restore_into_another_stack_takes_any_engine_and_placement_but_itself(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    """Only a restore into the stack itself is refused before any engine is asked."""
    (tmp_path / "Pulumi.hat.yaml").write_text("config:\n  elizadb:ha:\n    engine: patroni\n")
    (tmp_path / "Pulumi.plain.yaml").write_text("config: {}\n")
    (tmp_path / "Pulumi.spread.yaml").write_text(
        "config:\n  elizadb:ha:\n    engine: patroni\n  elizadb:hosts:\n"
        "    a: {url: 'unix:///nonexistent-a.sock', address: 10.20.0.11}\n"
        "    b: {url: 'unix:///nonexistent-b.sock', address: 10.20.0.12}\n"
    )
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}
    result = subprocess.run(
        [sys.executable, "-m", "elizadb", "restore", "--latest", *args],
        cwd=REPO,
        env={**env, "ELIZADB_PROJECT_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr
