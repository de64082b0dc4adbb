"""The backups family's rules: which checks apply where the repository is not mounted on the
primary, and the judgement of WAL archiving from the primary's settings and pg_stat_archiver."""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Any, cast

import pytest

from tests.unit.test_verify_outputs import sample_outputs
from verify.checks import ALL_CHECKS
from verify.checks.backups import Archiver, archive_tool, check_archiving, judge_archiving
from verify.context import Context
from verify.errors import OutputsError
from verify.model import Unreachable
from verify.outputs import load_outputs

COMMAND = "pgbackrest --stanza=elizadb archive-push %p"
T0 = datetime.datetime(2026, 12, 2, 10, 0, 0, tzinfo=datetime.UTC)
LATER = T0 + datetime.timedelta(minutes=5)
HEALTHY = Archiver("on", COMMAND, 42, "00000001000000000000002A", T0, 0, None, None)


def _applying(backup_mount: str | None) -> set[str]:
    raw = sample_outputs()
    if backup_mount is not None:
        raw["backupMount"] = backup_mount
    outputs = load_outputs(raw)
    return {c.id for c in ALL_CHECKS if c.family == "backups" and c.applies_to(outputs)}


def test_the_mount_checks_apply_only_where_the_repository_is_mounted() -> None:
    every = {"backups.volume", "backups.writable", "backups.archiving"}
    assert _applying(None) == every  # outputs from before the key: the image's path
    assert _applying("/var/lib/pgbackrest") == every
    assert _applying("") == {"backups.archiving"}  # a remote repository host


def test_an_empty_backup_mount_survives_loading_and_a_null_is_refused() -> None:
    raw = sample_outputs()
    raw["backupMount"] = ""
    assert load_outputs(raw).backup_mount == ""
    del raw["backupMount"]
    assert load_outputs(raw).backup_mount == "/var/lib/pgbackrest"
    raw["backupMount"] = None
    with pytest.raises(OutputsError, match="backupMount: expected str, got NoneType"):
        load_outputs(raw)


def test_a_healthy_archiver_passes_naming_the_tool_the_count_and_the_last_segment() -> None:
    outcome = judge_archiving(HEALTHY)
    assert outcome.status == "pass"
    assert outcome.summary == (
        "archiving with pgBackRest archive-push: 42 segment(s) archived "
        "(the last 00000001000000000000002A at 2026-12-02 10:00:00 UTC)"
    )


def test_a_failure_newer_than_the_last_success_fails_with_the_segment_time_and_count() -> None:
    outcome = judge_archiving(
        replace(
            HEALTHY,
            failed_count=7,
            last_failed_wal="00000001000000000000002B",
            last_failed_time=LATER,
        )
    )
    assert outcome.status == "fail"
    assert outcome.summary == (
        "archiving 00000001000000000000002B failed at 2026-12-02 10:05:00 UTC (7 failed "
        "attempt(s) in all; last archived: 00000001000000000000002A at 2026-12-02 10:00:00 UTC)"
    )
    assert "archive-push" in outcome.fix and "elizadb backups" in outcome.fix


def test_a_failure_followed_by_a_success_passes_and_mentions_it() -> None:
    outcome = judge_archiving(
        replace(
            HEALTHY,
            failed_count=3,
            last_failed_wal="00000001000000000000002A",
            last_failed_time=T0 - datetime.timedelta(seconds=1),
        )
    )
    assert outcome.status == "pass"
    assert "3 earlier failed attempt(s), the last at 2026-12-02 09:59:59 UTC" in outcome.summary


def test_failures_and_no_success_fail() -> None:
    outcome = judge_archiving(
        Archiver("on", COMMAND, 0, None, None, 2, "000000010000000000000001", T0)
    )
    assert outcome.status == "fail"
    assert "archiving 000000010000000000000001 failed at 2026-12-02 10:00:00 UTC" in outcome.summary
    assert "2 failed attempt(s) in all; last archived: none yet" in outcome.summary


def test_nothing_archived_yet_and_no_failure_passes_with_a_note() -> None:
    outcome = judge_archiving(Archiver("on", COMMAND, 0, None, None, 0, None, None))
    assert outcome.status == "pass"
    assert outcome.summary.startswith("archiving with pgBackRest archive-push: 0 segment(s)")
    assert "none yet" in outcome.summary and "failover" in outcome.summary


@pytest.mark.parametrize(
    ("mode", "command", "says"),
    [
        ("off", "(disabled)", "archive_mode is 'off'"),
        ("on", "", "archive_command is ''"),
        ("on", "(disabled)", "archive_command is '(disabled)'"),
    ],
)
def test_archiving_switched_off_fails(mode: str, command: str, says: str) -> None:
    outcome = judge_archiving(replace(HEALTHY, mode=mode, command=command))
    assert outcome.status == "fail"
    assert outcome.summary.startswith(says)
    assert "archive_mode = on" in outcome.fix


def test_archive_tool_names_pgbackrest_and_other_programs() -> None:
    assert archive_tool(COMMAND) == "pgBackRest archive-push"
    assert (
        archive_tool("/usr/bin/pgbackrest --stanza=x archive-push %p") == "pgBackRest archive-push"
    )
    assert archive_tool("cp %p /mnt/archive/%f") == "cp"


class _Ctx:
    """A run whose primary cannot be reached."""

    outputs = load_outputs(sample_outputs())

    def node(self, endpoint: Any) -> Any:
        raise Unreachable("primary", "health.reachable", "Connection refused")


def test_an_unreachable_primary_skips_on_health_reachable() -> None:
    outcome = check_archiving(cast(Context, _Ctx()))
    assert outcome.status == "skip" and outcome.depends_on == ("health.reachable",)
