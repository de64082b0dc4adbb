"""Backup schedule and maintenance settings: defaults, and every invalid value reported at once
with its key path."""

from __future__ import annotations

import pytest

from elizadb.errors import ConfigError
from infra.settings import duration_seconds, load_settings


def problems(values: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings("dev", values, "Pulumi.dev.yaml")
    return caught.value.problems


def test_defaults_take_a_weekly_full_a_daily_incremental_and_delete_nothing() -> None:
    s = load_settings("dev", {}, "x")
    assert s.backup.retention_full == 2
    assert (s.backup.full_every_seconds, s.backup.incr_every_seconds) == (7 * 86400, 86400)
    assert s.maintenance.memory_retention_days is None


def test_durations_in_every_unit() -> None:
    assert [duration_seconds(d) for d in ("45s", "30m", "24h", "7d")] == [45, 1800, 86400, 604800]
    s = load_settings("dev", {"backup": {"fullEvery": "1h", "incrEvery": "15s"}}, "x")
    assert (s.backup.full_every_seconds, s.backup.incr_every_seconds) == (3600, 15)


def test_bad_schedule_values_are_reported_together() -> None:
    found = problems(
        {
            "backup": {"fullEvery": "weekly", "incrEvery": "5s", "retentionFull": 0},
            "maintenance": {"memoryRetentionDays": 0},
        }
    )
    assert any(
        p.startswith("elizadb:backup.fullEvery = 'weekly': must be a duration") for p in found
    )
    assert any(p.startswith("elizadb:backup.incrEvery = '5s': must be at least 10s") for p in found)
    assert any(p.startswith("elizadb:backup.retentionFull = 0") for p in found)
    assert any(p.startswith("elizadb:maintenance.memoryRetentionDays = 0") for p in found)
    assert len(found) == 4, found


def test_an_incremental_interval_not_shorter_than_the_full_one_is_refused() -> None:
    (found,) = problems({"backup": {"fullEvery": "1d", "incrEvery": "24h"}})
    assert found.startswith(
        "elizadb:backup.incrEvery = '24h': must be shorter than elizadb:backup.fullEvery"
    )
    # against the default fullEvery (7d) as well
    (found,) = problems({"backup": {"incrEvery": "8d"}})
    assert "elizadb:backup.fullEvery ('7d')" in found


def test_unknown_keys_are_refused() -> None:
    (found,) = problems({"maintenance": {"memoryRetention": 30}})
    assert found.startswith("elizadb:maintenance.memoryRetention: unknown key")


def test_retention_days_when_set() -> None:
    s = load_settings("dev", {"maintenance": {"memoryRetentionDays": 180}}, "x")
    assert s.maintenance.memory_retention_days == 180
