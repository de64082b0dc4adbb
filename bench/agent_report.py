"""The pure half of the agent-workload benchmark (bench/agent_bench.py): latency summaries,
recall, the markdown table and the SVG plots. No I/O here, so that the unit tests can check every
figure the result files show from made-up samples."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from verify.synthetic import percentile

# Turn latency and the curve's latency are reported at these percentiles.
QUANTILES = (50, 95, 99)
CALLS = ("get_by_id", "dedupe", "insert", "search", "recent")
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """count, mean and the nearest-rank p50/p95/p99 of latencies in milliseconds (observed
    values, never interpolated: a p99 of 40 samples is then honestly the maximum)."""
    if not samples_ms:
        return {"count": 0}
    out: dict[str, float | int] = {
        "count": len(samples_ms),
        "mean": round(sum(samples_ms) / len(samples_ms), 2),
    }
    for q in QUANTILES:
        out[f"p{q}"] = round(percentile(samples_ms, q), 2)
    out["max"] = round(max(samples_ms), 2)
    return out


def query_recall(approximate: Sequence[object], exact: Sequence[object], k: int) -> float | None:
    """|approximate top-k ∩ exact top-k| / the number of exact results (at most k).

    The adapter's search keeps a similarity threshold, so the exact answer can hold fewer than k
    rows; dividing by k would then count rows that do not exist as misses. None when the exact
    answer is empty: that query says nothing about recall."""
    truth = set(exact[:k])
    if not truth:
        return None
    return len(set(approximate[:k]) & truth) / len(truth)


def mean_recall(
    approximate: Sequence[Sequence[object]], exact: Sequence[Sequence[object]], k: int
) -> tuple[float | None, int]:
    """Mean recall over the queries that have an exact answer, and how many those were."""
    values = [
        r
        for r in (query_recall(a, e, k) for a, e in zip(approximate, exact, strict=True))
        if r is not None
    ]
    return (round(sum(values) / len(values), 4) if values else None), len(values)


def first_reaching(curve: Sequence[Mapping[str, Any]], target: float) -> int | None:
    """The smallest ef_search whose recall is at least target, or None."""
    for point in sorted(curve, key=lambda p: p["ef_search"]):
        if point.get("recall") is not None and point["recall"] >= target:
            return int(point["ef_search"])
    return None


# ---------------------------------------------------------------------------------------------
# SVG


def nice_ceiling(value: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at least value: the top of a y axis."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # unreachable: 10 * power >= value always


def _fmt(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value < 1 else f"{value:.1f}"


def line_panel(
    title: str,
    x_label: str,
    y_label: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    y_range: tuple[float, float] | None = None,
    guide: tuple[float, str] | None = None,
    width: int = 420,
    height: int = 280,
) -> str:
    """One chart as an SVG group at the origin: lines with markers over a logarithmic x axis
    (connections 1-64 and ef_search 20-400 both span more than a decade), ticks at the x values
    the data has, an optional horizontal guide line (a target). Empty series are left out."""
    left, right, top, bottom = 58, 12, 28, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [(x, y) for _, pts in series for x, y in pts]
    xs = sorted({x for x, _ in points}) or [1.0]
    lo_x, hi_x = math.log(min(xs)), math.log(max(xs))
    if y_range is None:
        top_y = max([y for _, y in points] + ([guide[0]] if guide else []) + [0.0])
        y_range = (0.0, nice_ceiling(top_y * 1.05))
    y0, y1 = y_range

    def px(x: float) -> float:
        span = hi_x - lo_x
        return left + (plot_w / 2 if span == 0 else (math.log(x) - lo_x) / span * plot_w)

    def py(y: float) -> float:
        return top + plot_h - (min(max(y, y0), y1) - y0) / ((y1 - y0) or 1) * plot_h

    out = [
        f'<text x="{left}" y="16" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
            f'stroke="#eee"/><text x="{left - 4}" y="{py(y) + 4:.1f}" text-anchor="end" '
            f'font-size="10">{_fmt(y)}</text>'
        )
    for x in xs:
        out.append(
            f'<text x="{px(x):.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
            f'font-size="10">{_fmt(x)}</text>'
        )
    out.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 8}" text-anchor="middle" '
        f'font-size="11">{escape(x_label)}</text>'
    )
    out.append(
        f'<text x="14" y="{top + plot_h / 2:.0f}" text-anchor="middle" font-size="11" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.0f})">{escape(y_label)}</text>'
    )
    if guide is not None:
        value, label = guide
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{py(value):.1f}" y2="{py(value):.1f}" '
            f'stroke="#555" stroke-dasharray="4 3"/><text x="{left + plot_w - 4}" '
            f'y="{py(value) - 4:.1f}" text-anchor="end" font-size="10">{escape(label)}</text>'
        )
    shown = [(name, sorted(pts)) for name, pts in series if pts]
    for k, (name, pts) in enumerate(shown):
        colour = PALETTE[k % len(PALETTE)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        ly = top + 12 + 14 * k
        out.append(
            f'<rect x="{left + 8}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
            f'<text x="{left + 22}" y="{ly - 4}" font-size="10">{escape(name)}</text>'
        )
    return "\n".join(out)


def figure(panels: Sequence[str], caption: str, panel_w: int = 420, panel_h: int = 280) -> str:
    """Panels side by side, a caption line under them, as one standalone SVG document."""
    width = panel_w * len(panels)
    # About 6 px per character at 10 px: wrap so that a long label stays inside the picture.
    lines = textwrap.wrap(caption, max(40, width // 6))
    height = panel_h + 8 + 14 * len(lines)
    body = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">'
        ),
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for i, panel in enumerate(panels):
        body.append(f'<g transform="translate({i * panel_w},0)">\n{panel}\n</g>')
    for i, line in enumerate(lines):
        y = panel_h + 14 * (i + 1)
        body.append(f'<text x="8" y="{y}" font-size="10">{escape(line)}</text>')
    body.append("</svg>")
    return "\n".join(body) + "\n"


def load_svg(result: Mapping[str, Any]) -> str:
    """Throughput, turn latency and replica replay lag against the number of connections."""
    levels = result["levels"]
    throughput = [(lv["connections"], lv["turns_per_s"]) for lv in levels]
    latency = [
        (f"turn p{q}", [(lv["connections"], lv["turn_ms"][f"p{q}"]) for lv in levels])
        for q in QUANTILES
        if all(lv["turn_ms"].get("count") for lv in levels)
    ]
    lag: list[tuple[str, list[tuple[float, float]]]] = []
    for q in (50, 95):
        pts = [
            (lv["connections"], lv["replay_lag_ms"][f"p{q}"])
            for lv in levels
            if lv["replay_lag_ms"].get(f"p{q}") is not None
        ]
        lag.append((f"replay lag p{q} (worst replica)", pts))
    target = result.get("targets", {})
    panels = [
        line_panel("Throughput", "connections", "turns / s", [("turns/s", throughput)]),
        line_panel(
            "Turn latency",
            "connections",
            "ms",
            latency,
            guide=(target["turn_p95_ms_at_16"], "target p95 at 16")
            if "turn_p95_ms_at_16" in target
            else None,
        ),
        line_panel(
            "Replica replay lag",
            "connections",
            "ms",
            lag,
            guide=(target["replay_lag_p95_ms"], "target p95")
            if "replay_lag_p95_ms" in target
            else None,
        ),
    ]
    return figure(panels, caption(result))


def ef_search_svg(result: Mapping[str, Any]) -> str:
    """Recall@10 and latency of the adapter's search against hnsw.ef_search, per query shape."""
    shapes = result["ef_search"]["shapes"]
    recall = [
        (name, [(p["ef_search"], p["recall"]) for p in s["curve"] if p["recall"] is not None])
        for name, s in shapes.items()
    ]
    latency = [
        (f"{name} p{q}", [(p["ef_search"], p["latency_ms"][f"p{q}"]) for p in s["curve"]])
        for name, s in shapes.items()
        for q in (50, 95)
    ]
    low = min([y for _, pts in recall for _, y in pts] + [0.9])
    panels = [
        line_panel(
            "Recall@10 against exact",
            "hnsw.ef_search",
            "recall@10",
            recall,
            y_range=(math.floor(low * 20) / 20, 1.0),
            guide=(0.99, "0.99"),
        ),
        line_panel("Search latency", "hnsw.ef_search", "ms", latency),
    ]
    return figure(panels, caption(result))


def caption(result: Mapping[str, Any]) -> str:
    m = result["machine"]
    label = f"{result['label']} — " if result.get("label") else ""
    return (
        f"{label}{result['data']['memories']:,} memories, {m['cpus']} CPUs, "
        f"{result['engine']['name']} {result['engine']['version']}, load average "
        f"{m['load_start'][0]} at start, {m['load_end'][0]} at end"
    )


# ---------------------------------------------------------------------------------------------
# Markdown


def _cell(summary: Mapping[str, Any], key: str) -> str:
    value = summary.get(key)
    return "—" if value is None else f"{value}"


def render_markdown(result: Mapping[str, Any]) -> str:
    m, d, e = result["machine"], result["data"], result["engine"]
    lines = ["# Agent workload on the stack (@elizaos/adapter-postgres 0.1.9's queries)", ""]
    if result.get("label"):
        lines += [f"**{result['label']}**", ""]
    lines += [
        (
            f"{d['memories']:,} memories ({d['dims']}-d, clustered, unit length), {d['rooms']} "
            f"rooms, {d['agents']} agents; loaded in {d['load_s']} s (COPY {d['copy_s']} s, "
            f"indexes {', '.join(f'{k} {v} s' for k, v in d['index_build_s'].items())}). "
            f"Stack `{result['stack']['config']}` ({result['stack']['replicas']} replicas, "
            f"memory {result['stack']['memory']}, pool size {result['stack']['pool_size']}), "
            f"PostgreSQL {result.get('postgresql')}, pgvector {result.get('pgvector')}, "
            f"{e['name']} {e['version']} (API {e['api_version']}). {m['cpus']} CPUs; load "
            f"average {' / '.join(map(str, m['load_start']))} at start, "
            f"{' / '.join(map(str, m['load_end']))} at end."
        ),
        "",
        (
            "A turn, as eliza_agent through PgBouncer with verify-full TLS: getMemoryById, "
            "createMemory (its duplicate search, then the INSERT with the embedding), "
            "searchMemories (type, agent, room, similarity ≥ 0.1, 10 rows, ORDER BY embedding "
            "<-> q) and getMemories (the room's 32 most recent)."
        ),
        "",
        (
            "| connections | turns/s | turn p50 ms | p95 | p99 | search p95 | recent p95 | "
            "create p95 | errors | replay lag p50 / p95 ms (worst replica) | lag p95 bytes | "
            "client CPU |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in result["levels"]:
        ops, lag = lv["ops_ms"], lv["replay_lag_ms"]
        lines.append(
            f"| {lv['connections']} | {lv['turns_per_s']} | {_cell(lv['turn_ms'], 'p50')} | "
            f"{_cell(lv['turn_ms'], 'p95')} | {_cell(lv['turn_ms'], 'p99')} | "
            f"{_cell(ops['search'], 'p95')} | {_cell(ops['recent'], 'p95')} | "
            f"{_cell(ops['create'], 'p95')} | {lv['errors']} | "
            f"{_cell(lag, 'p50')} / {_cell(lag, 'p95')} | {_cell(lv['replay_lag_bytes'], 'p95')} "
            f"| {lv['client_cpu']} |"
        )
    lines += [
        "",
        (
            "Each call of a turn, p50 / p95 ms (createMemory = getMemoryById + duplicate search + "
            "INSERT):"
        ),
        "",
        "| connections | " + " | ".join(CALLS) + " |",
        "|---|" + "---|" * len(CALLS),
    ]
    for lv in result["levels"]:
        cells = [
            f"{_cell(lv['ops_ms'].get(op, {}), 'p50')} / {_cell(lv['ops_ms'].get(op, {}), 'p95')}"
            for op in CALLS
        ]
        lines.append(f"| {lv['connections']} | " + " | ".join(cells) + " |")
    plans = result.get("turn_plans")
    if plans:
        lines += [
            "",
            "Plans of one turn's reads (EXPLAIN ANALYZE after the load, before the runs):",
            "",
        ]
        for name, plan in plans.items():
            lines.append(f"- {name}: {' → '.join(plan['nodes'])}; {plan['execution_ms']} ms")
    ef = result["ef_search"]
    lines += [
        "",
        (
            f"## hnsw.ef_search: recall@10 against exact results ({ef['queries']} queries per "
            f"shape; the stack's default is {ef['default']})"
        ),
        "",
        (
            "| shape | ef_search | recall@10 | recall@10 of the queries served by HNSW | queries "
            "with an exact answer | served by HNSW | rows returned (mean) | p50 ms | p95 ms |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, shape in ef["shapes"].items():
        for p in shape["curve"]:
            lines.append(
                f"| {name} | {p['ef_search']} | {_cell(p, 'recall')} | {_cell(p, 'recall_hnsw')} | "
                f"{p['answered']} | {p['hnsw_share']:.0%} | {_cell(p, 'mean_rows')} | "
                f"{p['latency_ms'].get('p50')} | "
                f"{p['latency_ms'].get('p95')} |"
            )
    lines.append("")
    for name, shape in ef["shapes"].items():
        reached = shape["first_reaching_0_99"]
        lines.append(
            f"- {name} (`{shape['where']}`): recall@10 ≥ 0.99 first at ef_search "
            f"{reached if reached is not None else 'none of those measured'}."
        )
    lines += [
        "",
        "Plots: [agent-load.svg](agent-load.svg), [agent-ef-search.svg](agent-ef-search.svg).",
        "",
    ]
    return "\n".join(lines)
