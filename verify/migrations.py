"""The migration files this repository ships, and how the ledger must record them.

elizadb-migrate (image/migrate.sh) records one row per applied file in
elizadb.schema_migrations: version NNNN, the file name, and the sha256 hex of the file's bytes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_-]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    checksum: str


def migration_files(directory: Path = SQL_DIR) -> dict[str, Migration]:
    """Every NNNN_name.sql in `directory` by version, with the sha256 of its bytes."""
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[match.group(1)] = Migration(match.group(1), path.name, digest)
    return found


def ledger_problems(files: dict[str, Migration], ledger: list[Migration]) -> list[str]:
    """Differences between the repository's files and the ledger rows: files not applied,
    checksums or names that differ (a tampered ledger, or a file edited after it was applied),
    and rows for which the repository has no file."""
    problems = []
    recorded = {row.version: row for row in ledger}
    for version, wanted in sorted(files.items()):
        row = recorded.get(version)
        if row is None:
            problems.append(f"{wanted.name} is not applied (no ledger row for version {version})")
        elif row.checksum != wanted.checksum:
            problems.append(
                f"{wanted.name}: the ledger records checksum {row.checksum[:12]}…, the file has "
                f"{wanted.checksum[:12]}… (the ledger was altered, or the file changed after it "
                "was applied)"
            )
        elif row.name != wanted.name:
            problems.append(
                f"version {version}: the ledger names {row.name}, the file is {wanted.name}"
            )
    for version, row in sorted(recorded.items()):
        if version not in files:
            problems.append(
                f"the ledger records {row.name} (version {version}), which this "
                "repository does not have: the stack runs a newer schema"
            )
    return problems
