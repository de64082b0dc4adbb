"""The repository carried from one engine to another (elizadb/ops/restore_into.py): an archive
without the stanza is refused, and one that holds it is cut at its end-of-archive blocks."""

from __future__ import annotations

import io
import tarfile

import pytest

from elizadb.ops.backup_engine import BackupError
from elizadb.ops.restore_into import _check_repository_archive


def _archive(*names: str) -> io.BytesIO:
    """What an engine's archive API hands out: entries under the folder's base name, padded
    by tarfile to a multiple of 10 KiB."""
    spool = io.BytesIO()
    with tarfile.open(fileobj=spool, mode="w") as tar:
        for name in names:
            data = name.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    spool.seek(0, io.SEEK_END)
    return spool


def test_an_archive_with_the_stanza_is_cut_at_its_end_blocks_and_reads_back_whole() -> None:
    names = ["source-repo/backup/elizadb/backup.info", "source-repo/archive/elizadb/archive.info"]
    spool = _archive(*names)
    padded = spool.tell()
    _check_repository_archive(spool, "src")
    assert spool.tell() == 0
    data = spool.getvalue()
    assert len(data) < padded and len(data) % tarfile.BLOCKSIZE == 0
    assert data.endswith(bytes(2 * tarfile.BLOCKSIZE))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == names
        assert tar.extractfile(names[0]).read() == names[0].encode()  # type: ignore[union-attr]


def test_an_archive_without_the_stanza_is_refused_naming_the_stack() -> None:
    spool = _archive("source-repo/some-file")
    with pytest.raises(BackupError, match="stack src's backup volume holds no pgBackRest"):
        _check_repository_archive(spool, "src")
