"""The pooler benchmark measures variants of exactly the deployed pgbouncer.ini: a variant
changes only its own keys and its port."""

from __future__ import annotations

from bench.pooler_bench import VARIANTS, variant_ini
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
