"""What an integration test needs from the machine, and what happens when it is missing.

In CI a missing container engine (or Node) is a broken machine, not a reason to pass: the test
fails. Elsewhere it skips with the reason, and the run's last lines count the skips by reason
(tests/conftest.py). Every integration module goes through `missing` so that the two can never
disagree about what "in CI" means.
"""

from __future__ import annotations

import os
from typing import NoReturn

import docker
import pytest

from elizadb.engine import connect
from elizadb.errors import EngineError

# CI services set CI to "true", "1", "True", "yes", ...; only an explicit "no" spelling (or an
# unset/empty variable) means a developer's machine.
_NOT_CI = frozenset({"", "0", "false", "no", "off", "n", "f"})


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in _NOT_CI


def missing(what: str) -> NoReturn:
    """Fail in CI, skip elsewhere; `what` says what is missing and how to provide it."""
    if in_ci():
        pytest.fail(f"CI={os.environ.get('CI')!r} and {what}", pytrace=False)
    pytest.skip(what)


def require_engine() -> docker.DockerClient:
    """A client for DOCKER_HOST, the engine every stack deploy goes through."""
    try:
        return connect()
    except EngineError as err:
        missing(f"a container engine is needed: {err}")
