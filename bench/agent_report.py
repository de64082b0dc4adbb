"""The pure half of the agent-workload benchmark (bench/agent_bench.py): latency summaries,
recall, the markdown table and the SVG plots. No I/O here, so that the unit tests can check every
figure the result files show from made-up samples."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
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


def scan_rate(rows: int, times_ms: Sequence[float]) -> dict[str, Any]:
    """An exact top-10 search compares the query with every row: how many rows a second at the
    median query time, with the latencies."""
    latency = latency_summary(times_ms)
    p50 = latency.get("p50")
    per_s = round(rows / (p50 / 1000)) if p50 else None
    return {"rows": rows, "latency_ms": latency, "vectors_per_s": per_s}


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


def curve_point(
    ef_search: int,
    found: Sequence[Sequence[object]],
    times_ms: Sequence[float],
    served: Sequence[bool],
    exact: Sequence[Sequence[object]],
    k: int = 10,
) -> dict[str, Any]:
    """One point of the ef_search curve from each query's rows, latency and whether HNSW served
    it, against the exact answers."""
    recall, answered = mean_recall(found, exact, k)
    # The index's own recall: the queries the planner gave to HNSW (the others were answered
    # exactly, by a scan and a sort).
    recall_hnsw, _ = mean_recall(
        [f for f, s in zip(found, served, strict=True) if s],
        [e for e, s in zip(exact, served, strict=True) if s],
        k,
    )
    return {
        "ef_search": ef_search,
        "recall": recall,
        "answered": answered,
        "recall_hnsw": recall_hnsw,
        "hnsw_share": round(sum(served) / len(found), 3),
        "mean_rows": round(sum(map(len, found)) / len(found), 2),
        "latency_ms": latency_summary(times_ms),
    }


def agreement_summary(
    found: Sequence[Sequence[object]],
    reference: Sequence[Sequence[object]],
    times_ms: Sequence[float],
) -> dict[str, Any]:
    """How many of the reference's rows a variant's searches missed, in how many queries, the
    most one query missed, and the variant's latency."""
    missed = [len(set(r) - set(f)) for f, r in zip(found, reference, strict=True)]
    return {
        "reference_rows": sum(len(r) for r in reference),
        "missed_rows": sum(missed),
        "queries_missing_rows": sum(1 for m in missed if m),
        "most_missed_by_one_query": max(missed, default=0),
        "latency_ms": latency_summary(times_ms),
    }


def probe_summary(explains: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The duplicate-search probe's queries under one variant: how many found a row, how many
    HNSW served, and the execution time, buffers and filtered-out rows of each."""
    hnsw = [e for e in explains if e["hnsw"]]
    plans: dict[str, int] = {}
    for e in explains:
        key = " → ".join(e["nodes"])
        plans[key] = plans.get(key, 0) + 1
    return {
        "queries": len(explains),
        "found": sum(1 for e in explains if e["rows"]),
        "hnsw_share": round(len(hnsw) / len(explains), 3) if explains else None,
        "execution_ms": latency_summary([e["execution_ms"] for e in explains]),
        "buffers": latency_summary(
            [
                float((e.get("shared_buffers_hit") or 0) + (e.get("shared_buffers_read") or 0))
                for e in explains
            ]
        ),
        "rows_removed_by_filter": latency_summary(
            [float(e["rows_removed_by_filter"]) for e in explains]
        ),
        "plans": plans,
    }


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


# A panel's margins: the y axis's labels on the left, the x axis's below.
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 28, 46


class _Frame:
    """A panel's plotting area and its y scale: the title, the frame, five grid lines with
    their values, the y axis's label and a dashed guide line, as SVG."""

    def __init__(self, width: int, height: int, y_range: tuple[float, float]) -> None:
        self.plot_w, self.plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
        self.y0, self.y1 = y_range

    def py(self, y: float) -> float:
        y0, y1 = self.y0, self.y1
        return TOP + self.plot_h - (min(max(y, y0), y1) - y0) / ((y1 - y0) or 1) * self.plot_h

    def grid(self, title: str) -> list[str]:
        out = [
            f'<text x="{LEFT}" y="16" font-weight="bold">{escape(title)}</text>',
            (
                f'<rect x="{LEFT}" y="{TOP}" width="{self.plot_w}" height="{self.plot_h}" '
                'fill="none" stroke="#999"/>'
            ),
        ]
        for i in range(5):
            y = self.y0 + (self.y1 - self.y0) * i / 4
            py = self.py(y)
            out.append(
                f'<line x1="{LEFT}" x2="{LEFT + self.plot_w}" y1="{py:.1f}" y2="{py:.1f}" '
                f'stroke="#eee"/><text x="{LEFT - 4}" y="{py + 4:.1f}" text-anchor="end" '
                f'font-size="10">{_fmt(y)}</text>'
            )
        return out

    def y_label(self, label: str) -> str:
        mid = TOP + self.plot_h / 2
        return (
            f'<text x="14" y="{mid:.0f}" text-anchor="middle" font-size="11" '
            f'transform="rotate(-90 14 {mid:.0f})">{escape(label)}</text>'
        )

    def guide(self, guide: tuple[float, str] | None) -> list[str]:
        if guide is None:
            return []
        value, label = guide
        py = self.py(value)
        return [
            (
                f'<line x1="{LEFT}" x2="{LEFT + self.plot_w}" y1="{py:.1f}" y2="{py:.1f}" '
                f'stroke="#555" stroke-dasharray="4 3"/><text x="{LEFT + self.plot_w - 4}" '
                f'y="{py - 4:.1f}" text-anchor="end" font-size="10">{escape(label)}</text>'
            )
        ]


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
    points = [(x, y) for _, pts in series for x, y in pts]
    xs = sorted({x for x, _ in points}) or [1.0]
    lo_x, hi_x = math.log(min(xs)), math.log(max(xs))
    if y_range is None:
        top_y = max([y for _, y in points] + ([guide[0]] if guide else []) + [0.0])
        y_range = (0.0, nice_ceiling(top_y * 1.05))
    frame = _Frame(width, height, y_range)
    plot_w, plot_h, py = frame.plot_w, frame.plot_h, frame.py

    def px(x: float) -> float:
        span = hi_x - lo_x
        return LEFT + (plot_w / 2 if span == 0 else (math.log(x) - lo_x) / span * plot_w)

    out = frame.grid(title)
    for x in xs:
        out.append(
            f'<text x="{px(x):.1f}" y="{TOP + plot_h + 14}" text-anchor="middle" '
            f'font-size="10">{_fmt(x)}</text>'
        )
    out.append(
        f'<text x="{LEFT + plot_w / 2:.0f}" y="{height - 8}" text-anchor="middle" '
        f'font-size="11">{escape(x_label)}</text>'
    )
    out.append(frame.y_label(y_label))
    out += frame.guide(guide)
    shown = [(name, sorted(pts)) for name, pts in series if pts]
    for k, (name, pts) in enumerate(shown):
        colour = PALETTE[k % len(PALETTE)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        ly = TOP + 12 + 14 * k
        out.append(
            f'<rect x="{LEFT + 8}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
            f'<text x="{LEFT + 22}" y="{ly - 4}" font-size="10">{escape(name)}</text>'
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


def bar_panel(
    title: str,
    y_label: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    y_range: tuple[float, float] | None = None,
    guide: tuple[float, str] | None = None,
    value_format: Callable[[float], str] = _fmt,
    width: int = 420,
    height: int = 280,
) -> str:
    """Grouped bars as an SVG group at the origin: one group per category (a variant), one bar
    per series in it, each labelled with its value; a missing value draws no bar. The legend
    is a row under the categories, clear of the bars."""
    values = [v for _, vs in series for v in vs if v is not None]
    if y_range is None:
        top_y = max(values + ([guide[0]] if guide else []) + [0.0])
        y_range = (0.0, nice_ceiling(top_y * 1.1))
    frame = _Frame(width, height, y_range)
    plot_w, plot_h, py = frame.plot_w, frame.plot_h, frame.py
    out = frame.grid(title)
    out.append(frame.y_label(y_label))
    group_w = plot_w / max(1, len(categories))
    bar_w = group_w * 0.8 / max(1, len(series))
    for c, category in enumerate(categories):
        gx = LEFT + c * group_w
        out.append(
            f'<text x="{gx + group_w / 2:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle" '
            f'font-size="10">{escape(category)}</text>'
        )
        for k, (_, vs) in enumerate(series):
            value = vs[c] if c < len(vs) else None
            if value is None:
                continue
            x = gx + group_w * 0.1 + k * bar_w
            out.append(
                f'<rect x="{x:.1f}" y="{py(value):.1f}" width="{bar_w * 0.9:.1f}" '
                f'height="{py(frame.y0) - py(value):.1f}" fill="{PALETTE[k % len(PALETTE)]}"/>'
                f'<text x="{x + bar_w * 0.45:.1f}" y="{py(value) - 3:.1f}" text-anchor="middle" '
                f'font-size="9">{value_format(value)}</text>'
            )
    out += frame.guide(guide)
    for k, (name, _) in enumerate(series):
        lx, ly = LEFT + 90 * k, height - 12
        out.append(
            f'<rect x="{lx}" y="{ly - 8}" width="10" height="8" '
            f'fill="{PALETTE[k % len(PALETTE)]}"/>'
            f'<text x="{lx + 14}" y="{ly}" font-size="10">{escape(name)}</text>'
        )
    return "\n".join(out)


def variants_svg(result: Mapping[str, Any]) -> str:
    """The variants side by side: turn latency and the duplicate search's under load (pooled
    rounds, at the most connections measured), the busiest room's duplicate search alone, and
    recall@10 of each curve shape at the stack's ef_search."""
    names = result["variants"]["order"]
    pooled = variant_summary(result)
    most = max(lv["connections"] for lv in result["levels"])

    def at(name: str, key: str, q: int) -> float | None:
        value = pooled.get(name, {}).get(most, {}).get(key, {}).get(f"p{q}")
        return None if value is None else float(value)

    target = result.get("targets", {}).get("turn_p95_ms_at_16")
    panels = [
        bar_panel(
            f"Turn at {most} connections (pooled rounds)",
            "ms",
            names,
            [(f"p{q}", [at(n, "turn_ms", q) for n in names]) for q in (50, 95)],
            guide=(target, "target p95") if target is not None and most == 16 else None,
        ),
        bar_panel(
            f"Duplicate search at {most} connections",
            "ms",
            names,
            [(f"p{q}", [at(n, "dedupe_ms", q) for n in names]) for q in (50, 95)],
        ),
    ]
    probe = result.get("dedupe_probe")
    if probe:
        fresh = [probe["variants"][n]["fresh"]["execution_ms"] for n in names]
        panels.append(
            bar_panel(
                "Busiest room's duplicate search alone",
                "ms (server)",
                names,
                [(f"p{q}", [f.get(f"p{q}") for f in fresh]) for q in (50, 95)],
            )
        )
    shapes = result["ef_search"]["shapes"]
    default = int(result["ef_search"]["default"])
    recall: list[tuple[str, list[float | None]]] = []
    for shape, data in shapes.items():
        row: list[float | None] = []
        for n in names:
            points = [
                p
                for p in data.get("variants", {}).get(n, {}).get("curve", [])
                if p["ef_search"] == default
            ]
            row.append(points[0]["recall"] if points else None)
        recall.append((shape, row))
    # Grid lines at hundredths: from 0.96 down in steps of 0.04 as far as the lowest recall.
    low = min([v for _, vs in recall for v in vs if v is not None] + [0.96])
    panels.append(
        bar_panel(
            f"Recall@10 at ef_search {default}",
            "recall@10",
            names,
            recall,
            y_range=(1.0 - 0.04 * math.ceil((1.0 - low) / 0.04 - 1e-9), 1.0),
            guide=(0.99, "0.99"),
            value_format=lambda v: f"{v:.3f}",
        )
    )
    return figure(panels, caption(result))


def variant_summary(result: Mapping[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """Per variant and number of connections, the rounds pooled: turn and duplicate-search
    latency over every counted turn of every round, the mean throughput, the rounds' range of
    load average."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for lv in result["levels"]:
        if "variant" not in lv:
            continue
        entry = out.setdefault(lv["variant"], {}).setdefault(
            lv["connections"], {"rounds": 0, "turns": [], "dedupe": [], "rates": [], "load": []}
        )
        entry["rounds"] += 1
        entry["turns"] += lv["samples_ms"]["turn"]
        entry["dedupe"] += lv["samples_ms"]["dedupe"]
        entry["rates"].append(lv["turns_per_s"])
        entry["load"] += lv.get("load_average", [])
    return {
        name: {
            n: {
                "rounds": e["rounds"],
                "turns_per_s": round(sum(e["rates"]) / len(e["rates"]), 1),
                "turn_ms": latency_summary(e["turns"]),
                "dedupe_ms": latency_summary(e["dedupe"]),
                "load_average": [min(e["load"]), max(e["load"])] if e["load"] else None,
            }
            for n, e in levels.items()
        }
        for name, levels in out.items()
    }


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


def _level_key(level: Mapping[str, Any]) -> str:
    """The variant and round cells that lead a level's row in a run with variants."""
    return f"{level['variant']} | {level.get('round', '—')} | " if "variant" in level else ""


def _load_cell(level: Mapping[str, Any]) -> str:
    load = level.get("load_average")
    return f" {load[0]} → {load[1]} |" if load else " — |"


def render_markdown(result: Mapping[str, Any]) -> str:
    m, d, e = result["machine"], result["data"], result["engine"]
    head = "variant | round | " if any("variant" in lv for lv in result["levels"]) else ""
    load_head = (
        " load average (1 min) at start → end |"
        if any("load_average" in lv for lv in result["levels"])
        else ""
    )
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
            f"| {head}connections | turns/s | turn p50 ms | p95 | p99 | search p95 | recent p95 | "
            "create p95 | errors | replay lag p50 / p95 ms (worst replica) | lag p95 bytes | "
            f"client CPU |{load_head}"
        ),
        "|---" * (12 + head.count("|") + load_head.count("|")) + "|",
    ]
    for lv in result["levels"]:
        ops, lag = lv["ops_ms"], lv["replay_lag_ms"]
        lines.append(
            f"| {_level_key(lv)}{lv['connections']} | {lv['turns_per_s']} | "
            f"{_cell(lv['turn_ms'], 'p50')} | "
            f"{_cell(lv['turn_ms'], 'p95')} | {_cell(lv['turn_ms'], 'p99')} | "
            f"{_cell(ops['search'], 'p95')} | {_cell(ops['recent'], 'p95')} | "
            f"{_cell(ops['create'], 'p95')} | {lv['errors']} | "
            f"{_cell(lag, 'p50')} / {_cell(lag, 'p95')} | {_cell(lv['replay_lag_bytes'], 'p95')} "
            f"| {lv['client_cpu']} |{_load_cell(lv) if load_head else ''}"
        )
    calls = [*CALLS, *(["txn"] if any("txn" in lv["ops_ms"] for lv in result["levels"]) else [])]
    lines += [
        "",
        (
            "Each call of a turn, p50 / p95 ms (createMemory = getMemoryById + duplicate search + "
            "INSERT"
            + (
                "; txn = BEGIN with the variant's SET LOCAL, and COMMIT"
                if len(calls) > len(CALLS)
                else ""
            )
            + "):"
        ),
        "",
        f"| {head}connections | " + " | ".join(calls) + " |",
        "|---" * (1 + len(calls) + head.count("|")) + "|",
    ]
    for lv in result["levels"]:
        cells = [
            f"{_cell(lv['ops_ms'].get(op, {}), 'p50')} / {_cell(lv['ops_ms'].get(op, {}), 'p95')}"
            for op in calls
        ]
        lines.append(f"| {_level_key(lv)}{lv['connections']} | " + " | ".join(cells) + " |")
    plans = result.get("turn_plans")
    if plans:
        lines += [
            "",
            "Plans of one turn's reads (EXPLAIN ANALYZE after the load, before the runs"
            + (f", variant {result['variants']['order'][0]}" if "variants" in result else "")
            + "):",
            "",
        ]
        lines += [_plan_line(name, plan) for name, plan in plans.items()]
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
    if "exact_scan" in result:
        lines += ["", "## Exact top-10 over every memory (no index, warm)", ""]
        for name, scan in result["exact_scan"].items():
            t = scan["latency_ms"]
            lines.append(
                f"- {name} (`ORDER BY embedding {scan['operator']} q LIMIT 10`): p50 / p95 "
                f"{t.get('p50')} / {t.get('p95')} ms over {scan['rows']:,} rows, "
                f"{scan['vectors_per_s'] / 1e6:.2f} M vectors/s; "
                f"{scan['workers']} parallel worker(s) launched, {t['count']} queries."
            )
    if "variants" in result:
        lines += variants_markdown(result)
    plots = ["agent-variants.svg" if "variants" in result else "agent-load.svg"]
    plots.append("agent-ef-search.svg")
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in plots) + ".", ""]
    return "\n".join(lines)


def _plan_line(name: str, plan: Mapping[str, Any]) -> str:
    line = f"- {name}: {' → '.join(plan['nodes'])}; {plan['execution_ms']} ms"
    if plan.get("rows_removed_by_filter") is not None:
        buffers = (plan.get("shared_buffers_hit") or 0) + (plan.get("shared_buffers_read") or 0)
        line += f", {plan['rows_removed_by_filter']} rows filtered out, {buffers} buffers"
    return line


def _table(intro: str, columns: str) -> list[str]:
    """A paragraph, then a markdown table's header for these columns ("a | b | c")."""
    return ["", intro, "", f"| {columns} |", "|---" * len(columns.split(" | ")) + "|"]


def variants_markdown(result: Mapping[str, Any]) -> list[str]:
    """The section of a run with server-settings variants: what each set, the turns pooled over
    the rounds, the duplicate-search probe, recall per shape, and the plans."""
    v = result["variants"]
    names = v["order"]
    ef = result["ef_search"]
    lines = ["", "## Server-settings variants, side by side"]
    lines += _table(
        (
            "Each variant's settings are applied with SET LOCAL inside the transaction they are "
            "for: the curve's queries and the probe's one by one, each under every variant in "
            "turn; a turn as one transaction (BEGIN with the SET LOCAL in one round trip, the "
            "adapter's calls, COMMIT) in every variant alike, so turn latencies here include two "
            "round trips that the adapter does not make and are comparable only with each other. "
            f"{v['rounds']} rounds of the load levels, the variants in order and then in reverse "
            "order, so that a drift of the machine's load or the data's growth (each turn "
            "inserts a row) falls on each alike."
        ),
        "variant | settings",
    )
    for name in names:
        settings = ", ".join(f"`{k} = {val}`" for k, val in v["settings"][name].items())
        lines.append(f"| {name} | {settings or 'the stack defaults'} |")
    lines += _table(
        "Turns, all rounds pooled (latencies over every counted turn of every round):",
        "variant | connections | rounds | turns/s (mean) | turn p50 ms | turn p95 | turn p99 | "
        "duplicate search p50 | p95 | load average (1 min) during the levels",
    )
    for name, levels in variant_summary(result).items():
        for n, e in sorted(levels.items()):
            load = e["load_average"]
            lines.append(
                f"| {name} | {n} | {e['rounds']} | {e['turns_per_s']} | "
                f"{_cell(e['turn_ms'], 'p50')} | {_cell(e['turn_ms'], 'p95')} | "
                f"{_cell(e['turn_ms'], 'p99')} | {_cell(e['dedupe_ms'], 'p50')} | "
                f"{_cell(e['dedupe_ms'], 'p95')} | "
                f"{f'{load[0]}–{load[1]}' if load else '—'} |"
            )
    probe = result.get("dedupe_probe")
    if probe:
        lines += _table(
            (
                f"createMemory's duplicate search alone in the busiest room ({probe['room']}, "
                f"{probe['messages_in_room']} messages), EXPLAIN ANALYZE through the pooler, "
                "each query under every variant in turn: `fresh` are new messages of that room "
                "(no duplicate exists, so an HNSW scan runs until it stops), `near duplicates` "
                f"are stored messages of the room moved by {probe['near_duplicate_distance']} "
                "(L2), which the search must find. Server execution time; buffers = shared "
                "hit + read; rows filtered out = candidates the scan handed up that the room or "
                "distance filter refused."
            ),
            "variant | fresh: served by HNSW | p50 ms | p95 ms | rows filtered out p50 / max | "
            "buffers p50 / max | near duplicates found | served by HNSW | p95 ms",
        )
        for name in names:
            f, n = probe["variants"][name]["fresh"], probe["variants"][name]["near_duplicates"]
            lines.append(
                f"| {name} | {f['hnsw_share']:.0%} | {_cell(f['execution_ms'], 'p50')} | "
                f"{_cell(f['execution_ms'], 'p95')} | "
                f"{_cell(f['rows_removed_by_filter'], 'p50')} / "
                f"{_cell(f['rows_removed_by_filter'], 'max')} | "
                f"{_cell(f['buffers'], 'p50')} / {_cell(f['buffers'], 'max')} | "
                f"{n['found']} of {n['queries']} | {n['hnsw_share']:.0%} | "
                f"{_cell(n['execution_ms'], 'p95')} |"
            )
    lines += _table(
        f"Recall@10 against exact results, {ef['queries']} queries per shape, per variant:",
        "variant | shape | ef_search | recall@10 | recall@10 of the queries served by HNSW | "
        "served by HNSW | rows returned (mean) | p50 ms | p95 ms",
    )
    for name in names:
        for shape, data in ef["shapes"].items():
            for p in data.get("variants", {}).get(name, {}).get("curve", []):
                lines.append(
                    f"| {name} | {shape} | {p['ef_search']} | {_cell(p, 'recall')} | "
                    f"{_cell(p, 'recall_hnsw')} | {p['hnsw_share']:.0%} | "
                    f"{_cell(p, 'mean_rows')} | {p['latency_ms'].get('p50')} | "
                    f"{p['latency_ms'].get('p95')} |"
                )
    agreement = result.get("agreement")
    if agreement:
        lines += _table(
            (
                f"Agreement with {agreement['reference']}: each shape's search at the stack's "
                f"ef_search on {agreement['queries']} other turns' embeddings, each under every "
                f"variant in turn; the rows of {agreement['reference']}'s answers that a "
                "variant did not return (a bound that cuts a search short can cost one query "
                "in hundreds all its rows, which mean recall over the curve's sample hides):"
            ),
            "variant | shape | rows missed (of the reference's) | queries that missed rows | "
            "most missed by one query | p50 ms | p95 ms | p99 ms",
        )
        for name in names:
            for shape, per in agreement["shapes"].items():
                a = per[name]
                lines.append(
                    f"| {name} | {shape} | {a['missed_rows']} of {a['reference_rows']} | "
                    f"{a['queries_missing_rows']} | {a['most_missed_by_one_query']} | "
                    f"{_cell(a['latency_ms'], 'p50')} | {_cell(a['latency_ms'], 'p95')} | "
                    f"{_cell(a['latency_ms'], 'p99')} |"
                )
    plans = v.get("turn_plans", {})
    if plans:
        lines += ["", "Plans of the same turn's reads under each variant (EXPLAIN ANALYZE):", ""]
        for name in names:
            lines += [f"- {name}:"]
            lines += ["  " + _plan_line(k, plan) for k, plan in plans[name].items()]
    return lines
