"""One run's connections, taken from the outputs alone.

Every connection string comes from the outputs; the suite only overrides what it must:
`sslrootcert` (the outputs name the CA by a path relative to the project, so the run writes the
`caCert` output to a private temporary file), `host`/`port` (a session on one node is the
superuser connection string pointed at that node's endpoint; the outputs' read-write strings
list every node with target_session_attrs=read-write, which a pinned session sets to `any`),
timeouts and, in read-only mode, `default_transaction_read_only=on` on every direct session,
checked after connecting.

PgBouncer ignores the `options` startup parameter (it is in `ignore_startup_parameters`), and a
SET in transaction pooling mode would leak to other clients, so pooled sessions are never in
autocommit: each query runs in a transaction that psycopg opens as BEGIN READ ONLY in read-only
mode, and that the suite rolls back.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from verify.ca_file import private_ca_file
from verify.errors import VerifyError
from verify.model import Findings, Unreachable
from verify.outputs import Endpoint, Outputs
from verify.thresholds import Thresholds

T = TypeVar("T")
APPLICATION_NAME = "elizadb-verify"
NODE_ROOT = "health.reachable"
POOLER_ROOT = "pooler.reachable"


def row(conn: psycopg.Connection[Any], query: Any, params: Any = None) -> tuple[Any, ...]:
    """The one row `query` returns (every query passed here returns exactly one)."""
    found = conn.execute(query, params).fetchone()
    if found is None:
        raise RuntimeError(f"no row from {query!r}")
    return tuple(found)


def scalar(conn: psycopg.Connection[Any], query: Any, params: Any = None) -> Any:
    return row(conn, query, params)[0]


def first_line(err: BaseException) -> str:
    """libpq errors repeat the target and add hints on further lines; keep the gist."""
    text = str(err).strip().replace("connection failed: ", "", 1)
    return " ".join(line.strip() for line in text.splitlines()[:1]) or type(err).__name__


class Context:
    def __init__(self, outputs: Outputs, *, read_only: bool, thresholds: Thresholds) -> None:
        self.outputs = outputs
        self.read_only = read_only
        self.thresholds = thresholds
        self._files = ExitStack()
        self.ca_path = self._files.enter_context(private_ca_file(outputs.ca_cert))
        self._sessions: dict[str, psycopg.Connection[Any] | Unreachable] = {}
        self._memo: dict[str, Any] = {}

    # ---- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        for conn in self._sessions.values():
            if isinstance(conn, psycopg.Connection):
                conn.close()
        self._sessions.clear()
        self._files.close()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """compute() once per run; an exception it raised is raised again to later callers."""
        if key not in self._memo:
            try:
                self._memo[key] = ("ok", compute())
            except Exception as err:
                self._memo[key] = ("err", err)
        kind, value = self._memo[key]
        if kind == "err":
            raise value
        return value  # type: ignore[no-any-return]

    # ---- connection strings -----------------------------------------------------------------
    def conninfo(self, uri: str, *, server_options: bool = True, **overrides: Any) -> str:
        params: dict[str, Any] = {
            "connect_timeout": str(self.thresholds.connect_timeout_s),
            "application_name": APPLICATION_NAME,
        }
        if self.outputs.tls:
            params["sslrootcert"] = self.ca_path
        if server_options:
            opts = [
                f"-c statement_timeout={self.thresholds.statement_timeout_ms}",
                f"-c lock_timeout={self.thresholds.lock_timeout_ms}",
            ]
            if self.read_only:
                opts.append("-c default_transaction_read_only=on")
            params["options"] = " ".join(opts)
        params.update(overrides)
        return make_conninfo(uri, **params)

    # ---- sessions ---------------------------------------------------------------------------
    def node(self, node: Endpoint, database: str | None = None) -> psycopg.Connection[Any]:
        """The superuser on `node` (the primary or a replica), in `database` (default: the
        superuser connection string's, `postgres`)."""
        overrides: dict[str, Any] = {
            "host": node.host,
            "port": str(node.port),
            "target_session_attrs": "any",
        }
        if database:
            overrides["dbname"] = database
        key = f"superuser@{node.label}/{database or '-'}"
        return self._direct(
            key,
            node.label,
            NODE_ROOT,
            self.conninfo(self.outputs.connections.superuser, **overrides),
        )

    def is_primary(self, node: Endpoint) -> bool | None:
        """Whether `node` accepts writes now; None when it cannot be asked (the health checks
        report why)."""
        try:
            return scalar(self.node(node), "SELECT NOT pg_is_in_recovery()") is True
        except (Unreachable, psycopg.Error):
            return None

    def app_db(self, node: Endpoint) -> psycopg.Connection[Any]:
        """The superuser on `node`, in the Eliza database."""
        return self.node(node, self.outputs.database)

    def agent(self) -> psycopg.Connection[Any]:
        """eliza_agent through agentPrimary as the outputs give it: with several hosts, libpq
        picks the read-write one, as an agent's client would."""
        uri = self.outputs.connections.agent_primary
        overrides: dict[str, Any] = {}
        if self.read_only and conninfo_to_dict(uri).get("target_session_attrs") == "read-write":
            # libpq's read-write test asks the server whether sessions are read-only, which
            # default_transaction_read_only=on makes them all; "primary" (not a hot standby)
            # picks the same server without that test.
            overrides["target_session_attrs"] = "primary"
        return self._direct("agent@primary", "primary", NODE_ROOT, self.conninfo(uri, **overrides))

    def readonly(self, index: int) -> psycopg.Connection[Any]:
        """eliza_readonly on replica `index` (0-based), as readonlyReplicas lists it."""
        replica = self.outputs.replicas[index]
        uri = self.outputs.connections.readonly_replicas[index]
        return self._direct(
            f"readonly@{replica.label}", replica.label, NODE_ROOT, self.conninfo(uri)
        )

    def pooled(self, role: str) -> psycopg.Connection[Any]:
        """agent or user through PgBouncer. Not autocommit: use `pooled_fetch`."""
        uri = {
            "agent": self.outputs.connections.agent_pooler,
            "user": self.outputs.connections.user_pooler,
        }[role]

        def connect() -> psycopg.Connection[Any]:
            # prepare_threshold=None: no server-side prepared statements through a
            # transaction pooler, whatever the client libpq version (see tripwires).
            conn = psycopg.connect(self.conninfo(uri, server_options=False), prepare_threshold=None)
            conn.read_only = True if self.read_only else None
            return conn

        return self._session(f"{role}@pooler", "pooler", POOLER_ROOT, connect)

    def pooled_fetch(self, role: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        conn = self.pooled(role)
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.rollback()

    def pooler_admin(self) -> psycopg.Connection[Any]:
        """PgBouncer's admin console: simple query protocol only, hence ClientCursor."""
        uri = self.outputs.connections.pooler_admin

        def connect() -> psycopg.Connection[Any]:
            return psycopg.connect(
                self.conninfo(uri, server_options=False),
                autocommit=True,
                cursor_factory=psycopg.ClientCursor,
                prepare_threshold=None,
            )

        return self._session("admin@pooler", "pooler", POOLER_ROOT, connect)

    def admin_show(self, command: str) -> list[dict[str, Any]]:
        """`SHOW <command>` on the admin console, as dicts by column name."""
        cur = self.pooler_admin().execute(f"SHOW {command}")
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # ---- internals --------------------------------------------------------------------------
    def _direct(self, key: str, target: str, root: str, conninfo: str) -> psycopg.Connection[Any]:
        def connect() -> psycopg.Connection[Any]:
            conn = psycopg.connect(conninfo, autocommit=True)
            if self.read_only:
                conn.read_only = True
                shown = conn.execute("SHOW default_transaction_read_only").fetchone()
                if not shown or shown[0] != "on":
                    conn.close()
                    raise VerifyError(
                        f"{target}: the session did not take default_transaction_read_only=on "
                        f"(got {shown}); refusing to run checks that must not write"
                    )
            return conn

        return self._session(key, target, root, connect)

    def _session(
        self, key: str, target: str, root: str, connect: Callable[[], psycopg.Connection[Any]]
    ) -> psycopg.Connection[Any]:
        cached = self._sessions.get(key)
        if isinstance(cached, Unreachable):
            raise cached
        if cached is not None and not cached.closed:
            return cached
        try:
            conn = connect()
        except psycopg.OperationalError as err:
            failure = Unreachable(target, root, first_line(err))
            self._sessions[key] = failure
            raise failure from None
        self._sessions[key] = conn
        return conn


def primary_session(ctx: Context, seen: Findings) -> psycopg.Connection[Any] | None:
    """The superuser on the primary, or None with the reason recorded in `seen`."""
    try:
        return ctx.node(ctx.outputs.primary)
    except Unreachable as err:
        seen.unreachable(err)
        return None
