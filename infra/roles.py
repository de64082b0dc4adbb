"""The database roles of a stack: least privilege, one purpose each.

Passwords are generated per stack (or taken from secret config for the superuser) and reach the
server only as SCRAM verifiers. What each role may do inside the database is granted by the
migrations in sql/; attributes here are the cluster-level ones.
"""

from __future__ import annotations

from dataclasses import dataclass

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
