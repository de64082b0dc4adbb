"""The database roles of a stack: least privilege, one purpose each.

Passwords are generated per stack (or taken from secret config for the superuser) and reach the
server only as SCRAM verifiers. What each role may do inside the database is granted by the
migrations in sql/; attributes here are the cluster-level ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import quote

SUPERUSER = "postgres"


@dataclass(frozen=True)
class Role:
    name: str
    attributes: str
    purpose: str


OWNER = Role("eliza_owner", "LOGIN", "owns the Eliza schema; migrations create objects as it")
AGENT = Role("eliza_agent", "LOGIN", "the ElizaOS agent runtime: DML on the Eliza tables, no DDL")
USER = Role("eliza_user", "LOGIN", "end-user scoped access under row-level security")
READONLY = Role("eliza_readonly", "LOGIN", "read-only use, on replicas")
REPLICATOR = Role("eliza_replicator", "LOGIN REPLICATION", "streaming replication only")
BACKUP = Role("eliza_backup", "LOGIN", "backups")
POOLER_AUTH = Role("pgbouncer_auth", "LOGIN", "PgBouncer's auth_query lookups")

ROLES: tuple[Role, ...] = (OWNER, AGENT, USER, READONLY, REPLICATOR, BACKUP, POOLER_AUTH)


# ElizaOS 1.x data isolation (ENABLE_DATA_ISOLATION=true): one login role per ElizaOS server,
# a member of the agent role, whose sessions carry that server's id in app.server_id, the
# setting @elizaos/plugin-sql's row level security reads. The plugin sets it itself only inside
# a few transactions; every other statement would otherwise see no rows and insert none.
SERVER_ROLE_PREFIX = "eliza_server_"


def server_role(server_id: str) -> Role:
    return Role(
        SERVER_ROLE_PREFIX + server_id.replace("-", "_"),
        "LOGIN",
        f"ElizaOS server {server_id!r}: the agent role, isolated to that server's rows",
    )


def eliza_uuid(text: str) -> str:
    """The UUID @elizaos/core's stringToUuid() derives from `text` (ELIZA_SERVER_ID, an agent
    name): a UUID stays as it is; anything else is the SHA-1 of its encodeURIComponent form,
    cut to 16 bytes with the variant bits set and the version nibble cleared."""
    lowered = text.lower()
    if (
        len(text) == 36
        and all(c in "0123456789abcdef-" for c in lowered)
        and lowered.count("-") == 4
        and [len(p) for p in lowered.split("-")] == [8, 4, 4, 4, 12]
    ):
        return text
    digest = bytearray(hashlib.sha1(quote(text, safe="-_.!~*'()").encode()).digest()[:16])
    digest[8] = digest[8] & 0x3F | 0x80
    digest[6] = digest[6] & 0x0F
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
