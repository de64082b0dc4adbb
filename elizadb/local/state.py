"""The per-stack state file of the local deploy: generated secrets, keys and certificates, kept
so that they are made once per stack. Readable by its owner only, in a folder only its owner can
enter; refused when it is not."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elizadb.errors import StateError

STATE_DIR_ENV = "ELIZADB_STATE_DIR"
_chosen_state_dir: Path | None = None


def choose_state_dir(directory: Path | None) -> None:
    """The `--state-dir DIR` option: it wins over ELIZADB_STATE_DIR."""
    global _chosen_state_dir
    _chosen_state_dir = directory


def default_state_dir() -> Path:
    """`--state-dir`, else ELIZADB_STATE_DIR, else `.elizadb` in the project folder."""
    if _chosen_state_dir is not None:
        return _chosen_state_dir
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override)
    from elizadb.config import project_dir  # the project is found only when it is needed

    return project_dir() / ".elizadb"


@dataclass(frozen=True)
class Runtime:
    """Facts of a running stack that its declaration must follow."""

    # The node a failover or switchover made primary (None: as configured).
    primary_node: str | None = None
    # Containers changed in place to match a newer declaration (a failover repoints the pooler
    # without recreating it): container name -> the spec digest it now matches.
    conforming: Mapping[str, str] = field(default_factory=dict)


class StateFile:
    def __init__(self, stack: str, directory: Path | None = None) -> None:
        self.directory = directory or default_state_dir()
        self.path = self.directory / f"{stack}.state.json"
        self.data: dict[str, Any] = self._load()
        self.dirty = False

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"version": 1, "resources": {}}
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise StateError(
                f"{self.path} has mode {mode:o}: it holds the stack's secrets and must be readable "
                f"by its owner only; run `chmod 600 {self.path}`"
            )
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StateError(f"cannot read {self.path}: {exc}") from None
        if not isinstance(data, dict) or "resources" not in data:
            raise StateError(f"{self.path} is not an eliza-db state file")
        return data

    def get(self, name: str, fingerprint: str) -> dict[str, Any] | None:
        entry = self.data["resources"].get(name)
        if entry and entry.get("fingerprint") == fingerprint:
            return dict(entry["outputs"])
        return None

    def put(self, name: str, fingerprint: str, outputs: dict[str, Any]) -> None:
        self.data["resources"][name] = {"fingerprint": fingerprint, "outputs": outputs}
        self.dirty = True

    def forget(self, name: str) -> bool:
        removed = self.data["resources"].pop(name, None) is not None
        self.dirty = self.dirty or removed
        return removed

    @property
    def runtime(self) -> Runtime:
        raw = self.data.get("runtime") or {}
        primary, conforming = raw.get("primaryNode"), raw.get("conforming") or {}
        if not (
            (primary is None or isinstance(primary, str))
            and isinstance(conforming, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in conforming.items())
        ):
            raise StateError(f"{self.path}: its runtime record is damaged: {raw!r}")
        return Runtime(primary, dict(sorted(conforming.items())))

    def set_runtime(self, runtime: Runtime) -> None:
        record: dict[str, Any] = {"conforming": dict(runtime.conforming)}
        if runtime.primary_node is not None:
            record["primaryNode"] = runtime.primary_node
        self.data["runtime"] = record
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        # Write-then-rename, created 0600 from the start: never a moment where others can read.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".state-")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self.data, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.dirty = False
