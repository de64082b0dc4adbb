"""Drill results for people (a table and a timeline picture) and machines (JSON)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from html import escape
from typing import Protocol

from elizadb.drills.failover import DrillResult
from elizadb.drills.hosts import HostDrillResult

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def summary(results: Sequence[DrillResult]) -> dict[str, object]:
    rtos = [r.rto_s for r in results if not math.isnan(r.rto_s)]
    return {
        "runs": len(results),
        "rpo_rows_max": max((r.missing for r in results), default=0),
        "rpo_zero_every_time": all(r.missing == 0 for r in results),
        "most_advanced_promoted_every_time": all(r.promoted_most_advanced for r in results),
        "single_primary_every_time": all(r.primaries_after == 1 for r in results),
        "rto_s_median": round(statistics.median(rtos), 3) if rtos else None,
        "rto_s_p95": round(p95(rtos), 3) if rtos else None,
        "rto_s_max": round(max(rtos), 3) if rtos else None,
    }


def render_json(results: Sequence[DrillResult]) -> str:
    return json.dumps(
        {"summary": summary(results), "runs": [r.as_dict() for r in results]}, indent=2
    )


def render_table(results: Sequence[DrillResult]) -> str:
    head = (
        "| # | kind | sync | old → new primary | most advanced | acked | RPO rows | RTO s |"
        " detect s | promoted s | pooler s | rejoin s | primaries |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for i, r in enumerate(results, 1):
        e = r.events
        rows.append(
            f"| {i} | {r.kind} | {'on' if r.synchronous else 'off'} | {r.old_primary} → "
            f"{r.new_primary} | {', '.join(r.most_advanced)} | {r.acked} | {r.missing} | "
            f"{r.rto_s:.2f} | {e.get('detected', 0):.2f} | {e.get('promote', 0):.2f} | "
            f"{e.get('repoint_pooler', 0):.2f} | {r.rejoin_s:.1f} | {r.primaries_after} |"
        )
    s = summary(results)
    tail = (
        f"\n{s['runs']} runs: RPO 0 every time: {s['rpo_zero_every_time']}; most advanced standby "
        f"promoted every time: {s['most_advanced_promoted_every_time']}; one primary after every "
        f"run: {s['single_primary_every_time']}; RTO median {s['rto_s_median']} s, p95 "
        f"{s['rto_s_p95']} s, max {s['rto_s_max']} s.\n"
    )
    return head + "\n".join(rows) + "\n" + tail


class Timeline(Protocol):
    """What the picture draws of a drill (DrillResult, HostDrillResult)."""

    @property
    def old_primary(self) -> str: ...
    @property
    def new_primary(self) -> str: ...

    acks: list[tuple[float, str, str, int]]
    events: dict[str, float]
    rto_s: float
    missing: int


def render_svg(
    results: Sequence[Timeline],
    window: tuple[float, float] = (-2.0, 6.0),
    marks: Sequence[str] = ("detected", "promote", "repoint_pooler"),
) -> str:
    """One lane per run: a tick per acknowledged write, coloured by the node that served it,
    the RTO gap shaded, and the steps of the failover (`marks`, from its events) marked."""
    left, right, lane, top = 175, 40, 56, 40
    width = 980
    height = top + lane * len(results) + 50
    lo, hi = window
    scale = (width - left - right) / (hi - lo)

    def x(t: float) -> float:
        return left + (min(max(t, lo), hi) - lo) * scale

    nodes = sorted({a[1] for r in results for a in r.acks})
    colour = {n: COLOURS[i % len(COLOURS)] for i, n in enumerate(nodes)}
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            'font-family="sans-serif" font-size="11">'
        ),
        f'<rect width="{width}" height="{height}" fill="white"/>',
        (
            f'<text x="{left}" y="18" font-size="13">Acknowledged writes through the pooler around '
            "the fault (t = 0); shaded: old primary's last ack to the new one's first (RTO)</text>"
        ),
    ]
    for second in range(math.ceil(lo), math.floor(hi) + 1):
        out.append(
            f'<line x1="{x(second)}" y1="{top - 6}" x2="{x(second)}" y2="{height - 40}" stroke="#eee"/>'
        )
        out.append(f'<text x="{x(second)}" y="{height - 26}" text-anchor="middle">{second}s</text>')
    for i, r in enumerate(results):
        y = top + i * lane
        # The same gap the RTO measures: the old primary's last ack to the new one's first.
        before = [a[0] for a in r.acks if a[1] == r.old_primary and a[0] < 5]
        after = [a[0] for a in r.acks if a[1] == r.new_primary and a[0] >= 0]
        if before and after:
            out.append(
                f'<rect x="{x(before[-1])}" y="{y}" width="{x(after[0]) - x(before[-1])}" '
                f'height="{lane - 14}" fill="#fde0dd"/>'
            )
        label = f"#{i + 1} {r.old_primary}→{r.new_primary}"
        out.append(f'<text x="8" y="{y + 14}">{escape(label)}</text>')
        out.append(
            f'<text x="8" y="{y + 28}" fill="#555">RTO {r.rto_s:.2f}s RPO {r.missing}</text>'
        )
        for t, node, _, _ in r.acks:
            if lo <= t <= hi:
                out.append(
                    f'<line x1="{x(t):.1f}" y1="{y + 4}" x2="{x(t):.1f}" y2="{y + 24}" '
                    f'stroke="{colour[node]}" stroke-width="1"/>'
                )
        steps = [(name, t) for name, t in r.events.items() if lo <= t <= hi and name in marks]
        for k, (name, t) in enumerate(steps):
            out.append(
                f'<line x1="{x(t):.1f}" y1="{y}" x2="{x(t):.1f}" y2="{y + lane - 14}" '
                'stroke="black" stroke-dasharray="2,2"/>'
            )
            # staggered, so that steps close together do not print over each other
            out.append(
                f'<text x="{x(t) + 2:.1f}" y="{y + 31 + 8 * k}" font-size="9">{escape(name)}</text>'
            )
    legend_y = height - 10
    for j, node in enumerate(nodes):
        out.append(
            f'<rect x="{left + j * 160}" y="{legend_y - 9}" width="10" height="10" fill="{colour[node]}"/>'
        )
        out.append(
            f'<text x="{left + j * 160 + 14}" y="{legend_y}">served by {escape(node)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def host_summary(results: Sequence[HostDrillResult]) -> dict[str, object]:
    rtos = [r.rto_s for r in results if not math.isnan(r.rto_s)]
    return {
        "runs": len(results),
        "rpo_rows_max": max((r.missing for r in results), default=0),
        "rpo_zero_every_time": all(r.missing == 0 for r in results),
        "overlapping_acks_total": sum(r.overlapping for r in results),
        "rto_s_median": round(statistics.median(rtos), 3) if rtos else None,
        "rto_s_p95": round(p95(rtos), 3) if rtos else None,
        "rto_s_max": round(max(rtos), 3) if rtos else None,
    }


def render_host_json(results: Sequence[HostDrillResult]) -> str:
    return json.dumps(
        {"summary": host_summary(results), "runs": [r.as_dict() for r in results]}, indent=2
    )


def render_host_table(results: Sequence[HostDrillResult]) -> str:
    head = (
        "| # | kind | host | old → new leader | pooled acks | isolated acks | overlapping |"
        " RPO rows | RTO s | new leader s | first write s | rejoined s | etcd leader's host |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = [
        f"| {i} | {r.kind} | {r.host} | {r.old_leader} → {r.new_leader} | {r.acked} | "
        f"{r.isolated_acked} | {r.overlapping} | {r.missing} | {r.rto_s:.2f} | "
        f"{r.events.get('new_leader', 0):.1f} | {r.events.get('first_write_after', 0):.1f} | "
        f"{r.events.get('rejoined', 0):.1f} | {r.etcd_leader_host or '?'} |"
        for i, r in enumerate(results, 1)
    ]
    s = host_summary(results)
    tail = (
        f"\n{s['runs']} runs: RPO 0 every time: {s['rpo_zero_every_time']}; acknowledgements of "
        f"two nodes at once: {s['overlapping_acks_total']}; RTO median {s['rto_s_median']} s, "
        f"p95 {s['rto_s_p95']} s, max {s['rto_s_max']} s.\n"
    )
    return head + "\n".join(rows) + "\n" + tail
