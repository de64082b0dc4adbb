"""Errors of the verify suite (part of eliza-db's one error tree, see infra/errors.py)."""

from __future__ import annotations

from infra.errors import ElizaDbError


class VerifyError(ElizaDbError):
    """The suite could not run at all (as opposed to a check that failed)."""


class OutputsError(VerifyError):
    """The stack outputs are missing a key, masked or malformed. Raised by `load_outputs`
    before any connection is made; `problems` names every bad key at once."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"unusable stack outputs from {source}:\n{lines}")
