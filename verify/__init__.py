"""The verify suite: prove that a deployed eliza-db stack is right, from its outputs alone.

`verify.suite.run_checks(load_outputs(...))` runs every check family (schema, health,
replication, tls, security, pooler, vector, backups) over SQL, the PgBouncer admin console and a
TLS handshake, and `verify.report` renders the results for people, machines and CI.
"""
