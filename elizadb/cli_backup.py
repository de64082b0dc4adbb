"""Subcommands for backups, restore and maintenance (registered by elizadb/cli.py):

elizadb backup      [--type full|diff|incr]            one pgBackRest backup now
elizadb backups     [--json]                           what the repository holds
elizadb dump        --out FILE                         pg_dump -Fc of the Eliza database
elizadb restore     (--to-time T | --latest)
                    (--into-stack NAME | --in-place --yes-destroy-current-data)
elizadb maintenance [--json] [--no-reindex]            VACUUM ANALYZE, REINDEX, reports
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from elizadb.errors import UsageError
from infra.settings import StackSettings


def _say() -> Any:
    start = time.monotonic()

    def say(message: str) -> None:
        sys.stderr.write(f"[{time.monotonic() - start:6.1f}s] {message}\n")
        sys.stderr.flush()

    return say


def register(sub: argparse._SubParsersAction, with_stack: Any) -> None:  # type: ignore[type-arg]
    backup = with_stack(sub.add_parser("backup", help="take a pgBackRest backup now"))
    backup.add_argument(
        "--type",
        dest="backup_type",
        choices=("full", "diff", "incr"),
        default="incr",
        help="incr (the default) builds on the newest backup; full when none exists",
    )
    backup.set_defaults(handler=_backup)

    backups = with_stack(sub.add_parser("backups", help="list backups: size, time, WAL range"))
    backups.add_argument("--json", action="store_true", help="print JSON")
    backups.set_defaults(handler=_backups)

    dump = with_stack(
        sub.add_parser("dump", help="logical export (pg_dump -Fc) of the Eliza database")
    )
    dump.add_argument("--out", required=True, metavar="FILE", help="where to write the dump")
    dump.set_defaults(handler=_dump)

    restore = with_stack(
        sub.add_parser(
            "restore",
            help="restore from the backup repository, to a point in time or the latest",
        )
    )
    point = restore.add_mutually_exclusive_group(required=True)
    point.add_argument(
        "--to-time",
        metavar="T",
        help="ISO 8601 time with zone, e.g. 2025-05-01T12:00:00Z: exactly the "
        "transactions committed before it",
    )
    point.add_argument("--latest", action="store_true", help="everything in the WAL archive")
    where = restore.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--into-stack",
        metavar="NAME",
        help="deploy a new stack NAME (Pulumi.NAME.yaml) from a copy of the repository",
    )
    where.add_argument(
        "--in-place",
        action="store_true",
        help="replace this stack's data (needs --yes-destroy-current-data)",
    )
    restore.add_argument(
        "--yes-destroy-current-data",
        action="store_true",
        help="confirm that --in-place discards everything written after the target",
    )
    restore.add_argument(
        "--no-backup-after",
        action="store_true",
        help="skip the full backup of the new timeline taken at the end",
    )
    restore.add_argument("--json", action="store_true", help="print the report as JSON")
    restore.set_defaults(handler=_restore)

    maintenance = with_stack(
        sub.add_parser(
            "maintenance",
            help="VACUUM ANALYZE, REINDEX vector indexes, retention, usage and bloat reports",
        )
    )
    maintenance.add_argument("--no-reindex", action="store_true", help="skip REINDEX CONCURRENTLY")
    maintenance.add_argument("--json", action="store_true", help="print JSON")
    maintenance.set_defaults(handler=_maintenance)


def _engines(settings: StackSettings) -> Any:
    """One engine, or on a stack on several hosts the engine of each part's host."""
    from elizadb.engine import connect
    from elizadb.local.hosts import stack_engines

    return stack_engines(settings) if settings.multi_host else connect()


def _backup(args: argparse.Namespace, settings: StackSettings) -> int:
    from elizadb.ops import backup

    say = _say()
    say(f"{args.backup_type} backup of stack {settings.stack}")
    made, _ = backup.take_backup(_engines(settings), settings, args.backup_type)
    say(
        f"backup {made.label} ({made.type}) done in {made.seconds:.0f}s: database "
        f"{backup.human_bytes(made.size)}, stored {backup.human_bytes(made.repo_size)}, "
        f"WAL {made.wal_start}..{made.wal_stop}"
    )
    print(made.label)
    return 0


def _backups(args: argparse.Namespace, settings: StackSettings) -> int:
    from elizadb.ops import backup

    client = _engines(settings)
    catalog = backup.read_catalog(client, settings, backup.stack_image(settings))
    status = backup.agent_status(client, settings)
    if args.json:
        print(json.dumps(backup.catalog_json(catalog, status), indent=2))
    else:
        print(backup.render_table(catalog, status))
    return 0


def _dump(args: argparse.Namespace, settings: StackSettings) -> int:
    from elizadb.ops import backup

    result = backup.dump(_engines(settings), settings, Path(args.out))
    _say()(
        f"wrote {result.path} ({backup.human_bytes(result.bytes)}) from {result.node} in "
        f"{result.seconds:.1f}s; restore it with pg_restore -d DATABASE {result.path}"
    )
    return 0


def _restore(args: argparse.Namespace, settings: StackSettings) -> int:
    from elizadb.config import load_stack, project_dir
    from elizadb.ops import restore, restore_into, restore_patroni

    target = restore.RecoveryTarget(None if args.latest else restore.parse_time(args.to_time))
    say = _say()
    if args.in_place:
        if not args.yes_destroy_current_data:
            raise UsageError(
                "--in-place replaces the stack's data and loses everything written after the "
                "target; add --yes-destroy-current-data to confirm, or use --into-stack NAME"
            )
        how = restore_patroni if settings.patroni else restore
        report = how.restore_in_place(
            settings, target, say, project_dir(), backup_after=not args.no_backup_after
        )
    else:
        if args.yes_destroy_current_data:
            raise UsageError("--yes-destroy-current-data goes with --in-place only")
        dest = load_stack(args.into_stack)
        report = restore_into.restore_into_stack(
            settings, dest, target, say, project_dir(), backup_after=not args.no_backup_after
        )
    if args.json:
        print(json.dumps(report.__dict__, indent=2))
    else:
        timings = ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
        print(
            f"stack {report.stack}: {report.node} restored to {report.target} from backup set "
            f"{report.backup_set or '?'}; {timings}"
            + (f"; new full backup {report.new_backup}" if report.new_backup else "")
        )
    return 0


def superuser_conninfo(settings: StackSettings, project_dir: Path) -> str:
    """The superuser's read-write URI from the stack outputs, for the Eliza database, with the
    CA file (written by `elizadb up` into the project folder) as an absolute path."""
    from elizadb.local import deploy

    uri = deploy.outputs(settings, show_secrets=True)["connections"]["superuser"]
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query))
    root = query.get("sslrootcert")
    if root and not Path(root).is_absolute():
        query["sslrootcert"] = str(project_dir / root)
    return str(urlunsplit(parts._replace(path=f"/{settings.database}", query=urlencode(query))))


def _maintenance(args: argparse.Namespace, settings: StackSettings) -> int:
    import psycopg

    from elizadb.config import project_dir
    from elizadb.ops import maintenance

    with psycopg.connect(superuser_conninfo(settings, project_dir()), autocommit=True) as conn:
        report = maintenance.run(conn, settings, reindex=not args.no_reindex)
    if args.json:
        print(json.dumps(maintenance.to_json(report), indent=2))
    else:
        print(maintenance.render(report))
    return 0
