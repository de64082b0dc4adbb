"""Errors of operations and the local deploy, on top of the base in infra/errors.py."""

from infra.errors import ConfigError, ElizaDbError, UsageError

__all__ = [
    "ConfigError",
    "DeployError",
    "ElizaDbError",
    "EngineError",
    "StateError",
    "UsageError",
]


class EngineError(ElizaDbError):
    """The container engine could not be reached or refused an operation."""


class DeployError(ElizaDbError):
    """A container did not become ready, or a job it ran failed."""


class StateError(ElizaDbError):
    """The local state file is missing, unreadable or unsafe."""
