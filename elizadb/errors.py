"""The one small error hierarchy of eliza-db.

The CLI maps these to exit codes: ConfigError and UsageError → 2 (nothing was changed),
every other ElizaDbError → 1. A traceback is never shown for them.
"""


class ElizaDbError(Exception):
    """Base of every error eliza-db raises on purpose."""

    exit_code = 1


class UsageError(ElizaDbError):
    """A command was called with arguments that do not make sense."""

    exit_code = 2


class ConfigError(ElizaDbError):
    """The stack configuration is invalid. Raised before anything is deployed.

    `problems` holds one line per problem, each naming the key path, the bad value and what is
    allowed, so that every problem is reported at once.
    """

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration in {source} ({count}):\n{lines}")


class EngineError(ElizaDbError):
    """The container engine could not be reached or refused an operation."""


class DeployError(ElizaDbError):
    """A container did not become ready, or a job it ran failed."""


class StateError(ElizaDbError):
    """The local state file is missing, unreadable or unsafe."""
