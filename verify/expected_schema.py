"""The schema that sql/ produces, written out: what `schema.*` compares a live database with.

Kept by hand, next to the migrations, rather than derived from them: the suite must know what is
right independently of the database it inspects. tests/integration/test_verify.py proves that a
freshly deployed stack matches it, so a migration that changes the schema without this file
fails there.

Types are as `format_type()` prints them, defaults and constraints as `pg_get_expr()` and
`pg_get_constraintdef()` print them. The embedding columns are `vector`; their dimension is the
stack's `embeddingDimensions` (checked by schema.vector_dimension).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool = False
    default: str | None = None
    storage: str | None = None  # attstorage when it matters: 'p' (plain) for embeddings


@dataclass(frozen=True)
class Index:
    name: str
    method: str  # btree | hnsw
    columns: tuple[str, ...]
    opclasses: tuple[str, ...] = ()  # compared when given; () = the type's default
    unique: bool = False
    # An HNSW index exists only when its distance operator is in the stack's vectorOperators
    # output (elizadb:vector.operators); "" for every other index.
    operator: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    constraints: tuple[str, ...]
    indexes: tuple[Index, ...]


UUID_PK = Column("id", "uuid", True, "gen_random_uuid()")
CREATED = Column("createdAt", "timestamp with time zone", True, "CURRENT_TIMESTAMP")
PK = "PRIMARY KEY (id)"


def _fk(column: str, table: str) -> str:
    return f'FOREIGN KEY ("{column}") REFERENCES {table}(id) ON DELETE CASCADE'


def _btree(name: str, *columns: str, unique: bool = False) -> Index:
    return Index(name, "btree", columns, unique=unique)


TABLES: tuple[Table, ...] = (
    Table(
        "accounts",
        (
            UUID_PK,
            CREATED,
            Column("name", "text"),
            Column("username", "text"),
            Column("email", "text", True),
            Column("avatarUrl", "text"),
            Column("details", "jsonb", False, "'{}'::jsonb"),
        ),
        (PK,),
        (_btree("accounts_pkey", "id", unique=True),),
    ),
    Table("rooms", (UUID_PK, CREATED), (PK,), (_btree("rooms_pkey", "id", unique=True),)),
    Table(
        "memories",
        (
            UUID_PK,
            Column("type", "text", True),
            CREATED,
            Column("content", "jsonb", True),
            Column("embedding", "vector", storage="p"),
            Column("userId", "uuid"),
            Column("agentId", "uuid"),
            Column("roomId", "uuid"),
            Column("unique", "boolean", True, "true"),
            Column("isUnique", "boolean", True, "true"),
        ),
        (PK, _fk("userId", "accounts"), _fk("agentId", "accounts"), _fk("roomId", "rooms")),
        (
            _btree("memories_pkey", "id", unique=True),
            # An HNSW index serves only its operator class's operator: cosine (<=>) and L2 (<->).
            Index(
                "idx_memories_embedding",
                "hnsw",
                ("embedding",),
                ("vector_cosine_ops",),
                operator="cosine",
            ),
            Index(
                "idx_memories_embedding_l2",
                "hnsw",
                ("embedding",),
                ("vector_l2_ops",),
                operator="l2",
            ),
            _btree("idx_memories_type_room", "type", "roomId"),
            _btree("idx_memories_recent", "type", "roomId", "agentId", "createdAt"),
            _btree("idx_memories_user", "userId"),
            _btree("idx_memories_agent", "agentId"),
            _btree("idx_memories_room", "roomId"),
        ),
    ),
    Table(
        "goals",
        (
            UUID_PK,
            CREATED,
            Column("userId", "uuid"),
            Column("name", "text"),
            Column("status", "text"),
            Column("description", "text"),
            Column("roomId", "uuid"),
            Column("objectives", "jsonb", True, "'[]'::jsonb"),
        ),
        (PK, _fk("userId", "accounts"), _fk("roomId", "rooms")),
        (
            _btree("goals_pkey", "id", unique=True),
            _btree("idx_goals_room", "roomId"),
            _btree("idx_goals_user", "userId"),
        ),
    ),
    Table(
        "participants",
        (
            UUID_PK,
            CREATED,
            Column("joinedAt", "timestamp with time zone", True, "CURRENT_TIMESTAMP"),
            Column("userId", "uuid"),
            Column("roomId", "uuid"),
            Column("userState", "text"),
            Column("last_message_read", "text"),
        ),
        (PK, _fk("userId", "accounts"), _fk("roomId", "rooms"), 'UNIQUE ("userId", "roomId")'),
        (
            _btree("participants_pkey", "id", unique=True),
            _btree("participants_userId_roomId_key", "userId", "roomId", unique=True),
            _btree("idx_participants_user", "userId"),
            _btree("idx_participants_room", "roomId"),
        ),
    ),
    Table(
        "relationships",
        (
            UUID_PK,
            CREATED,
            Column("userA", "uuid", True),
            Column("userB", "uuid", True),
            Column("status", "text"),
            Column("userId", "uuid", True),
        ),
        (PK, _fk("userA", "accounts"), _fk("userB", "accounts"), _fk("userId", "accounts")),
        (
            _btree("relationships_pkey", "id", unique=True),
            _btree("idx_relationships_users", "userA", "userB"),
            _btree("idx_relationships_user_b", "userB"),
            _btree("idx_relationships_user", "userId"),
        ),
    ),
    Table(
        "logs",
        (
            UUID_PK,
            CREATED,
            Column("userId", "uuid", True),
            Column("body", "jsonb", True),
            Column("type", "text", True),
            Column("roomId", "uuid", True),
        ),
        (PK, _fk("userId", "accounts"), _fk("roomId", "rooms")),
        (
            _btree("logs_pkey", "id", unique=True),
            _btree("idx_logs_room", "roomId"),
            _btree("idx_logs_user", "userId"),
        ),
    ),
    Table(
        "cache",
        (
            Column("key", "text", True),
            Column("agentId", "text", True),
            Column("value", "jsonb", False, "'{}'::jsonb"),
            CREATED,
            Column("expiresAt", "timestamp with time zone"),
        ),
        ('PRIMARY KEY (key, "agentId")',),
        (_btree("cache_pkey", "key", "agentId", unique=True),),
    ),
    Table(
        "knowledge",
        (
            UUID_PK,
            Column("agentId", "uuid"),
            Column("content", "jsonb", True),
            Column("embedding", "vector", storage="p"),
            CREATED,
            Column("isMain", "boolean", True, "false"),
            Column("originalId", "uuid"),
            Column("chunkIndex", "integer"),
            Column("isShared", "boolean", True, "false"),
        ),
        (
            PK,
            _fk("agentId", "accounts"),
            _fk("originalId", "knowledge"),
            (
                'CHECK ((("isShared" AND ("agentId" IS NULL)) OR ((NOT "isShared") AND ("agentId" IS '
                "NOT NULL))))"
            ),
        ),
        (
            _btree("knowledge_pkey", "id", unique=True),
            _btree("idx_knowledge_agent", "agentId"),
            _btree("idx_knowledge_agent_main", "agentId", "isMain"),
            _btree("idx_knowledge_original", "originalId"),
            _btree("idx_knowledge_created", "agentId", "createdAt"),
            _btree("idx_knowledge_shared", "isShared"),
        ),
    ),
)

# The columns whose dimension must equal the stack's embeddingDimensions.
EMBEDDING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("memories", "embedding"),
    ("knowledge", "embedding"),
)

# Tables with users' rows: row level security enabled and forced, a policy for eliza_user (0008).
RLS_TABLES: tuple[str, ...] = (
    "accounts",
    "rooms",
    "memories",
    "goals",
    "participants",
    "relationships",
    "logs",
)

# Extensions (all in schema public) and the lowest version the schema needs: pgvector 0.8 for
# hnsw.iterative_scan (migration 0006).
EXTENSIONS: dict[str, tuple[int, ...]] = {
    "vector": (0, 8, 0),
    "fuzzystrmatch": (1, 0),
    "pgcrypto": (1, 0),
}
MIN_SERVER_VERSION = 170000

# Functions and triggers the schema relies on: (what, SQL that returns true when it is right).
ROUTINES: tuple[tuple[str, str], ...] = (
    (
        "auth.uid() returning uuid",
        "SELECT prorettype = 'uuid'::regtype FROM pg_proc WHERE oid = to_regprocedure('auth.uid()')",
    ),
    (
        "enabled trigger memories_sync_unique_flags on memories",
        (
            "SELECT tgenabled IN ('O', 'A') FROM pg_trigger WHERE tgrelid = "
            "to_regclass('public.memories') AND tgname = 'memories_sync_unique_flags'"
        ),
    ),
    (
        "SECURITY DEFINER pgbouncer.get_auth(text) for the pooler's auth_query",
        "SELECT prosecdef FROM pg_proc WHERE oid = to_regprocedure('pgbouncer.get_auth(text)')",
    ),
)
