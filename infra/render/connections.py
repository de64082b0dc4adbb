"""Connection strings and libpq password files.

Two forms, because clients differ:

- `connection_uri`: libpq's URI. With several hosts it is the multi-host form
  (`h1:p1,h2:p2` + target_session_attrs=read-write) that gives libpq and psycopg clients
  failover on their own. node-postgres cannot parse it (`Invalid URL`).
- `node_uri`: one host, what node-postgres (`pg`, `pg-connection-string`) and so ElizaOS's
  `POSTGRES_URL` accept. node-postgres reads `sslrootcert` relative to the process's working
  directory, so the caller passes an absolute path.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode


def _tls_query(tls: bool, root_cert: str) -> dict[str, str]:
    return {"sslmode": "verify-full", "sslrootcert": root_cert} if tls else {"sslmode": "disable"}


def _uri(user: str, password: str, netloc: str, database: str, query: dict[str, str]) -> str:
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{netloc}/"
        f"{quote(database, safe='')}?{urlencode(query, safe='/')}"
    )


def connection_uri(
    user: str,
    password: str,
    hosts: list[tuple[str, int]],
    database: str,
    *,
    tls: bool,
    root_cert: str,
) -> str:
    """A libpq URI. Several hosts make a read-write URI: libpq connects to whichever one is the
    primary, which gives clients failover on their own."""
    query = _tls_query(tls, root_cert)
    if len(hosts) > 1:
        query["target_session_attrs"] = "read-write"
    netloc = ",".join(f"{host}:{port}" for host, port in hosts)
    return _uri(user, password, netloc, database, query)


def node_uri(
    user: str, password: str, host: str, port: int, database: str, *, tls: bool, root_cert: str
) -> str:
    """A single-host URI that node-postgres and libpq both accept; `root_cert` must be an
    absolute path for it to work from any working directory."""
    return _uri(user, password, f"{host}:{port}", database, _tls_query(tls, root_cert))


def render_pgpass(entries: list[tuple[str, str, str]]) -> str:
    """One `*:*:database:user:password` line per (database, user, password)."""

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return "".join(f"*:*:{esc(db)}:{esc(user)}:{esc(pw)}\n" for db, user, pw in entries)
