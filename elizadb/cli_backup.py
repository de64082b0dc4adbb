"""Subcommands: see elizadb/cli_ops.py."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction, with_stack: Any) -> None:  # type: ignore[type-arg]
    """Nothing yet."""
