"""The base of eliza-db's one small error hierarchy, at the bottom layer (infra).

The errors of the layers above derive from ElizaDbError: verify/errors.py, elizadb/errors.py
(which re-exports these three, so `from elizadb.errors import ...` keeps working).

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
