"""`elizadb state export | import`: share a stack's local state (its secrets, keys and stack id)
with another checkout or machine on purpose. The exported file is made readable by its owner
only, and nothing of it is ever printed: to a terminal, export refuses to write."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import IO, Any

from elizadb.errors import StateError, UsageError
from elizadb.local.identity import STACK_ID_KEY, state_stack_id
from elizadb.local.state import StateFile

FORMAT = "eliza-db-state"
PIPE = "-"


def export_state(stack: str, out: str, stdout: IO[str] | None = None) -> StateFile:
    state = StateFile(stack)
    if not state.path.exists():
        raise UsageError(f"no state for stack {stack!r} in {state.directory}: nothing to export")
    document = json.dumps(
        {"format": FORMAT, "version": 1, "stack": stack, "state": state.data}, sort_keys=True
    )
    if out == PIPE:
        stream = stdout or sys.stdout
        if stream.isatty():
            raise UsageError(
                "the state holds the stack's secrets and is not printed to a terminal: "
                "pipe it (`elizadb state export --out - | ...`) or give --out FILE"
            )
        stream.write(document + "\n")
        return state
    path = Path(out)
    if path.exists():
        raise UsageError(
            f"{path} exists; export writes a new file only (remove it or pick another)"
        )
    # Created 0600 from the start: never a moment where others can read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(document + "\n")
    return state


def _read(source: str, stdin: IO[str] | None) -> dict[str, Any]:
    if source == PIPE:
        text = (stdin or sys.stdin).read()
        where = "standard input"
    else:
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise StateError(
                f"{path} has mode {mode:o}: it holds a stack's secrets and must be readable by "
                f"its owner only; run `chmod 600 {path}` (and ask who else could read it)"
            )
        text = path.read_text()
        where = str(path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where} is not an exported eliza-db state ({exc.msg})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise UsageError(f"{where} is not an exported eliza-db state (no `format: {FORMAT}`)")
    return document


def import_state(
    source: str, stack: str | None, force: bool, stdin: IO[str] | None = None
) -> StateFile:
    document = _read(source, stdin)
    exported = str(document.get("stack"))
    if stack is not None and stack != exported:
        raise UsageError(f"the export holds stack {exported!r}, not {stack!r}")
    incoming = document.get("state")
    if not isinstance(incoming, dict) or "resources" not in incoming:
        raise UsageError("the export has no state in it")
    target = StateFile(exported)
    current_id = state_stack_id(target)
    new_id = incoming["resources"].get(STACK_ID_KEY, {}).get("outputs", {}).get("result")
    if target.data["resources"] and current_id != new_id and not force:
        raise UsageError(
            f"{target.path} already holds state for stack {exported!r} (stack id "
            f"{current_id or 'none'}) and the export is of another (stack id {new_id or 'none'}): "
            "importing would forget the secrets of whatever that state deployed. Move the file "
            "away first, or add --force"
        )
    target.data = incoming
    target.dirty = True
    target.save()
    return target
