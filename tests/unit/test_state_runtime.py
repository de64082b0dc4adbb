"""The runtime record of a stack's state: typed, kept across saves, read as written by earlier
versions, and refused (not guessed at) when damaged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from elizadb.errors import StateError
from elizadb.local.state import Runtime, StateFile


def test_a_new_state_has_the_configured_primary_and_nothing_conforming(tmp_path: Path) -> None:
    assert StateFile("dev", tmp_path).runtime == Runtime(None, {})


def test_the_runtime_record_survives_a_save(tmp_path: Path) -> None:
    state = StateFile("dev", tmp_path)
    state.set_runtime(Runtime("replica-2", {"elizadb-dev-pgbouncer": "abc123"}))
    state.save()
    again = StateFile("dev", tmp_path).runtime
    assert again.primary_node == "replica-2"
    assert dict(again.conforming) == {"elizadb-dev-pgbouncer": "abc123"}


def test_a_record_written_by_an_earlier_version_is_read(tmp_path: Path) -> None:
    path = tmp_path / "dev.state.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"version": 1, "resources": {}, "runtime": {"primaryNode": "replica-1"}}, handle)
    assert StateFile("dev", tmp_path).runtime == Runtime("replica-1", {})


def test_a_damaged_record_is_refused_with_the_file_named(tmp_path: Path) -> None:
    path = tmp_path / "dev.state.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"version": 1, "resources": {}, "runtime": {"conforming": ["x"]}}, handle)
    with pytest.raises(StateError, match=r"dev\.state\.json: its runtime record is damaged"):
        _ = StateFile("dev", tmp_path).runtime
