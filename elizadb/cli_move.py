"""`elizadb move-to-eliza1 set-aside | carry-over` (registered by elizadb/cli.py): moving a stack
from the eliza-0.1 schema profile to eliza-1; see elizadb/ops/eliza1_move.py for the steps."""

from __future__ import annotations

import argparse
from typing import Any

from infra.settings import StackSettings


def register(sub: argparse._SubParsersAction, with_stack: Any) -> None:  # type: ignore[type-arg]
    move = with_stack(
        sub.add_parser(
            "move-to-eliza1",
            help="move a 0.1 stack's rows into @elizaos/plugin-sql 1.x tables (two steps)",
        )
    )
    move.add_argument(
        "step",
        choices=["set-aside", "carry-over"],
        help="set-aside: move the 0.1 tables into schema eliza01; carry-over (after the plugin "
        "has created its tables): copy every row, count and compare",
    )
    move.set_defaults(handler=_move)


def _move(args: argparse.Namespace, settings: StackSettings) -> int:
    import psycopg

    from elizadb.cli_backup import superuser_conninfo
    from elizadb.config import project_dir
    from elizadb.ops import eliza1_move

    with psycopg.connect(superuser_conninfo(settings, project_dir()), autocommit=True) as conn:
        if args.step == "set-aside":
            eliza1_move.set_aside(conn)
            print(
                "the 0.1 tables are in schema eliza01. Next: set elizadb:schema.profile to "
                "eliza-1, run `elizadb up`, start ElizaOS once with POSTGRES_URL = "
                "nodeConnections.migrator, then `elizadb move-to-eliza1 carry-over`"
            )
        else:
            print(eliza1_move.render(eliza1_move.carry_over(conn, settings.embedding_dimensions)))
    return 0
