"""Connection strings and libpq password files."""

from __future__ import annotations

from urllib.parse import quote, urlencode


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
    query = {"sslmode": "verify-full", "sslrootcert": root_cert} if tls else {"sslmode": "disable"}
    if len(hosts) > 1:
        query["target_session_attrs"] = "read-write"
    netloc = ",".join(f"{host}:{port}" for host, port in hosts)
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{netloc}/"
        f"{quote(database, safe='')}?{urlencode(query)}"
    )


def render_pgpass(entries: list[tuple[str, str, str]]) -> str:
    """One `*:*:database:user:password` line per (database, user, password)."""

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return "".join(f"*:*:{esc(db)}:{esc(user)}:{esc(pw)}\n" for db, user, pw in entries)
