"""The pooler benchmark measures variants of exactly the deployed pgbouncer.ini: a variant
changes only its own keys and its port."""

from __future__ import annotations

from bench.pooler_bench import VARIANTS, summarize, variant_ini
from infra.render.pgbouncer import render_pgbouncer_ini
from infra.settings import load_settings
from infra.topology import topology


def _keys(ini: str) -> dict[str, str]:
    return {
        line.split("=", 1)[0].strip(): line.split("=", 1)[1].strip()
        for line in ini.splitlines()
        if "=" in line and not line.startswith(";")
    }


def test_a_variant_changes_only_its_keys_and_the_port() -> None:
    settings = load_settings("p12unit", {}, "t")
    deployed = render_pgbouncer_ini(settings, topology(settings))
    for name, variant in VARIANTS.items():
        changed = _keys(variant_ini(deployed, variant.changes, 6450))
        expected = {**_keys(deployed), **variant.changes, "listen_port": "6450"}
        assert changed == expected, name
    # Keys the deployed file lacks are added, ones it has are replaced in place (no duplicates).
    ini = variant_ini(deployed, {"so_reuseport": "1", "pool_mode": "session"}, 6451)
    assert ini.count("pool_mode =") == 1 and "pool_mode = session" in ini
    assert "so_reuseport = 1" in ini


def test_only_diagnostic_variants_leave_the_same_tls() -> None:
    for name, variant in VARIANTS.items():
        plain = variant.client_sslmode != "verify-full" or any(
            "sslmode" in key for key in variant.changes
        )
        assert plain == variant.diagnostic, name


def _run(rnd: int, path: str, tps: float, machine_us: float) -> dict[str, object]:
    return {
        "round": rnd,
        "mode": "select-only",
        "protocol": "simple",
        "path": path,
        "tps": tps,
        "cpus_busy": 2.0,
        "cpu_us_per_tx": {"client": 1.0, "server": 2.0, "pooler": 3.0, "machine": machine_us},
    }


def test_the_loss_is_taken_per_round_and_the_cpu_time_predicts_one() -> None:
    runs = [
        _run(1, "direct", 1000, 100),
        _run(1, "deployed", 800, 125),
        _run(2, "direct", 500, 100),  # a round on a busier machine: both paths slower
        _run(2, "deployed", 250, 200),
        _run(3, "direct", 1000, 100),
        _run(3, "deployed", 700, 140),
    ]
    row = summarize(runs, ["direct", "deployed"])["select-only/simple/deployed"]
    # Losses 20 %, 50 %, 30 %: the median of the rounds, not of the pooled throughputs.
    assert row["median_loss_vs_direct"] == 0.3
    # 1 - 100/125, 1 - 100/200, 1 - 100/140.
    assert row["median_loss_predicted_by_cpu"] == 0.286
    assert row["median_tps"] == 700
    assert row["median_cpu_us_per_tx"]["machine"] == 140


def test_with_the_server_on_cpus_of_its_own_its_cpu_time_predicts_the_loss() -> None:
    """--pin: the server's CPU time per transaction (2.0 direct, 2.5 pooled) is the limit."""
    pooled = _run(1, "deployed", 800, 125)
    pooled["cpu_us_per_tx"] = {"client": 1.0, "server": 2.5, "pooler": 3.0, "machine": 125}
    runs = [_run(1, "direct", 1000, 100), pooled]
    row = summarize(runs, ["direct", "deployed"], "server")["select-only/simple/deployed"]
    assert row["median_loss_predicted_by_cpu"] == 0.2
