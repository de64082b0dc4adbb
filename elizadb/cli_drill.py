"""Subcommands: `failover`, `watch`, `switchover --to NODE`,
`drill failover|switchover|host-loss|partition`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from elizadb.errors import DeployError, UsageError


def _say(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def register(sub: argparse._SubParsersAction, with_stack: Any) -> None:  # type: ignore[type-arg]
    failover = with_stack(
        sub.add_parser("failover", help="promote the most advanced standby (the primary is down)")
    )
    failover.set_defaults(handler=_failover)
    watch = with_stack(
        sub.add_parser("watch", help="watch the primary and fail over by itself when it fails")
    )
    watch.add_argument("--interval", type=float, default=0.5, help="seconds between checks")
    watch.add_argument("--misses", type=int, default=3, help="failed checks before acting")
    watch.set_defaults(handler=_watch)
    switchover = with_stack(sub.add_parser("switchover", help="planned change of primary, no loss"))
    switchover.add_argument("--to", required=True, metavar="NODE", help="replica-1, primary, ...")
    switchover.set_defaults(handler=_switchover)
    drill = with_stack(
        sub.add_parser(
            "drill",
            help="rehearse a failover or switchover (Patroni: its planned switchover), or "
            "(Patroni on several hosts) the loss or partition of a host, measured",
        )
    )
    drill.add_argument("kind", choices=["failover", "switchover", "host-loss", "partition"])
    drill.add_argument(
        "--host",
        metavar="HOST",
        help="host-loss and partition: the host (default: the leader's; not the pooler's)",
    )
    drill.add_argument(
        "--hold-seconds",
        type=float,
        default=30.0,
        help="host-loss and partition: how long the fault lasts at least (default 30, more "
        "than Patroni's 20 s lease)",
    )
    drill.add_argument("--runs", type=int, default=1, help="consecutive drills (default 1)")
    drill.add_argument("--out", metavar="DIR", help="write drill.json, drill.md and drill.svg here")
    drill.add_argument(
        "--write-seconds",
        type=float,
        default=2.0,
        help="seconds of writes before the fault and after recovery (default 2)",
    )
    drill.add_argument(
        "--lag",
        action="store_true",
        help="cut the first standby off before the fault so that it is behind: the election "
        "must pass it over (failover only)",
    )
    drill.set_defaults(handler=_drill)


def _cluster(settings: Any) -> Any:
    from elizadb.engine import connect
    from elizadb.ops.failover import Cluster

    _refuse_on_patroni(settings)
    return Cluster(connect(), settings)


def _refuse_on_patroni(settings: Any) -> None:
    """eliza-db's own failover machinery (and its drills, which drive it) never runs on a stack
    whose failover Patroni decides: two deciders would be one too many."""
    if settings.patroni:
        raise UsageError(
            f"stack {settings.stack} runs Patroni (elizadb:ha.engine patroni), which detects a "
            "failed leader and promotes a replica by itself; `elizadb switchover --to NODE` "
            "moves the leader on purpose, `elizadb drill switchover` measures one, "
            "`elizadb status` shows the members"
        )


def _failover(args: argparse.Namespace, settings: Any) -> int:
    from elizadb.ops import failover as ops

    cluster = _cluster(settings)
    old = cluster.topo.current_primary
    if cluster.state(old).in_recovery is False:
        raise UsageError(
            f"{old.name} is up and primary; for a planned change use "
            "`elizadb switchover --to NODE`, or `elizadb drill failover` to rehearse one"
        )
    result = ops.failover(cluster, _say, failed=old)
    _say(f"{result.new.name} is the primary; start {old.name} again to rejoin it as a standby")
    return 0


def _watch(args: argparse.Namespace, settings: Any) -> int:
    import threading

    from elizadb.ops import failover as ops

    if args.interval <= 0 or args.misses < 1:
        raise UsageError(
            f"--interval {args.interval} / --misses {args.misses}: give positive values"
        )
    cluster = _cluster(settings)
    _say(f"watching {cluster.topo.current_primary.name} every {args.interval}s (Ctrl-C stops)")
    stop = threading.Event()
    try:
        ops.watch(cluster, _say, stop, args.interval, args.misses)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _switchover(args: argparse.Namespace, settings: Any) -> int:
    from elizadb.ops import failover as ops

    if settings.patroni:
        from elizadb.local import patroni
        from elizadb.local.hosts import stack_engines
        from infra.topology import topology

        topo = topology(settings)
        target = next((n for n in topo.nodes if args.to in (n.short, n.name)), None)
        if target is None:
            known = ", ".join(n.short for n in topo.nodes)
            raise UsageError(
                f"--to {args.to}: no such node in stack {settings.stack}; nodes: {known}"
            )
        steps = patroni.switchover(stack_engines(settings), topo, target, _say)
        _say("switchover done: " + ", ".join(f"{k} {v:.2f}s" for k, v in steps.items()))
        return 0
    cluster = _cluster(settings)
    steps = ops.switchover(cluster, cluster.node(args.to), _say)
    _say("switchover done: " + ", ".join(f"{k} {v:.2f}s" for k, v in steps.items()))
    return 0


def _write_results(out: Path, json_text: str, table: str, svg: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "drill.json").write_text(json_text)
    (out / "drill.md").write_text(table)
    (out / "drill.svg").write_text(svg)
    _say(f"wrote {out}/drill.json, drill.md, drill.svg")


def _host_drill(args: argparse.Namespace, settings: Any) -> int:
    """`drill host-loss|partition`, and `drill switchover` on a Patroni stack: Patroni decides;
    the drill applies the fault (or asks for the switchover) and measures."""
    from elizadb.drills import report
    from elizadb.drills.hosts import SWITCHOVER, run_host_drill, run_switchover_drill
    from elizadb.local import deploy
    from elizadb.local.hosts import stack_engines
    from verify.ca_file import private_ca_file

    engines = stack_engines(settings)
    outputs = deploy.outputs(settings, show_secrets=True)
    results = []
    for i in range(args.runs):
        _say(f"drill {i + 1}/{args.runs}: {args.kind}")
        with private_ca_file(outputs["caCert"]) as ca:
            if args.kind == SWITCHOVER:
                result = run_switchover_drill(
                    engines,
                    settings,
                    outputs,
                    ca,
                    _say,
                    write_before_s=args.write_seconds,
                    write_after_s=args.write_seconds,
                )
            else:
                result = run_host_drill(
                    engines,
                    settings,
                    outputs,
                    ca,
                    _say,
                    kind=args.kind,
                    host=args.host,
                    write_before_s=args.write_seconds,
                    hold_s=args.hold_seconds,
                    write_after_s=args.write_seconds,
                )
            results.append(result)
    print(report.render_host_table(results))
    if args.out:
        # A switchover's writes move within seconds of Patroni acting (which may take a few
        # seconds after the request); a host fault lasts the hold.
        if args.kind == SWITCHOVER:
            last = max(r.events.get("first_write_after", 0.0) for r in results)
            window, marks = (-2.0, last + 3), ("new_leader", "first_write_after", "rejoined")
        else:
            window = (-2.0, args.hold_seconds + 10)
            marks = ("new_leader", "first_write_after", "restored")
        svg = report.render_svg(results, window=window, marks=marks)
        _write_results(
            Path(args.out), report.render_host_json(results), report.render_host_table(results), svg
        )
    summary = report.host_summary(results)
    print(json.dumps(summary))
    return 0 if summary["rpo_zero_every_time"] and not summary["overlapping_acks_total"] else 1


def _drill(args: argparse.Namespace, settings: Any) -> int:
    from elizadb.drills import report
    from elizadb.drills.failover import run_drill
    from elizadb.engine import connect
    from elizadb.local import deploy
    from elizadb.local.state import StateFile
    from verify.ca_file import private_ca_file

    if args.runs < 1:
        raise UsageError(f"--runs {args.runs}: give 1 or more")
    if args.kind in ("host-loss", "partition") or (args.kind == "switchover" and settings.patroni):
        return _host_drill(args, settings)
    _refuse_on_patroni(settings)
    client = connect()
    results = []
    for i in range(args.runs):
        outputs = deploy.outputs(settings, show_secrets=True)
        _say(f"drill {i + 1}/{args.runs}: {args.kind}")
        lagging = None
        if args.lag and args.kind == "failover":
            primary = deploy.effective_settings(settings, StateFile(settings.stack))
            lagging = next(
                n.short for n in _cluster(primary).topo.nodes if n.short != primary.primary_node
            )
        try:
            with private_ca_file(outputs["caCert"]) as ca:
                result = run_drill(
                    client,
                    settings,
                    outputs,
                    ca,
                    _say,
                    kind=args.kind,
                    write_before_s=args.write_seconds,
                    write_after_s=args.write_seconds,
                    lagging=lagging,
                )
        except TimeoutError as exc:
            raise DeployError(f"drill {i + 1} failed: {exc}") from None
        results.append(result)
    print(report.render_table(results))
    if args.out:
        _write_results(
            Path(args.out),
            report.render_json(results),
            report.render_table(results),
            report.render_svg(results),
        )
    summary = report.summary(results)
    ok = summary["single_primary_every_time"] and summary["most_advanced_promoted_every_time"]
    if any(r.synchronous for r in results):
        ok = ok and summary["rpo_zero_every_time"]
    print(json.dumps(summary))
    return 0 if ok else 1
