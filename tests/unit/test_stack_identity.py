"""A stack's resources carry the identity of the state that made them; a command refuses when
the engine holds resources the state at hand did not make. State moves between checkouts only on
purpose (`elizadb state export | import`), stays 0600 and is never printed; the project and its
state are found as the Pulumi CLI finds a project."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from elizadb import cli
from elizadb.config import choose_project_dir, project_dir
from elizadb.errors import ElizaDbError, StateError, UsageError
from elizadb.local import identity, state_transfer
from elizadb.local.capture import declare
from elizadb.local.state import StateFile, choose_state_dir
from infra.components.common import LABEL_STACK, LABEL_STACK_ID
from infra.settings import load_settings

CONTAINER = "docker:index/container:Container"


def _state(directory: Path, stack: str = "dev") -> StateFile:
    state = StateFile(stack, directory)
    declare(load_settings(stack, {}, "test"), state)
    state.save()
    return state


def test_every_container_volume_and_network_carries_the_stack_id(tmp_path: Path) -> None:
    state = StateFile("dev", tmp_path)
    declaration = declare(load_settings("dev", {}, "test"), state)
    stack_id = identity.state_stack_id(state)
    assert stack_id and len(stack_id) == 36
    kinds = ("container:Container", "volume:Volume", "network:Network")
    resources = [r for r in declaration.resources if r.typ.split("/")[-1] in kinds]
    assert len(resources) == 7 + 7 + 1
    for resource in resources:
        labels = {item["label"]: item["value"] for item in resource.inputs["labels"]}
        assert labels[LABEL_STACK_ID] == stack_id, resource.name
        assert labels[LABEL_STACK] == "dev", resource.name


class _Item:
    def __init__(self, name: str, labels: dict[str, str]) -> None:
        self.name = name
        self.labels = labels
        self.attrs = {"Labels": labels}


class _Listing:
    def __init__(self, items: list[_Item]) -> None:
        self.items = items

    def list(self, **_: Any) -> list[_Item]:
        return self.items


class _Engine:
    """What the engine lists for the stack's label filter."""

    def __init__(self, stack_id: str | None, containers: int = 1, volumes: int = 1) -> None:
        labels = {LABEL_STACK: "dev", **({LABEL_STACK_ID: stack_id} if stack_id else {})}
        self.containers = _Listing([_Item(f"c{i}", labels) for i in range(containers)])
        self.volumes = _Listing([_Item(f"v{i}", labels) for i in range(volumes)])
        self.networks = _Listing([])


def test_resources_of_another_state_are_refused(tmp_path: Path) -> None:
    ours = _state(tmp_path / "a")
    with pytest.raises(identity.ForeignStackError) as refused:
        identity.check_owned(_Engine("another-id"), "dev", ours)  # type: ignore[arg-type]
    assert refused.value.exit_code == 2
    message = str(refused.value)
    assert "stack 'dev' already exists" in message and "another-id" in message
    assert "elizadb state import" in message and "Nothing was changed" in message


def test_resources_found_with_no_state_are_refused(tmp_path: Path) -> None:
    with pytest.raises(identity.ForeignStackError) as refused:
        identity.check_owned(_Engine("some-id"), "dev", StateFile("dev", tmp_path))  # type: ignore[arg-type]
    assert "has no state for it" in str(refused.value)


def test_own_and_pre_identity_resources_are_accepted(tmp_path: Path) -> None:
    ours = _state(tmp_path)
    identity.check_owned(_Engine(identity.state_stack_id(ours)), "dev", ours)  # type: ignore[arg-type]
    identity.check_owned(_Engine(None), "dev", ours)  # type: ignore[arg-type]
    identity.check_owned(_Engine(None, 0, 0), "dev", StateFile("dev", tmp_path / "new"))  # type: ignore[arg-type]


def test_export_is_0600_and_import_restores_the_same_state(tmp_path: Path) -> None:
    choose_state_dir(tmp_path / "a")
    try:
        ours = _state(tmp_path / "a")
        out = tmp_path / "dev.export"
        state_transfer.export_state("dev", str(out))
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        choose_state_dir(tmp_path / "b")
        imported = state_transfer.import_state(str(out), "dev", force=False)
        assert imported.path == tmp_path / "b" / "dev.state.json"
        assert json.loads(imported.path.read_text()) == ours.data
        assert stat.S_IMODE(imported.path.stat().st_mode) == 0o600
        # importing the same state again is fine; another stack id's state is not overwritten
        state_transfer.import_state(str(out), None, force=False)
        other = tmp_path / "other.export"
        choose_state_dir(tmp_path / "c")
        _state(tmp_path / "c")
        state_transfer.export_state("dev", str(other))
        choose_state_dir(tmp_path / "b")
        with pytest.raises(UsageError, match="already holds state for stack 'dev'"):
            state_transfer.import_state(str(other), None, force=False)
        state_transfer.import_state(str(other), None, force=True)
    finally:
        choose_state_dir(None)


def test_export_never_prints_to_a_terminal_and_import_refuses_a_readable_file(
    tmp_path: Path,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    choose_state_dir(tmp_path)
    try:
        _state(tmp_path)
        terminal = Terminal()
        with pytest.raises(UsageError, match="not printed to a terminal"):
            state_transfer.export_state("dev", "-", terminal)
        assert terminal.getvalue() == ""
        pipe = io.StringIO()
        state_transfer.export_state("dev", "-", pipe)
        exported = tmp_path / "open.export"
        exported.write_text(pipe.getvalue())
        exported.chmod(0o644)
        with pytest.raises(StateError, match="must be readable by its owner only"):
            state_transfer.import_state(str(exported), None, force=False)
        with pytest.raises(UsageError, match="exists"):
            state_transfer.export_state("dev", str(exported))
    finally:
        choose_state_dir(None)


def test_the_cli_state_commands_print_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = _state(tmp_path / "a")
    out = tmp_path / "x.export"
    try:
        code = cli.main(
            [
                "-C",
                str(tmp_path),
                "--state-dir",
                str(tmp_path / "a"),
                "state",
                "export",
                "--stack",
                "dev",
                "--out",
                str(out),
            ]
        )
        assert code == 0
        code = cli.main(
            [
                "--state-dir",
                str(tmp_path / "b"),
                "-C",
                str(tmp_path),
                "state",
                "import",
                "--from",
                str(out),
            ]
        )
        assert code == 0
    finally:
        choose_state_dir(None)
        choose_project_dir(None)
    printed = capsys.readouterr()
    secrets = [e["outputs"].get("result", "") for e in ours.data["resources"].values()]
    assert all(s not in printed.out + printed.err for s in secrets if s)
    assert (tmp_path / "b" / "dev.state.json").exists()


def test_the_project_is_found_upward_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ELIZADB_PROJECT_DIR", raising=False)
    (tmp_path / "Pulumi.yaml").write_text("name: elizadb\n")
    deep = tmp_path / "agents" / "one"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert project_dir() == tmp_path
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ElizaDbError, match=r"no Pulumi\.yaml in"):
        project_dir()
    choose_project_dir(tmp_path)
    try:
        assert project_dir() == tmp_path
    finally:
        choose_project_dir(None)


COMMANDS = [
    ["up"],
    ["down"],
    ["status"],
    ["outputs"],
    ["migrate"],
    ["rotate-certs"],
    ["verify"],
    ["backup"],
    ["backups"],
    ["dump", "--out", "x.dump"],
    ["restore", "--latest", "--in-place", "--yes-destroy-current-data"],
    ["maintenance"],
    ["failover"],
    ["watch"],
    ["switchover", "--to", "replica-1"],
    ["drill", "failover"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_stack_command_checks_ownership_before_it_acts(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from elizadb.local import deploy

    def foreign(settings: object, client: object = None) -> None:
        raise identity.ForeignStackError("stack 'dev' already exists on this container engine")

    def acted(*_: object, **__: object) -> None:
        raise AssertionError("the command acted before the ownership check")

    monkeypatch.setattr(deploy, "guard", foreign)
    monkeypatch.setattr(deploy, "stack_engines", acted)
    monkeypatch.setattr("elizadb.engine.connect", acted)
    assert cli.main([*command, "--stack", "dev"]) == 2
    assert "already exists" in capsys.readouterr().err
