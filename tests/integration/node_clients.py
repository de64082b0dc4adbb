"""Node.js clients driven by integration tests (tests/adapter, tests/plugin-sql): Node itself,
and node_modules installed with `npm ci` from the folder's pinned lock file, so CI on a fresh
clone needs nothing installed by hand. In CI a missing Node or npm fails the test (needs.missing)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from tests.integration.needs import missing
from tests.integration.stacks import progress

NPM_CI_TIMEOUT = 600  # measured 13-52 s from an empty npm cache; allow a slow mirror


def require_node(what: str) -> None:
    if not shutil.which("node") or not shutil.which("npm"):
        missing(f"node and npm are needed to drive {what}")
    version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        missing(f"node >= 20 is needed, found {version}")


def npm_ci(folder: Path) -> None:
    """`npm ci` from the lock file, unless node_modules already match it (npm records what it
    installed in node_modules/.package-lock.json)."""
    lock = folder / "package-lock.json"
    installed = folder / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    progress(f"npm ci in {folder.name}")
    started = time.monotonic()
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, timeout=NPM_CI_TIMEOUT, check=True
    )
    progress(f"npm ci done in {time.monotonic() - started:.0f}s")
