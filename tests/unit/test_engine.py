"""The engine module's pure parts: archives of files and bounded waits."""

from __future__ import annotations

import io
import tarfile

import pytest

from elizadb.engine import File, tar_files, wait_until
from elizadb.errors import EngineError


def test_files_are_archived_with_their_folders_and_modes() -> None:
    data = tar_files(
        [
            File("/usr/local/bin/run", "#!/bin/sh\n", 0o755),
            File("/etc/pgbackrest/pgbackrest.conf", "[global]\n"),
        ]
    )
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == [
            "etc",
            "etc/pgbackrest",
            "etc/pgbackrest/pgbackrest.conf",
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/run",
        ]
        modes = {m.name: m.mode for m in tar.getmembers()}
        assert modes["usr/local/bin/run"] == 0o755
        assert modes["etc/pgbackrest/pgbackrest.conf"] == 0o644
        assert modes["etc/pgbackrest"] == 0o755
        member = tar.extractfile("etc/pgbackrest/pgbackrest.conf")
        assert member is not None and member.read() == b"[global]\n"


def test_the_same_files_in_any_order_make_the_same_archive() -> None:
    files = [File("/b/two", "2"), File("/a/one", "1"), File("/a/three", "3")]
    assert tar_files(files) == tar_files(reversed(files))


def test_an_archive_ends_at_its_end_blocks_without_record_padding() -> None:
    """Podman's copier stops reading at the two zero end blocks; padding after them made an
    upload fail with "broken pipe" (containers/buildah#6573)."""
    data = tar_files([File("/etc/x", "x" * 700)])
    # one header and two data blocks for the folder and the file, then the two end blocks
    assert len(data) == 512 * (1 + 1 + 2 + 2)
    assert data[-1024:] == bytes(1024) and data[-1536:-1024] != bytes(512)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("etc/x")
        assert member is not None and member.read() == b"x" * 700


def test_a_wait_returns_once_its_check_holds() -> None:
    answers = iter([False, False, True])
    assert wait_until("the thing", lambda: next(answers), 5, interval_s=0.01) < 5


def test_a_wait_that_times_out_says_what_it_waited_for_and_why() -> None:
    with pytest.raises(EngineError, match=r"(?s)node-1 promotion: not done after 0s.*exit code 1"):
        wait_until(
            "node-1 promotion",
            lambda: False,
            0,
            interval_s=0.01,
            on_timeout=lambda: "node-1: status exited, exit code 1",
        )
