"""The checks, one module per family, in the order the runner runs them.

Order matters only for time and noise: reachability first (the other checks of a family depend on
it), replication (and Patroni's view of it) before the vector probe (whose rolled-back writes
still make WAL), and the vector probe last.
"""

from __future__ import annotations

from verify.checks import (
    backups,
    ha,
    health,
    plugin_sql,
    pooler,
    replication,
    schema,
    security,
    tls,
    vector,
)
from verify.model import Check

ALL_CHECKS: tuple[Check, ...] = (
    *health.CHECKS,
    *schema.CHECKS,
    *security.CHECKS,
    *plugin_sql.CHECKS[:3],  # schema and security of ElizaOS 1.x stacks
    *tls.CHECKS,
    *pooler.CHECKS,
    *plugin_sql.POOLER_CHECKS,
    *replication.CHECKS,
    *ha.CHECKS,  # Patroni stacks only
    *backups.CHECKS,
    *vector.CHECKS,
    *plugin_sql.CHECKS[3:],  # the 1.x vector search, last with the other vector checks
)
