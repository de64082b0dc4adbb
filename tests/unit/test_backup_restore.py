"""Pure parts of backups and restores: the catalog read from `pgbackrest info --output=json`, the
recovery target, the checks made before anything is stopped, and what happens to each node."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from elizadb.errors import UsageError
from elizadb.ops.backup import catalog_json, parse_info, render_table
from elizadb.ops.backup_engine import BackupError
from elizadb.ops.restore import RecoveryTarget, check_target, parse_time, plan
from infra.settings import load_settings
from infra.topology import topology

# The shape pgBackRest 2.55 prints (trimmed to the fields read), one full and one incremental.
INFO = [
    {
        "archive": [
            {"id": "17-1", "min": "000000010000000000000001", "max": "00000001000000000000000D"}
        ],
        "backup": [
            {
                "archive": {
                    "start": "00000001000000000000000B",
                    "stop": "00000001000000000000000B",
                },
                "info": {
                    "delta": 20000,
                    "repository": {"delta": 460, "size": 6000000},
                    "size": 32000000,
                },
                "label": "20261126-104315F_20261126-104454I",
                "lsn": {"start": "0/B000028", "stop": "0/B000120"},
                "prior": "20261126-104315F",
                "timestamp": {"start": 1795689894, "stop": 1795689896},
                "type": "incr",
            },
            {
                "archive": {
                    "start": "000000010000000000000004",
                    "stop": "000000010000000000000005",
                },
                "info": {
                    "delta": 31900000,
                    "repository": {"delta": 6000000, "size": 6000000},
                    "size": 31900000,
                },
                "label": "20261126-104315F",
                "lsn": {"start": "0/4000028", "stop": "0/5000050"},
                "prior": None,
                "timestamp": {"start": 1795689795, "stop": 1795689797},
                "type": "full",
            },
        ],
        "name": "elizadb",
        "status": {"code": 0, "message": "ok"},
    }
]


def test_the_catalog_lists_backups_oldest_first_with_sizes_times_and_wal_ranges() -> None:
    catalog = parse_info(json.dumps(INFO))
    assert [b.label for b in catalog.backups] == [
        "20261126-104315F",
        "20261126-104315F_20261126-104454I",
    ]
    full, incr = catalog.backups
    assert (full.type, full.size, full.repo_size) == ("full", 31900000, 6000000)
    assert (full.wal_start, full.wal_stop, full.timeline) == (
        "000000010000000000000004",
        "000000010000000000000005",
        1,
    )
    assert incr.prior == full.label and incr.repo_size == 460
    assert full.stopped == dt.datetime.fromtimestamp(1795689797, dt.UTC)
    assert catalog.recoverable_from == full.stopped
    assert (catalog.archive_min, catalog.archive_max) == (
        "000000010000000000000001",
        "00000001000000000000000D",
    )
    assert catalog.newest("full") == full and catalog.newest() == incr


def test_the_catalog_of_an_empty_repository() -> None:
    assert parse_info("[]").backups == ()
    empty = parse_info(
        json.dumps([{"name": "elizadb", "status": {"message": "missing stanza path"}}])
    )
    assert empty.recoverable_from is None and empty.status == "missing stanza path"
    assert "(no backups yet)" in render_table(empty)


def test_garbage_from_pgbackrest_is_an_error() -> None:
    with pytest.raises(BackupError, match="did not print JSON"):
        parse_info("ERROR: [055]: unable to load info file")


def test_the_table_and_json_name_every_backup() -> None:
    catalog = parse_info(json.dumps(INFO))
    table = render_table(
        catalog, {"last_attempt": "1795689896", "last_type": "incr", "last_result": "ok"}
    )
    assert "20261126-104315F_20261126-104454I  incr" in table
    assert (
        "30.4 MB" in table
        and "WAL archive:   000000010000000000000001 .. 00000001000000000000000D" in table
    )
    assert "schedule:      last incr backup at" in table
    data = catalog_json(catalog)
    assert data["backups"][0]["label"] == "20261126-104315F"
    assert data["restorableFrom"] == "2026-11-26T10:43:17+00:00"
    json.dumps(data)


def test_times_need_a_zone_and_are_kept_in_utc() -> None:
    assert parse_time("2026-11-26T12:00:00+02:00") == dt.datetime(2026, 11, 26, 10, tzinfo=dt.UTC)
    assert parse_time("2026-11-26 10:00:00.5Z").microsecond == 500000
    with pytest.raises(UsageError, match="give the time zone"):
        parse_time("2026-11-26T10:00:00")
    with pytest.raises(UsageError, match="not an ISO 8601 time"):
        parse_time("yesterday")


def test_a_point_in_time_is_exclusive_and_promotes() -> None:
    target = RecoveryTarget(dt.datetime(2026, 11, 26, 10, 46, 14, 250000, tzinfo=dt.UTC))
    assert target.pgbackrest_args() == [
        "--type=time",
        "--target=2026-11-26 10:46:14.250000+00",
        "--target-action=promote",
        "--target-exclusive",
    ]
    assert RecoveryTarget().pgbackrest_args() == ["--type=default"]


def test_targets_the_repository_cannot_reach_are_refused_before_anything_stops() -> None:
    catalog = parse_info(json.dumps(INFO))
    now = dt.datetime(2026, 11, 26, 11, 0, tzinfo=dt.UTC)
    end_of_first = catalog.recoverable_from
    assert end_of_first is not None
    with pytest.raises(UsageError, match="before the oldest backup ends"):
        check_target(RecoveryTarget(end_of_first), catalog, now)
    with pytest.raises(UsageError, match="in the future"):
        check_target(RecoveryTarget(now + dt.timedelta(seconds=1)), catalog, now)
    check_target(RecoveryTarget(end_of_first + dt.timedelta(seconds=1)), catalog, now)
    check_target(RecoveryTarget(), catalog, now)
    with pytest.raises(BackupError, match="no backup to restore from"):
        check_target(RecoveryTarget(), parse_info("[]"), now)


def test_replicas_are_cleared_to_reclone_and_the_target_is_restored() -> None:
    topo = topology(load_settings("dev", {"replicas": 2}, "t"))
    steps = {s.node.short: s.action for s in plan(topo, topo.primary)}
    assert steps == {"primary": "restore", "replica-1": "clear", "replica-2": "clear"}


def test_after_a_failover_the_first_node_is_restored_as_a_standby_never_cleared() -> None:
    # Cleared, the node created as "primary" would run initdb: a second, empty primary.
    topo = topology(load_settings("dev", {"replicas": 2, "primaryNode": "replica-1"}, "t"))
    steps = {s.node.short: s.action for s in plan(topo, topo.current_primary)}
    assert steps == {"primary": "restore-standby", "replica-1": "restore", "replica-2": "clear"}
