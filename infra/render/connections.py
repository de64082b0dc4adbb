"""Connection strings and libpq password files."""

from __future__ import annotations

from urllib.parse import quote, urlencode


def connection_uri(
    user: str,
    password: str,
    host: str,
    port: int,
    database: str,
    *,
    tls: bool,
    root_cert: str,
    extra: dict[str, str] | None = None,
) -> str:
    query = {"sslmode": "verify-full", "sslrootcert": root_cert} if tls else {"sslmode": "disable"}
    query.update(extra or {})
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/"
        f"{quote(database, safe='')}?{urlencode(query)}"
    )


def render_pgpass(entries: list[tuple[str, str, str]]) -> str:
    """One `*:*:database:user:password` line per (database, user, password)."""

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return "".join(f"*:*:{esc(db)}:{esc(user)}:{esc(pw)}\n" for db, user, pw in entries)
