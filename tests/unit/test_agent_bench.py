"""The agent-workload benchmark's pure parts: the figures its result files show (percentiles,
recall, the ef_search that first reaches a recall), its SVG, and the adapter's SQL it sends."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest

from bench.agent_bench import (
    DEDUPE_SQL,
    SEARCH_SQL,
    SHAPES,
    Variant,
    make_dataset,
    near_duplicate,
    rotated,
    round_order,
    vector_text,
)
from bench.agent_report import (
    agreement_summary,
    curve_point,
    ef_search_svg,
    first_reaching,
    latency_summary,
    line_panel,
    load_svg,
    mean_recall,
    nice_ceiling,
    probe_summary,
    query_recall,
    render_markdown,
    scan_rate,
    variant_summary,
    variants_svg,
)


def test_latency_summary_reports_observed_nearest_rank_percentiles() -> None:
    samples = [float(x) for x in range(1, 101)]  # 1..100 ms
    summary = latency_summary(samples)
    assert summary == {
        "count": 100,
        "mean": 50.5,
        "p50": 50.0,
        "p95": 95.0,
        "p99": 99.0,
        "max": 100.0,
    }
    # Few samples: p99 is the largest observed value, never an interpolation beyond it.
    few = latency_summary([3.0, 1.0, 2.0])
    assert few["p50"] == 2.0 and few["p95"] == 3.0 and few["p99"] == 3.0
    assert latency_summary([]) == {"count": 0}


def test_recall_divides_by_the_exact_answer_and_skips_empty_ones() -> None:
    assert query_recall([1, 2, 3], [3, 2, 1], 10) == 1.0  # order does not matter
    assert query_recall([1, 2, 9], [1, 2, 3, 4], 10) == 0.5
    # The threshold left 2 exact rows: both found is full recall, not 2/10.
    assert query_recall([7, 8], [7, 8], 10) == 1.0
    assert query_recall([1], [], 10) is None
    # Only the top k of each side count.
    assert query_recall(list(range(20)), list(range(10, 30)), 10) == 0.0
    recall, answered = mean_recall([[1, 2], [5], [9]], [[1, 2], [5, 6], []], 10)
    assert (recall, answered) == (0.75, 2)
    assert mean_recall([[1]], [[]], 10) == (None, 0)


def test_first_reaching_is_the_smallest_ef_search_at_the_target() -> None:
    curve = [
        {"ef_search": 100, "recall": 0.995},
        {"ef_search": 20, "recall": 0.95},
        {"ef_search": 40, "recall": 0.99},
        {"ef_search": 60, "recall": None},
    ]
    assert first_reaching(curve, 0.99) == 40
    assert first_reaching(curve, 0.999) is None


def test_nice_ceiling() -> None:
    assert [nice_ceiling(v) for v in (0, 0.7, 3, 19, 101, 2500)] == [1, 1, 5, 20, 200, 2500]


def _result() -> dict[str, Any]:
    level = {
        "turns_per_s": 10.0,
        "turn_ms": {"count": 5, "p50": 5.0, "p95": 9.0, "p99": 9.5},
        "ops_ms": {k: {"count": 5, "p95": 1.0} for k in ("create", "search", "recent")},
        "errors": 0,
        "replay_lag_ms": {"samples": 3, "p50": 1.0, "p95": 2.0},
        "replay_lag_bytes": {"samples": 3, "p50": 10.0, "p95": 20.0},
        "client_cpu": 0.1,
    }
    curve = [
        {
            "ef_search": ef,
            "recall": r,
            "answered": 9,
            "hnsw_share": 1.0,
            "latency_ms": {"p50": 1.0, "p95": 2.0},
        }
        for ef, r in ((20, 0.93), (40, 0.97), (200, 0.995))
    ]
    return {
        "label": "VALIDATION <run> & co",
        "machine": {"cpus": 2, "load_start": [1, 2, 3], "load_end": [4, 5, 6]},
        "engine": {"name": "Podman", "version": "4.3.1", "api_version": "1.41"},
        "stack": {"config": "Pulumi.dev.yaml", "replicas": 2, "memory": "4g", "pool_size": 20},
        "data": {
            "memories": 10000,
            "dims": 1536,
            "rooms": 100,
            "agents": 8,
            "load_s": 1.0,
            "copy_s": 0.5,
            "index_build_s": {"idx": 0.2},
        },
        "targets": {"turn_p95_ms_at_16": 20.0, "replay_lag_p95_ms": 100.0},
        "levels": [{**level, "connections": n} for n in (1, 4, 16, 64)],
        "ef_search": {
            "queries": 10,
            "default": "40",
            "shapes": {"room": {"where": "type = x", "curve": curve, "first_reaching_0_99": 200}},
        },
    }


def test_plots_are_well_formed_svg_with_a_point_per_measurement() -> None:
    result = _result()
    for svg in (load_svg(result), ef_search_svg(result)):
        root = ET.fromstring(svg)  # well-formed, the label's markup escaped
        assert root.tag.endswith("svg")
        assert "VALIDATION &lt;run&gt; &amp; co" in svg
    # A long label wraps onto lines that fit the picture's width.
    long = load_svg({**result, "label": "word " * 200})
    width = int(ET.fromstring(long).get("width", "0"))
    captions = [
        t for t in ET.fromstring(long).iter() if t.tag.endswith("text") and "word" in (t.text or "")
    ]
    assert len(captions) > 1 and all(len(t.text or "") * 6 <= width for t in captions)
    load = ET.fromstring(load_svg(result))
    circles = [e for e in load.iter() if e.tag.endswith("circle")]
    # throughput 4 + turn p50/p95/p99 12 + lag p50/p95 8
    assert len(circles) == 4 + 12 + 8
    ef = ET.fromstring(ef_search_svg(result))
    assert len([e for e in ef.iter() if e.tag.endswith("circle")]) == 3 + 6


def test_panel_places_points_on_a_log_x_axis() -> None:
    svg = line_panel("t", "x", "y", [("s", [(1, 0.0), (10, 5.0), (100, 10.0)])])
    xs = [float(c.split('cx="')[1].split('"')[0]) for c in svg.split("<circle")[1:]]
    assert math.isclose(xs[1] - xs[0], xs[2] - xs[1])  # a decade is a decade
    ys = [float(c.split('cy="')[1].split('"')[0]) for c in svg.split("<circle")[1:]]
    assert ys[0] > ys[1] > ys[2]  # larger values higher up


def test_markdown_carries_the_label_and_every_measured_row() -> None:
    md = render_markdown(_result())
    assert "**VALIDATION <run> & co**" in md
    assert md.count("\n| room |") == 3
    assert "recall@10 ≥ 0.99 first at ef_search 200" in md
    assert "load average 1 / 2 / 3 at start, 4 / 5 / 6 at end" in md


def test_the_adapters_search_shape_is_sent() -> None:
    # The adapter orders by L2 (<->, served by the vector_l2_ops index) and filters the
    # similarity with the same operator; the turn's search filters agent and room.
    assert SEARCH_SQL.count("<->") == 3 and "<=>" not in SEARCH_SQL
    assert '"agentId" = %(agent)s AND "roomId" = %(room)s::uuid' in SEARCH_SQL
    assert SEARCH_SQL.rstrip().endswith("ORDER BY embedding <-> %(q)s::vector LIMIT %(count)s")
    assert '"agentId"' not in DEDUPE_SQL  # createMemory's duplicate check gives no agent
    assert '"roomId"' not in SHAPES["agent"]
    # As JavaScript prints Number(x.toFixed(6)).
    values = np.array([0.1234567, -1.0, 0.0000001, -0.0000001, 0.5], dtype="float64")
    assert vector_text(values) == "[0.123457,-1,0,0,0.5]"


def test_rooms_are_topical_and_deterministic() -> None:
    a = make_dataset(400, 100, rooms=10, agents=3, seed=5)
    b = make_dataset(400, 100, rooms=10, agents=3, seed=5)
    assert (a.rooms == b.rooms).all() and a.vectors.shape == (500, 1536)
    assert set(a.rooms.tolist()) <= set(range(10))
    assert a.agent_of_room(7) == 1


def test_a_variant_is_parsed_and_becomes_set_local_statements() -> None:
    v = Variant.parse("mst2000:hnsw.max_scan_tuples=2000,work_mem=8MB")
    assert v.name == "mst2000"
    assert v.describe() == {"hnsw.max_scan_tuples": "2000", "work_mem": "8MB"}
    assert v.set_local() == "SET LOCAL hnsw.max_scan_tuples = '2000'; SET LOCAL work_mem = '8MB'"
    assert v.begin() == "BEGIN; " + v.set_local()
    # No settings: the stack's own defaults, and a plain BEGIN.
    stack = Variant.parse("stack")
    assert stack.settings == () and stack.begin() == "BEGIN"
    # What would break out of the quoted SET LOCAL is refused.
    for bad in ("x:a=1';DROP TABLE t;--", "x:a", "x:A-B=1", "bad name:a=1", ":a=1"):
        with pytest.raises(ValueError):
            Variant.parse(bad)


def test_variants_take_turns() -> None:
    assert rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert rotated(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert rotated([], 3) == []
    assert [round_order("abc", r) for r in range(3)] == [list("abc"), list("cba"), list("abc")]


def test_a_near_duplicate_is_at_the_distance_asked() -> None:
    rng = np.random.default_rng(1)
    v = rng.standard_normal(1536)
    v /= np.linalg.norm(v)
    moved = near_duplicate(v, 0.02, rng)
    assert math.isclose(np.linalg.norm(moved), 1.0)
    assert 0.0195 < np.linalg.norm(moved - v) < 0.0205


def test_curve_point_separates_the_queries_hnsw_served() -> None:
    exact = [[1, 2], [3, 4], []]
    point = curve_point(40, [[1, 2], [3], [5]], [1.0, 2.0, 3.0], [True, False, True], exact)
    assert point["recall"] == 0.75 and point["answered"] == 2
    assert point["recall_hnsw"] == 1.0  # the only answered query HNSW served found both
    assert point["hnsw_share"] == round(2 / 3, 3) and point["mean_rows"] == round(4 / 3, 2)
    assert point["latency_ms"]["p50"] == 2.0


def test_probe_summary_counts_plans_and_finds() -> None:
    explains = [
        {
            "nodes": ["Limit", "Index Scan using idx_l2"],
            "hnsw": True,
            "execution_ms": 300.0,
            "shared_buffers_hit": 10,
            "shared_buffers_read": 5,
            "rows": 0,
            "rows_removed_by_filter": 20000,
        },
        {
            "nodes": ["Limit", "Sort", "Index Scan using idx_btree"],
            "hnsw": False,
            "execution_ms": 10.0,
            "shared_buffers_hit": 100,
            "shared_buffers_read": None,
            "rows": 1,
            "rows_removed_by_filter": 900,
        },
    ]
    summary = probe_summary(explains)
    assert summary["queries"] == 2 and summary["found"] == 1 and summary["hnsw_share"] == 0.5
    assert summary["buffers"]["max"] == 100.0 and summary["buffers"]["p50"] == 15.0
    assert summary["rows_removed_by_filter"]["max"] == 20000.0
    assert summary["plans"] == {
        "Limit → Index Scan using idx_l2": 1,
        "Limit → Sort → Index Scan using idx_btree": 1,
    }


def _variant_result() -> dict[str, Any]:
    result = _result()
    base = result["levels"][0]
    result["variants"] = {
        "order": ["stack", "mst2000"],
        "settings": {"stack": {}, "mst2000": {"hnsw.max_scan_tuples": "2000"}},
        "rounds": 2,
        "turn_plans": {
            n: {"dedupe_busiest_room": {"nodes": ["Limit"], "execution_ms": 1.0}}
            for n in ("stack", "mst2000")
        },
    }
    result["levels"] = [
        {
            **base,
            "connections": 16,
            "variant": name,
            "round": r,
            "turns_per_s": rate,
            "load_average": [1.0 + r, 2.0 + r],
            "ops_ms": {**base["ops_ms"], "txn": {"count": 5, "p50": 1.0, "p95": 2.0}},
            "samples_ms": {"turn": turns, "dedupe": [t / 2 for t in turns]},
        }
        for r, name, rate, turns in (
            (1, "stack", 10.0, [100.0, 200.0]),
            (1, "mst2000", 20.0, [10.0, 20.0]),
            (2, "mst2000", 30.0, [30.0]),
            (2, "stack", 12.0, [300.0]),
        )
    ]
    curve = result["ef_search"]["shapes"]["room"]["curve"]
    result["ef_search"]["shapes"]["room"]["variants"] = {
        "stack": {"curve": curve, "first_reaching_0_99": 200},
        "mst2000": {"curve": curve[:2], "first_reaching_0_99": None},
    }
    fresh = {
        "queries": 3,
        "found": 0,
        "hnsw_share": 1.0,
        "execution_ms": {"count": 3, "p50": 5.0, "p95": 9.0},
        "buffers": {"count": 3, "p50": 50.0, "max": 90.0},
        "rows_removed_by_filter": {"count": 3, "p50": 500.0, "max": 900.0},
        "plans": {},
    }
    result["dedupe_probe"] = {
        "room": "r",
        "messages_in_room": 3721,
        "near_duplicate_distance": 0.02,
        "variants": {
            n: {"fresh": fresh, "near_duplicates": {**fresh, "found": 3}}
            for n in ("stack", "mst2000")
        },
    }
    result["agreement"] = {
        "queries": 3,
        "reference": "stack",
        "shapes": {
            "type": {
                n: agreement_summary(found, [[1, 2], [3, 4], []], [1.0, 2.0, 3.0])
                for n, found in (("stack", [[1, 2], [3, 4], []]), ("mst2000", [[1, 2], [], [9]]))
            }
        },
    }
    return result


def test_agreement_counts_the_reference_rows_a_variant_missed() -> None:
    summary = agreement_summary([[1, 2], [], [9]], [[1, 2], [3, 4], []], [1.0, 2.0, 3.0])
    assert summary["reference_rows"] == 4 and summary["missed_rows"] == 2
    assert summary["queries_missing_rows"] == 1 and summary["most_missed_by_one_query"] == 2
    assert summary["latency_ms"]["count"] == 3


def test_variant_rounds_are_pooled_per_variant() -> None:
    pooled = variant_summary(_variant_result())
    assert set(pooled) == {"stack", "mst2000"}
    stack = pooled["stack"][16]
    assert stack["rounds"] == 2 and stack["turns_per_s"] == 11.0
    assert stack["turn_ms"]["count"] == 3 and stack["turn_ms"]["p95"] == 300.0
    assert stack["dedupe_ms"]["p50"] == 100.0
    assert stack["load_average"] == [2.0, 4.0]  # lowest and highest of the rounds
    # Levels of a run without variants are not pooled.
    assert variant_summary(_result()) == {}


def test_a_variant_run_renders_its_comparison() -> None:
    result = _variant_result()
    md = render_markdown(result)
    assert "## Server-settings variants, side by side" in md
    assert "| mst2000 | `hnsw.max_scan_tuples = 2000` |" in md
    assert "| stack | the stack defaults |" in md
    assert "| stack | 16 | 2 | 11.0 | 200.0 | 300.0 |" in md
    assert "| stack | 1 | 16 | 10.0 |" in md  # each round's own row, variant and round first
    assert "txn = BEGIN with the variant's SET LOCAL" in md
    assert "3 of 3" in md and "agent-variants.svg" in md and "agent-load.svg" not in md
    assert md.count("| mst2000 | room |") == 2
    assert "| mst2000 | type | 2 of 4 | 1 | 2 |" in md and "| stack | type | 0 of 4 | 0 | 0 |" in md
    svg = ET.fromstring(variants_svg(result))
    bars = [e for e in svg.iter() if e.tag.endswith("rect") and e.get("height")]
    assert len(bars) > 2 * 2 * 3  # panels' bars besides frames and legends


def test_an_exact_scan_rate_is_rows_per_second_at_the_median_query() -> None:
    rate = scan_rate(100_000, [80.0, 100.0, 120.0])
    assert rate["vectors_per_s"] == 1_000_000
    assert rate["latency_ms"]["p50"] == 100.0
    assert scan_rate(10, [])["vectors_per_s"] is None
    result = _result()
    result["exact_scan"] = {"l2": {"operator": "<->", **rate, "workers": 1}}
    assert (
        "- l2 (`ORDER BY embedding <-> q LIMIT 10`): p50 / p95 100.0 / 120.0 ms over 100,000 "
        "rows, 1.00 M vectors/s; 1 parallel worker(s) launched, 3 queries."
    ) in render_markdown(result)
