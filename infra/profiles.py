"""Schema profiles: which ElizaOS a stack serves, and the kit's migrations for each.

eliza-0.1  the seed guide's schema for @elizaos/adapter-postgres 0.1, written by sql/*.sql.
eliza-1    @elizaos/plugin-sql 1.x writes its own tables; sql/eliza-1/*.sql prepares what it
           needs around them (extensions, the migration role's ledger, default privileges).
"""

from __future__ import annotations

from pathlib import Path

from infra.settings import SchemaProfile

SQL_ROOT = Path(__file__).resolve().parents[1] / "sql"
SQL_DIRS: dict[SchemaProfile, Path] = {
    "eliza-0.1": SQL_ROOT,
    "eliza-1": SQL_ROOT / "eliza-1",
}


def sql_dir(profile: SchemaProfile) -> Path:
    return SQL_DIRS[profile]
