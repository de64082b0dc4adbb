"""tls: TLS is required on every endpoint, its certificates verify for every name clients use
and are not about to expire, and the servers admit nobody without a SCRAM password."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from cryptography import x509

from verify.context import NODE_ROOT, POOLER_ROOT, Context, first_line, scalar
from verify.model import Check, Findings, Outcome, Unreachable, skipped
from verify.outputs import Endpoint
from verify.tls_probe import Handshake, TlsProbeError, days_left, handshake

# libpq reports a failure to reach the server without any message from the server itself.
_NO_SERVER = re.compile(
    r"Connection refused|timeout expired|could not connect|No route to host"
    r"|could not translate host name|server closed the connection unexpectedly"
)
# The refusal of a connection because it is not encrypted, in the server's own words:
# PostgreSQL's pg_hba.conf ("... rejects connection for ..., no encryption" from a hostnossl
# reject rule, "no pg_hba.conf entry for ..., no encryption" when only hostssl rules exist) and
# PgBouncer's client_tls_sslmode=require ("SSL required"). Any other refusal (too many clients,
# a database that does not exist, a password rule) says nothing about TLS.
_TLS_REFUSAL = re.compile(
    r"FATAL:\s+(?:pg_hba\.conf rejects connection|no pg_hba\.conf entry) for .*, no encryption"
    r"|FATAL:\s+SSL required"
)


def tls_refusal(message: str) -> bool:
    """Whether a failed connection's error is the server refusing it for want of TLS."""
    return _TLS_REFUSAL.search(message) is not None


def _root(endpoint: Endpoint) -> str:
    return POOLER_ROOT if endpoint.label == "pooler" else NODE_ROOT


def _tls_off(ctx: Context) -> Outcome | None:
    """The TLS checks have nothing to examine when the stack was deployed without TLS, which the
    settings allow outside production only."""
    if ctx.outputs.tls:
        return None
    if ctx.outputs.environment == "production":
        return Outcome(
            "fail",
            "TLS is off in a production stack",
            "the outputs say tls: false for a production stack",
            "set elizadb:tls.enabled to true (the default) and redeploy",
        )
    return skipped(f"TLS is off in this {ctx.outputs.environment or 'non-production'} stack")


def _endpoint_uris(ctx: Context) -> list[tuple[Endpoint, str]]:
    """One connection string per endpoint, with a real user and password from the outputs."""
    c = ctx.outputs.connections
    pairs = [(ctx.outputs.primary, c.superuser)]
    pairs += list(zip(ctx.outputs.replicas, c.readonly_replicas, strict=True))
    pairs.append((ctx.outputs.pooler, c.agent_pooler))
    return pairs


def check_non_tls_refused(ctx: Context) -> Outcome:
    """Every endpoint (primary, replicas, pooler) refuses a connection with sslmode=disable,
    although the user and password are right, and says that it refuses it for want of TLS."""
    off = _tls_off(ctx)
    if off:
        return off
    seen = Findings()
    for endpoint, uri in _endpoint_uris(ctx):
        info = ctx.conninfo(
            uri,
            server_options=False,
            sslmode="disable",
            host=endpoint.host,
            port=str(endpoint.port),
        )
        try:
            conn = psycopg.connect(info)
        except psycopg.OperationalError as err:
            if tls_refusal(str(err)):
                continue  # refused by the server for want of TLS: what we want
            message = first_line(err)
            if _NO_SERVER.search(str(err)):
                seen.unreachable(Unreachable(endpoint.label, _root(endpoint), message))
            else:
                seen.problem(
                    f"{endpoint} refused a connection without TLS, but not for want of TLS, so "
                    f"whether it requires TLS is unknown: {str(err).strip()}"
                )
            continue
        user = conn.info.user
        conn.close()
        seen.problem(f"{endpoint} accepted a connection without TLS (as {user})")
    return seen.outcome(
        f"{len(_endpoint_uris(ctx))} endpoint(s) refuse non-TLS connections",
        "PostgreSQL: pg_hba.conf must start its TCP rules with `hostnossl all all all reject` "
        "and use hostssl for the rest; PgBouncer: client_tls_sslmode = require (or verify-*)",
    )


def _handshakes(ctx: Context, endpoint: Endpoint) -> dict[str, Handshake | TlsProbeError]:
    """An unverified handshake (key "") to read the certificate, then one verified handshake
    per name a client may use: the advertised host and the endpoint's network name."""

    def run() -> dict[str, Handshake | TlsProbeError]:
        timeout = float(ctx.thresholds.connect_timeout_s)
        results: dict[str, Handshake | TlsProbeError] = {}
        for name in ("", *dict.fromkeys([endpoint.host, endpoint.name])):
            try:
                results[name] = handshake(
                    endpoint.host,
                    endpoint.port,
                    timeout=timeout,
                    cafile=ctx.ca_path if name else None,
                    server_hostname=name or None,
                )
            except TlsProbeError as err:
                results[name] = err
                if not name:
                    break  # no handshake at all: the names need not be tried
        return results

    return ctx.memo(f"tls.handshakes.{endpoint.label}", run)


def check_certificate(ctx: Context) -> Outcome:
    """On every endpoint the certificate chains to the stack CA from the outputs and is valid for
    every name clients use (the advertised host and the endpoint's name); every connection string
    asks for sslmode=verify-full."""
    off = _tls_off(ctx)
    if off:
        return off
    seen = Findings()
    names = 0
    for endpoint in ctx.outputs.endpoints:
        results = _handshakes(ctx, endpoint)
        first = results[""]
        if isinstance(first, TlsProbeError):
            seen.unreachable(
                Unreachable(endpoint.label, _root(endpoint), f"no TLS handshake: {first}")
            )
            continue
        for name, result in results.items():
            if not name:
                continue
            names += 1
            if isinstance(result, TlsProbeError):
                seen.problem(f"{endpoint}: the certificate does not verify for {name!r}: {result}")
            elif result.tls_version not in ("TLSv1.2", "TLSv1.3"):
                seen.problem(f"{endpoint}: negotiated {result.tls_version}")
    for key, uri in _all_uris(ctx):
        mode = psycopg.conninfo.conninfo_to_dict(uri).get("sslmode")
        if mode != "verify-full":
            seen.problem(f"connections.{key} uses sslmode={mode}, not verify-full")
    return seen.outcome(
        f"{len(ctx.outputs.endpoints)} endpoint(s), {names} name(s) verified against the stack CA",
        "reissue the server certificate from the stack CA with every name and address clients "
        "use in its SANs (`elizadb up` / `pulumi up` does), and restart or reload the servers",
    )


def _all_uris(ctx: Context) -> list[tuple[str, str]]:
    c = ctx.outputs.connections
    pairs = [
        ("superuser", c.superuser),
        ("owner", c.owner),
        ("agentPrimary", c.agent_primary),
        ("agentPooler", c.agent_pooler),
        ("userPooler", c.user_pooler),
        ("poolerAdmin", c.pooler_admin),
    ]
    pairs += [(f"readonlyReplicas[{i}]", u) for i, u in enumerate(c.readonly_replicas)]
    return pairs


def expiry_problem(what: str, cert: x509.Certificate, min_days: float) -> str | None:
    left = days_left(cert)
    if left < min_days:
        return (
            f"{what} expires in {left:.1f} days ({cert.not_valid_after_utc:%Y-%m-%d}), "
            f"under the {min_days:g}-day threshold"
        )
    return None


def check_expiry(ctx: Context) -> Outcome:
    """Every endpoint's certificate, and the stack CA, stay valid for more than cert_min_days."""
    off = _tls_off(ctx)
    if off:
        return off
    seen = Findings()
    min_days = ctx.thresholds.cert_min_days
    ca = x509.load_pem_x509_certificate(ctx.outputs.ca_cert.encode())
    lefts = {"CA": days_left(ca)}
    problem = expiry_problem("the stack CA certificate", ca, min_days)
    if problem:
        seen.problem(problem)
    for endpoint in ctx.outputs.endpoints:
        first = _handshakes(ctx, endpoint)[""]
        if isinstance(first, TlsProbeError):
            seen.unreachable(
                Unreachable(endpoint.label, _root(endpoint), f"no TLS handshake: {first}")
            )
            continue
        lefts[endpoint.label] = days_left(first.certificate)
        problem = expiry_problem(f"{endpoint}'s certificate", first.certificate, min_days)
        if problem:
            seen.problem(problem)
    return seen.outcome(
        f"certificates valid for {min(lefts.values()):.0f}+ days (threshold {min_days:g})",
        "renew before expiry: reissue the certificates (taint the TLS resources and "
        "`pulumi up`, or `elizadb up` after removing them from the state) and reload",
    )


# Authentication methods that prove a password without sending it, or refuse outright.
_ALLOWED_METHODS = {"scram-sha-256", "reject"}


def hba_problems(node: str, rules: list[dict[str, Any]]) -> list[str]:
    """Problems in one node's pg_hba_file_rules rows: file errors, any method but SCRAM or
    reject on the network, anything but peer or reject on the local socket."""
    problems = []
    for rule in rules:
        where = f"{node}: pg_hba.conf line {rule['line_number']}"
        if rule.get("error"):
            problems.append(f"{where}: {rule['error']}")
            continue
        method = rule["auth_method"]
        if rule["type"] == "local":
            if method not in ("peer", "reject"):
                problems.append(f"{where}: local rule with method {method}")
        elif method not in _ALLOWED_METHODS:
            users = ",".join(rule.get("user_name") or [])
            dbs = ",".join(rule.get("database") or [])
            problems.append(
                f"{where}: {rule['type']} {dbs} {users} {rule.get('address') or ''} "
                f"uses {method}; only scram-sha-256 or reject are allowed"
            )
    return problems


def check_hba_auth(ctx: Context) -> Outcome:
    """No node admits a client without a SCRAM password: pg_hba.conf has no trust (nor md5,
    password, ident...) rule and no error, password_encryption is scram-sha-256 and every
    stored password is a SCRAM verifier.

    pg_hba_file_rules shows the file as it is on disk, i.e. the rules in force after the next
    reload, which is what an edit that is waiting for a reload must be caught by.
    """
    seen = Findings()
    for node in ctx.outputs.nodes:
        try:
            conn = ctx.node(node)
        except Unreachable as err:
            seen.unreachable(err)
            continue
        cur = conn.execute("SELECT * FROM pg_hba_file_rules ORDER BY rule_number NULLS FIRST")
        names = [d.name for d in cur.description or ()]
        for problem in hba_problems(
            str(node), [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        ):
            seen.problem(problem)
        encryption = scalar(conn, "SELECT current_setting('password_encryption')")
        if encryption != "scram-sha-256":
            seen.problem(f"{node}: password_encryption is {encryption}")
        if node.label == "primary":  # roles are cluster-wide and replicated: ask once
            for (role,) in conn.execute(
                "SELECT rolname FROM pg_authid WHERE rolcanlogin AND rolpassword IS NOT NULL"
                "   AND rolpassword NOT LIKE 'SCRAM-SHA-256$%' ORDER BY 1"
            ).fetchall():
                seen.problem(f"role {role} has a password that is not a SCRAM verifier")
    return seen.outcome(
        f"{len(ctx.outputs.nodes)} node(s): SCRAM over TLS only, no trust rule",
        "restore the rendered pg_hba.conf (`elizadb up` re-uploads it; the file is "
        "/etc/elizadb/pg_hba.conf) and SELECT pg_reload_conf(); reset a non-SCRAM password with "
        "ALTER ROLE ... PASSWORD while password_encryption = scram-sha-256",
    )


CHECKS = (
    Check("tls.non_tls_refused", check_non_tls_refused),
    Check("tls.certificate", check_certificate),
    Check("tls.expiry", check_expiry),
    Check("tls.hba_auth", check_hba_auth),
)
