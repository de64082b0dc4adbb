"""Pure parts of the checks: what they make of catalog rows, admin-console rows, df and
mountinfo output, the ledger; the expected schema against sql/; the synthetic embeddings."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from verify import expected_schema as want
from verify.checks.pooler import config_problems
from verify.checks.replication import Slot, slot_problems
from verify.checks.schema import LiveColumn, LiveIndex, column_problems, index_problems
from verify.checks.tls import hba_problems, tls_refusal
from verify.migrations import SQL_DIR, Migration, ledger_problems, migration_files
from verify.server_files import mount_point, parse_df
from verify.synthetic import clustered_vectors

# ---- server files --------------------------------------------------------------------------


def test_df_output_gives_total_and_free_bytes() -> None:
    usage = parse_df(
        "Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
        "/dev/vda         264212084 26207760  80183152      25% /var/lib/postgresql/data\n",
        "/var/lib/postgresql/data",
    )
    assert (usage.total_bytes, usage.free_bytes) == (264212084 * 1024, 80183152 * 1024)
    assert usage.free_fraction == pytest.approx(0.3035, abs=1e-4)
    with pytest.raises(ValueError):
        parse_df("df: /nope: No such file or directory\n", "/nope")


MOUNTINFO = (
    "465 294 0:112 / / rw,relatime - overlay overlay rw,lowerdir=/a\n"
    "510 465 254:0 /var/lib/containers/storage/volumes/elizadb-dev-backup/_data "
    "/var/lib/pgbackrest rw,nosuid,nodev,relatime - ext4 /dev/vda rw,discard\n"
    "511 465 254:0 /data /var/lib/postgresql/data ro,relatime shared:1 - ext4 /dev/vda rw\n"
)


def test_mount_point_finds_the_entry_mounted_exactly_there() -> None:
    backup = mount_point(MOUNTINFO, "/var/lib/pgbackrest")
    assert backup == {
        "root": "/var/lib/containers/storage/volumes/elizadb-dev-backup/_data",
        "options": "rw,nosuid,nodev,relatime",
        "fstype": "ext4",
        "source": "/dev/vda",
    }
    data = mount_point(MOUNTINFO, "/var/lib/postgresql/data")  # optional fields before " - "
    assert data is not None and data["options"].startswith("ro")
    assert mount_point(MOUNTINFO, "/var/lib") is None


# ---- tls.hba_auth ---------------------------------------------------------------------------


def _rule(line: int, kind: str, method: str, user: str = "all", error: str | None = None) -> dict:
    return {
        "line_number": line,
        "type": kind,
        "database": ["all"],
        "user_name": [user],
        "address": None if kind == "local" else "all",
        "auth_method": method,
        "error": error,
    }


def test_only_scram_or_reject_on_the_network_and_peer_or_reject_locally() -> None:
    good = [
        _rule(3, "local", "peer", "postgres"),
        _rule(4, "local", "reject"),
        _rule(5, "hostnossl", "reject"),
        _rule(8, "hostssl", "scram-sha-256"),
        _rule(9, "host", "reject"),
    ]
    assert hba_problems("primary", good) == []
    bad = [
        *good,
        _rule(6, "hostssl", "trust", "eliza_agent"),
        _rule(7, "host", "md5"),
        _rule(2, "local", "trust"),
        _rule(10, "hostssl", "", error="invalid auth method"),
    ]
    assert hba_problems("primary", bad) == [
        (
            "primary: pg_hba.conf line 6: hostssl all eliza_agent all uses trust; only "
            "scram-sha-256 or reject are allowed"
        ),
        (
            "primary: pg_hba.conf line 7: host all all all uses md5; only scram-sha-256 or reject "
            "are allowed"
        ),
        "primary: pg_hba.conf line 2: local rule with method trust",
        "primary: pg_hba.conf line 10: invalid auth method",
    ]


# ---- replication.slots ----------------------------------------------------------------------


def test_slots_must_be_active_for_replicas_and_no_other_may_hold_wal() -> None:
    slots = [
        Slot("elizadb_replica_1", True, "reserved", 100),
        Slot("elizadb_replica_2", False, "reserved", 3 * 2**20),
        Slot("orphan", False, "reserved", 2**20),
        Slot("never_used", False, None, None),
        Slot("gone", True, "lost", None),
    ]
    wanted = {
        "elizadb_replica_1": "replica-1",
        "elizadb_replica_2": "replica-2",
        "elizadb_replica_3": "replica-3",
        "": "replica-4",
    }
    assert slot_problems(slots, wanted) == [
        "replica-2's slot elizadb_replica_2 is not active",
        "replica-3's slot elizadb_replica_3 does not exist on the primary",
        "replica-4 streams without a replication slot (primary_slot_name empty)",
        "inactive slot orphan holds 1.0 MiB of WAL (wal_status reserved)",
        "slot gone has lost WAL its replica needs (wal_status lost)",
    ]


# ---- pooler.config --------------------------------------------------------------------------


def test_pooler_config_wants_scram_and_tls_both_ways() -> None:
    good = {
        "auth_type": "scram-sha-256",
        "client_tls_sslmode": "require",
        "server_tls_sslmode": "verify-full",
    }
    servers = [
        {
            "user": "eliza_agent",
            "database": "eliza",
            "addr": "10.0.0.2",
            "tls": "TLSv1.3/TLS_AES_256_GCM_SHA384",
        }
    ]
    assert config_problems(good, servers) == []
    bad = {"auth_type": "md5", "client_tls_sslmode": "prefer", "server_tls_sslmode": "require"}
    problems = config_problems(bad, [{**servers[0], "tls": ""}])
    assert [p.split(" ")[0] for p in problems] == [
        "auth_type",
        "client_tls_sslmode",
        "server_tls_sslmode",
        "server",
    ]


# ---- schema ---------------------------------------------------------------------------------


def _live(table: want.Table, dims: int = 1536) -> dict[str, LiveColumn]:
    """A table exactly as expected."""
    cols = {}
    for c in table.columns:
        full = f"vector({dims})" if c.type == "vector" else c.type
        cols[c.name] = LiveColumn(
            c.name,
            full,
            c.type,
            c.not_null,
            c.default,
            c.storage or "x",
            dims if c.type == "vector" else -1,
        )
    return cols


MEMORIES = next(t for t in want.TABLES if t.name == "memories")


def test_an_expected_table_has_no_column_problems_whatever_its_dimension() -> None:
    assert column_problems(MEMORIES, _live(MEMORIES)) == []
    assert column_problems(MEMORIES, _live(MEMORIES, dims=768)) == []  # vector_dimension's job


def test_column_differences_are_each_named() -> None:
    live = _live(MEMORIES)
    del live["isUnique"]
    live["type"] = LiveColumn(
        "type", "character varying(10)", "character varying", True, None, "x", 14
    )
    live["content"] = LiveColumn("content", "jsonb", "jsonb", False, None, "x", -1)
    live["embedding"] = LiveColumn("embedding", "vector(1536)", "vector", False, None, "e", 1536)
    live["tenant"] = LiveColumn("tenant", "uuid", "uuid", True, None, "p", -1)
    live["note"] = LiveColumn("note", "text", "text", False, None, "x", -1)  # harmless extra
    assert column_problems(MEMORIES, live) == [
        "memories.type is character varying(10), expected text",
        "memories.content is nullable, expected NOT NULL",
        "memories.embedding has storage e, expected p (PLAIN keeps vectors inline, out of TOAST)",
        "memories.isUnique is missing",
        (
            "memories.tenant is an unexpected NOT NULL column without a default: inserts that do "
            "not know it fail"
        ),
    ]


def test_index_differences_are_each_named() -> None:
    cosine = next(i for i in MEMORIES.indexes if i.name == "idx_memories_embedding")
    right = LiveIndex(
        "memories", cosine.name, "hnsw", ("embedding",), ("vector_cosine_ops",), False, True, False
    )
    assert index_problems(cosine, "memories", right) == []
    assert index_problems(cosine, "memories", None) == [
        "index idx_memories_embedding on memories is missing"
    ]
    wrong = LiveIndex(
        "memories", cosine.name, "ivfflat", ("embedding",), ("vector_l2_ops",), False, False, True
    )
    assert index_problems(cosine, "memories", wrong) == [
        "index idx_memories_embedding uses ivfflat, expected hnsw",
        "index idx_memories_embedding has operator class vector_l2_ops, expected vector_cosine_ops",
        "index idx_memories_embedding is partial",
        "index idx_memories_embedding is invalid (a failed CREATE INDEX CONCURRENTLY or REINDEX)",
    ]


def _sql() -> str:
    return "\n".join(p.read_text() for p in sorted(SQL_DIR.glob("*.sql")))


def test_the_expected_schema_names_every_table_and_index_that_sql_creates() -> None:
    # A cheap guard against drift; the integration test compares column by column.
    text = _sql()
    tables = set(re.findall(r"CREATE TABLE IF NOT EXISTS public\.(\w+)", text))
    indexes = set(re.findall(r"CREATE (?:UNIQUE )?INDEX IF NOT EXISTS (\w+)", text))
    assert tables == {t.name for t in want.TABLES}
    named = {i.name for t in want.TABLES for i in t.indexes}
    assert indexes <= named
    assert {i for i in named - indexes if not i.endswith(("_pkey", "_key"))} == set()
    rls = set(re.findall(r"'(\w+)'", text.split("ARRAY['accounts'", 1)[1].split("]", 1)[0]))
    assert rls | {"accounts"} == set(want.RLS_TABLES)


# ---- the ledger -----------------------------------------------------------------------------


def test_migration_files_are_found_with_their_sha256(tmp_path: Path) -> None:
    (tmp_path / "0001_one.sql").write_bytes(b"SELECT 1;\n")
    (tmp_path / "0002_two.sql").write_bytes(b"SELECT 2;\n")
    (tmp_path / "notes.sql").write_bytes(b"-- not a migration\n")
    found = migration_files(tmp_path)
    assert list(found) == ["0001", "0002"]
    assert found["0001"] == Migration(
        "0001", "0001_one.sql", hashlib.sha256(b"SELECT 1;\n").hexdigest()
    )
    assert set(migration_files()) >= {"0001", "0008"}  # the repository's own


def test_ledger_differences_are_each_named() -> None:
    files = {v: Migration(v, f"{v}_m.sql", v * 16) for v in ("0001", "0002", "0003")}
    ledger = [
        Migration("0001", "0001_m.sql", "0001" * 16),
        Migration("0002", "0002_m.sql", "0" * 64),
        Migration("0009", "0009_new.sql", "9" * 64),
    ]
    assert ledger_problems(files, list(files.values())) == []
    assert ledger_problems(files, ledger) == [
        (
            "0002_m.sql: the ledger records checksum 000000000000…, the file has 000200020002… "
            "(the ledger was altered, or the file changed after it was applied)"
        ),
        "0003_m.sql is not applied (no ledger row for version 0003)",
        (
            "the ledger records 0009_new.sql (version 0009), which this repository does not have: "
            "the stack runs a newer schema"
        ),
    ]


# ---- synthetic embeddings -------------------------------------------------------------------


def test_synthetic_vectors_are_unit_length_deterministic_and_clustered() -> None:
    a = clustered_vectors(600, 256, seed=1)
    assert a.shape == (600, 256) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, clustered_vectors(600, 256, seed=1))
    # Structure, unlike i.i.d. noise: each point's nearest neighbour is much closer than a
    # typical point, and most of the variance lies in a few directions.
    sims = a @ a.T
    np.fill_diagonal(sims, -1)
    nearest = sims.max(axis=1).mean()
    typical = sims[sims > -1].mean()
    assert nearest > 0.8 and typical < 0.2
    spectrum = np.linalg.svd(a, compute_uv=False) ** 2
    assert spectrum[:32].sum() / spectrum.sum() > 0.9
    iid = np.random.default_rng(1).standard_normal((600, 256))
    iid /= np.linalg.norm(iid, axis=1, keepdims=True)
    iid_sims = iid @ iid.T
    np.fill_diagonal(iid_sims, -1)
    assert iid_sims.max(axis=1).mean() < 0.35  # what the tripwire warns about


# The first and the last as a deployed stack's primary and pooler answered a connection with
# sslmode=disable (measured); the second is PostgreSQL's wording when pg_hba.conf has hostssl
# rules only.
AT = 'connection failed: connection to server at "127.0.0.1", port 49200 failed: FATAL:  '
FOR = 'for host "10.201.84.1", user "postgres", database "postgres"'
TLS_REFUSALS = [
    f"{AT}pg_hba.conf rejects connection {FOR}, no encryption",
    f"{AT}no pg_hba.conf entry {FOR}, no encryption",
    f"{AT}SSL required",
]
OTHER_REFUSALS = [
    f"{AT}sorry, too many clients already",
    f"{AT}no more connections allowed (max_client_conn)",
    f'{AT}password authentication failed for user "postgres"',
    f"{AT}pg_hba.conf rejects connection {FOR}, SSL encryption",
    f'{AT}database "eliza" is disabled',
]


@pytest.mark.parametrize("message", TLS_REFUSALS)
def test_the_servers_tls_refusals_are_recognised(message: str) -> None:
    assert tls_refusal(message)


@pytest.mark.parametrize("message", OTHER_REFUSALS)
def test_other_refusals_are_not_taken_for_a_tls_refusal(message: str) -> None:
    assert not tls_refusal(message)
