"""The `elizadb` command. Thin: parse arguments, load settings, call the operation, map errors to
exit codes (2 for usage and configuration, 1 for failures) without a traceback."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from elizadb import cli_backup, cli_drill, cli_move
from elizadb.config import choose_project_dir, engine_host, load_stack, project_dir
from elizadb.errors import ElizaDbError, EngineError
from elizadb.local.state import choose_state_dir
from infra.settings import StackSettings

if TYPE_CHECKING:
    from infra.settings import StackSettings


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"elizadb: {message}", file=sys.stderr)
        raise SystemExit(2)


def _progress() -> Callable[[str], None]:
    start = time.monotonic()

    def say(message: str) -> None:
        # One write per line: containers are waited for from several threads.
        sys.stderr.write(f"[{time.monotonic() - start:6.1f}s] {message}\n")
        sys.stderr.flush()

    return say


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="elizadb", description="Deploy and verify the PostgreSQL of ElizaOS agents."
    )
    parser.add_argument(
        "-C",
        dest="project",
        metavar="DIR",
        type=Path,
        help="the project folder (with Pulumi.yaml); default: the working directory or the "
        "nearest folder above it that has one",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="where the local state is kept (default: $ELIZADB_STATE_DIR, else <project>/.elizadb)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_stack(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--stack", default="dev", help="stack name: reads Pulumi.<stack>.yaml (default dev)"
        )
        return p

    with_stack(sub.add_parser("up", help="deploy or update the stack locally (Docker API)"))
    with_stack(sub.add_parser("status", help="each node's role, health and replication state"))
    down = with_stack(
        sub.add_parser("down", help="remove containers and network; keep data volumes")
    )
    down.add_argument(
        "--delete-volumes", action="store_true", help="also delete data and backup volumes"
    )
    outputs = with_stack(sub.add_parser("outputs", help="stack outputs, as `pulumi stack output`"))
    outputs.add_argument(
        "--json", action="store_true", help="print JSON (the default is a summary)"
    )
    outputs.add_argument(
        "--show-secrets", action="store_true", help="print connection strings in clear"
    )
    with_stack(sub.add_parser("migrate", help="apply bootstrap and sql/ migrations again"))
    with_stack(sub.add_parser("validate", help="check the stack configuration only"))
    with_stack(sub.add_parser("rotate-certs", help="issue new server certificates; data is kept"))
    verify = sub.add_parser("verify", help="check a deployed stack from its outputs alone")
    target = verify.add_mutually_exclusive_group()
    target.add_argument("--stack", default="dev", help="a locally deployed stack (default dev)")
    target.add_argument(
        "--outputs",
        metavar="FILE",
        help="outputs JSON, e.g. from `pulumi stack output --json --show-secrets`",
    )
    verify.add_argument(
        "--read-only", action="store_true", help="make no writes at all (production)"
    )
    verify.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ID",
        help="run only checks whose id starts with ID (repeatable)",
    )
    verify.add_argument("--json", action="store_true", help="print JSON instead of a table")
    verify.add_argument("--junit-xml", metavar="PATH", help="also write a JUnit XML report")
    state = sub.add_parser("state", help="share a stack's local state (secrets kept secret)")
    state_sub = state.add_subparsers(dest="state_command", required=True, parser_class=_Parser)
    export = with_stack(state_sub.add_parser("export", help="write the stack's state to a file"))
    export.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="a new file (mode 0600), or - for a pipe (never a terminal)",
    )
    imported = state_sub.add_parser("import", help="take a stack's state from an export")
    imported.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="FILE",
        help="the exported file (mode 0600), or - for standard input",
    )
    imported.add_argument("--stack", help="refuse unless the export holds this stack")
    imported.add_argument(
        "--force", action="store_true", help="replace state of another stack id already here"
    )
    # Operations add their own subcommands; each parser's handler(args, settings) runs it.
    for module in (cli_backup, cli_drill, cli_move):
        module.register(sub, with_stack)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ElizaDbError as err:
        print(f"elizadb: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("elizadb: interrupted", file=sys.stderr)
        return 130


def _verify(args: argparse.Namespace) -> int:
    from verify import report, suite

    if args.outputs:
        outputs = suite.load_outputs(Path(args.outputs))
    else:
        from elizadb.local import deploy

        outputs = suite.load_outputs(deploy.outputs(load_stack(args.stack), show_secrets=True))
    results = suite.run_checks(outputs, read_only=args.read_only, only=args.only)
    print(report.render_json(results) if args.json else report.render_table(results))
    if args.junit_xml:
        Path(args.junit_xml).write_text(report.render_junit(results))
    return report.exit_code(results)


def _status_warnings(settings: StackSettings) -> str:
    """What verify's warning checks say now (read-only, catalog and pooler console only: well
    under a second), for `elizadb status`."""
    from elizadb.local import deploy
    from verify import suite

    try:
        outputs = suite.load_outputs(deploy.outputs(settings, show_secrets=True))
        results = suite.run_checks(outputs, read_only=True, only=suite.warning_checks())
    except ElizaDbError as err:
        return f"verify: warnings not checked ({err})"
    warned = [r for r in results if r.status == "warn"]
    lines = [f"verify: {len(warned)} warning(s)" + (":" if warned else "")]
    for r in warned:
        lines += [f"  WARN {r.id}: {line}" for line in r.reason.splitlines()]
        lines.append(f"       fix: {r.fix}")
    # Beyond a warning (a queue past the thresholds), or not examined: the full run says why.
    failed = [f"  FAIL {r.id}: {r.summary}" for r in results if r.status == "fail"]
    unchecked = [r.id for r in results if r.status == "skip"]
    if unchecked:
        failed.append(f"  not checked: {', '.join(unchecked)}")
    if failed:
        lines += [*failed, "  run `elizadb verify` for the details"]
    return "\n".join(lines)


def _state(args: argparse.Namespace) -> int:
    from elizadb.local import state_transfer

    if args.state_command == "export":
        state = state_transfer.export_state(args.stack, args.out)
        if args.out != state_transfer.PIPE:
            print(
                f"wrote the state of stack {args.stack} ({state.path}) to {args.out}, mode 600",
                file=sys.stderr,
            )
        return 0
    state = state_transfer.import_state(args.source, args.stack, args.force)
    print(
        f"imported the state of stack {state.path.name.split('.')[0]} into {state.path}",
        file=sys.stderr,
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    choose_project_dir(args.project)
    choose_state_dir(args.state_dir)
    if args.command == "state":
        return _state(args)
    if args.command == "verify" and args.outputs:
        return _verify(args)
    from elizadb.local import deploy  # imports Pulumi; not needed for argument errors

    settings = load_stack(args.stack)
    host = engine_host(args.stack)
    if host:
        os.environ["DOCKER_HOST"] = host  # as the docker provider: the stack's host first
    if args.command != "validate":
        # Before anything is touched: the engine's resources of this stack must be ours.
        # With no engine there is nothing to take over: each command then reports it itself
        # when it needs the engine (outputs come from the state alone).
        with contextlib.suppress(EngineError):
            deploy.guard(settings)
    if args.command == "verify":
        return _verify(args)
    if getattr(args, "handler", None) is not None:
        return int(args.handler(args, settings))
    if args.command == "validate":
        print(f"Pulumi.{args.stack}.yaml is valid")
        return 0
    if args.command == "up":
        say = _progress()
        report = deploy.up(settings, say, project_dir())
        say(
            "no changes"
            if not report.changed
            else f"done: {len(report.created)} created, {len(report.replaced)} replaced, "
            f"{len(report.started)} started, {len(report.removed)} removed"
        )
        return 0
    if args.command == "down":
        deploy.down(settings, _progress(), args.delete_volumes)
        if not args.delete_volumes:
            print(
                "data volumes kept; `elizadb down --delete-volumes` deletes them", file=sys.stderr
            )
        return 0
    if args.command == "rotate-certs":
        deploy.rotate_certs(settings, _progress(), project_dir())
        return 0
    if args.command == "migrate":
        deploy.rerun_job(settings, _progress())
        return 0
    if args.command == "outputs":
        values = deploy.outputs(settings, args.show_secrets)
        if args.json:
            print(json.dumps(values, indent=2, sort_keys=True))
        else:
            for key in sorted(values):
                if key != "caCert":
                    print(f"{key:<20} {json.dumps(values[key])}")
        return 0
    if args.command == "status":
        rows = deploy.status(settings)
        header = ("NODE", "DECLARED", "STATE", "READY", "ROLE NOW", "REPLICATION")
        table = [header] + [
            (
                r.name,
                r.declared_role,
                r.state,
                "yes" if r.ready else "no",
                {None: "-", True: "standby", False: "primary"}[r.in_recovery],
                r.replication,
            )
            for r in rows
        ]
        _print_table(table)
        ready = all(r.ready for r in rows)
        print(_status_warnings(settings) if ready else "verify: not asked (a node is not ready)")
        if settings.patroni:
            ready = _patroni_status(settings) and ready
        return 0 if ready else 1
    raise AssertionError(args.command)


def _print_table(table: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _patroni_status(settings: StackSettings) -> bool:
    """Patroni's own view of its members, and the health of its store (etcd). True when one
    leader runs, every other member streams, and every etcd member is healthy."""
    from elizadb.local import patroni
    from elizadb.local.hosts import stack_engines
    from infra.topology import topology

    client, topo = stack_engines(settings), topology(settings)
    members = patroni.members(client, topo)
    print()
    _print_table(
        [
            ("PATRONI MEMBER", "ROLE", "STATE", "TIMELINE", "LAG (MB)"),
            *(
                (
                    m.name,
                    m.role,
                    m.state,
                    "-" if m.timeline is None else str(m.timeline),
                    "-" if m.lag_mb is None else f"{m.lag_mb:g}",
                )
                for m in members
            ),
        ]
    )
    etcd = patroni.etcd_health(client, topo)
    print()
    _print_table(
        [("ETCD MEMBER", "HEALTHY", "DETAIL")]
        + [(e.name, "yes" if e.healthy else "no", e.detail) for e in etcd]
    )
    leaders = [m for m in members if m.leads and m.state == "running"]
    followers_ok = all(m.state == "streaming" for m in members if not m.leads)
    return len(leaders) == 1 and followers_ok and all(e.healthy for e in etcd)
