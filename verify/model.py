"""What a check is and what it returns.

A check function takes the run's `Context` and returns an `Outcome`; the runner times it and turns
it into a `CheckResult`. Most checks look at several targets (every node, every endpoint) and
collect what they see in `Findings`, which decides the status:

* any problem observed          -> fail, with every problem in the reason;
* a target could not be reached -> skip, naming the check that reports the root cause
                                   (`depends_on`), so that one stopped replica fails
                                   health.reachable instead of ten checks at once;
* a warning noted               -> warn: the stack works, but users will feel this soon (an
                                   index the memory cannot cache, a pooler that queues); a
                                   warning does not fail the run;
* otherwise                     -> pass.

The runner makes sure that a skip of the second kind is never the last word: the check it depends
on is run too, and if that one does not fail, the skip becomes a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from verify.context import Context
    from verify.outputs import Outputs

Status = Literal["pass", "warn", "fail", "skip"]
FAMILIES = (
    "schema",
    "health",
    "replication",
    "ha",
    "tls",
    "security",
    "pooler",
    "vector",
    "backups",
)


@dataclass(frozen=True)
class CheckResult:
    id: str  # stable, dotted: "schema.tables", "replication.streaming", ...
    family: str  # one of FAMILIES
    status: Status
    summary: str  # one line
    reason: str = ""  # on fail or warn: what is wrong, with the observed values
    fix: str = ""  # on fail or warn: what to do
    seconds: float = 0.0


@dataclass(frozen=True)
class Outcome:
    status: Status
    summary: str
    reason: str = ""
    fix: str = ""
    # For a skip caused by an unreachable target: the checks that report why.
    depends_on: tuple[str, ...] = ()


def passed(summary: str) -> Outcome:
    return Outcome("pass", summary)


def failed(summary: str, reason: str, fix: str) -> Outcome:
    return Outcome("fail", summary, reason, fix)


def skipped(summary: str) -> Outcome:
    return Outcome("skip", summary)


def warned(summary: str, reason: str, fix: str) -> Outcome:
    return Outcome("warn", summary, reason, fix)


class Unreachable(Exception):
    """A target could not be connected to. `root` is the check that reports it as a failure."""

    def __init__(self, target: str, root: str, message: str) -> None:
        super().__init__(f"{target}: {message}")
        self.target = target
        self.root = root
        self.message = message


@dataclass
class Findings:
    """What one check saw across its targets."""

    problems: list[str] = field(default_factory=list)
    unchecked: dict[str, Unreachable | tuple[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def warn(self, text: str) -> None:
        """Not wrong yet, but users will feel it: the check warns unless something fails."""
        self.warnings.append(text)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def unreachable(self, err: Unreachable) -> None:
        self.unchecked[err.target] = err

    def not_checked(self, target: str, root: str, why: str) -> None:
        """`target` could not be examined because of something `root` reports."""
        self.unchecked[target] = (root, why)

    def outcome(self, ok: str, fix: str, advice: str = "") -> Outcome:
        """fail if anything was wrong, skip if some target could not be examined, warn if a
        warning was noted, else pass.

        `ok` is the one-line summary of a pass; `fix` says what to do on a failure, `advice` on
        a warning (`fix` when not given). A failure's reason lists the warnings too.
        """
        warnings = [f"warning: {w}" for w in self.warnings]
        roots: list[str] = []
        missed: list[str] = []
        for target, why in self.unchecked.items():
            root, text = (why.root, why.message) if isinstance(why, Unreachable) else why
            roots.append(root)
            missed.append(f"{target} not checked: {text} (see {root})")
        if self.problems:
            more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            return failed(
                self.problems[0] + more, "\n".join(self.problems + missed + warnings), fix
            )
        if missed:
            summary = (
                "; ".join(m.split(":", 1)[0] for m in missed)
                + " — "
                + ", ".join(dict.fromkeys(f"see {r}" for r in roots))
            )
            return Outcome(
                "skip", summary, "\n".join(missed + warnings), "", tuple(dict.fromkeys(roots))
            )
        if self.warnings:
            more = f" (+{len(self.warnings) - 1} more)" if len(self.warnings) > 1 else ""
            return warned(self.warnings[0] + more, "\n".join(self.warnings), advice or fix)
        return passed(ok + (f" ({'; '.join(self.notes)})" if self.notes else ""))


CheckFn = Callable[["Context"], Outcome]


@dataclass(frozen=True)
class Check:
    id: str
    fn: CheckFn
    # What the check writes, if anything: such a check is skipped in read-only mode.
    writes: str = ""
    # The schema profiles (elizadb:schema.profile) the check applies to: the 0.1 schema's
    # checks mean nothing on a stack whose tables @elizaos/plugin-sql 1.x writes, and back.
    profiles: tuple[str, ...] = ("eliza-0.1", "eliza-1")
    # The check may warn: `elizadb status` runs such checks (read-only) to print the warnings.
    warns: bool = False
    # The HA engines (elizadb:ha.engine) whose stacks the check applies to: Patroni's layer
    # exists only under patroni.
    engines: tuple[str, ...] = ("builtin", "patroni")
    # The check examines the backup repository mounted on the primary (output backupMount): it
    # means nothing where the repository is on a remote pgBackRest host (backupMount "").
    needs_backup_mount: bool = False

    def applies_to(self, outputs: Outputs) -> bool:
        """Whether the check means anything on the stack these outputs describe."""
        return (
            outputs.schema_profile in self.profiles
            and outputs.ha_engine in self.engines
            and (bool(outputs.backup_mount) or not self.needs_backup_mount)
        )

    @property
    def family(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def doc(self) -> str:
        """What a pass proves: the first paragraph of the check function's docstring."""
        text = (self.fn.__doc__ or "").strip().split("\n\n", 1)[0]
        return " ".join(text.split())
