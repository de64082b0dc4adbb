"""Operations subcommands (backups, restore, maintenance, failover, switchover, drills).
Each module's `register(subparsers, with_stack)` adds parsers; each parser's
`handler(args, settings)` runs the command and returns its exit code."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from elizadb import cli_backup, cli_drill

WithStack = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def register(sub: argparse._SubParsersAction, with_stack: WithStack) -> None:  # type: ignore[type-arg]
    for module in (cli_backup, cli_drill):
        module.register(sub, with_stack)
