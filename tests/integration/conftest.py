"""Integration modules own fixed stack names and ports. Two checkouts on one machine (a second
clone, or a CI rehearsal beside a working session) must not deploy the same module's stacks at
once, so each module holds a machine-wide lock named after it while it runs."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

LOCK_DIR = Path(os.environ.get("ELIZADB_TEST_LOCK_DIR", "/tmp/elizadb-test-locks"))


@pytest.fixture(scope="module", autouse=True)
def module_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    path = LOCK_DIR / f"{request.module.__name__.rsplit('.', 1)[-1]}.lock"
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.stderr.write(f"  [lock] waiting for another run of {path.stem}\n")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
