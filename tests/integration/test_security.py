"""Security of a deployed stack (issue 3): TLS-only SCRAM on every endpoint, refused bad
credentials, least-privilege roles, row-level security through the pooler, no secret in logs,
environments or plain outputs, and certificate rotation that keeps the data."""

from __future__ import annotations

import json
import socket
import ssl
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from cryptography import x509

from elizadb.local import deploy
from elizadb.local.state import StateFile
from tests.integration.stacks import DeployedStack, deployed_stack, progress

pytestmark = [pytest.mark.integration, pytest.mark.once]
STACK = "itsec"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    with deployed_stack(tmp_path_factory.mktemp("sec"), STACK, 41600) as handle:
        yield handle


def _endpoints(stack: DeployedStack) -> dict[str, str]:
    conns = stack.connections
    found = {"primary": conns["agentPrimary"], "pooler": conns["agentPooler"]}
    found.update({f"replica-{i}": uri for i, uri in enumerate(conns["readonlyReplicas"], 1)})
    return found


def _swap(uri: str, old: str, new: str) -> str:
    assert old in uri
    return uri.replace(old, new)


def test_non_tls_connections_are_refused_on_every_endpoint(stack: DeployedStack) -> None:
    endpoints = _endpoints(stack)
    assert len(endpoints) == 4
    for name, uri in endpoints.items():
        plain = _swap(uri, "sslmode=verify-full", "sslmode=disable")
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(plain, connect_timeout=5).close()
        message = str(refused.value)
        assert "pg_hba.conf rejects" in message or "SSL required" in message, (name, message)
        # and the TLS connection itself works, verified against the stack CA
        with psycopg.connect(uri, connect_timeout=5) as conn:
            assert conn.info.pgconn.ssl_in_use, name


def test_wrong_password_and_unknown_user_are_refused(stack: DeployedStack) -> None:
    for name, uri in _endpoints(stack).items():
        user, rest = uri.split("://", 1)[1].split(":", 1)
        password = rest.split("@", 1)[0]
        wrong = _swap(uri, f":{password}@", ":not-the-password@")
        unknown = _swap(uri, f"//{user}:", "//mallory:")
        for bad in (wrong, unknown):
            with pytest.raises(psycopg.OperationalError) as refused:
                psycopg.connect(bad, connect_timeout=5).close()
            message = str(refused.value)
            # PostgreSQL says the same for both; PgBouncer names an unknown user.
            assert any(
                text in message
                for text in (
                    "password authentication failed",
                    "SASL authentication failed",
                    "no such user",
                )
            ), (name, message)


def test_superuser_cannot_log_in_through_the_pooler(stack: DeployedStack) -> None:
    su = stack.connections["superuser"]
    netloc = su.split("@", 1)[1].split("/", 1)[0]
    through_pooler = _swap(su, netloc, f"127.0.0.1:{stack.outputs['pooler']['port']}")
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(through_pooler, connect_timeout=5).close()
    # PgBouncer's own refusal: its auth_query finds no superuser (the lookup function skips
    # them), so the pooler does not know the role at all. Not a timeout, not a TLS failure.
    assert "FATAL:  no such user" in str(refused.value), str(refused.value)
    # The same path with the agent's credentials is open: the refusal is about the role.
    agent = stack.connections["agentPooler"]
    with psycopg.connect(agent, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("eliza_agent",)


def test_agent_role_has_dml_but_no_ddl(stack: DeployedStack) -> None:
    with psycopg.connect(stack.connections["agentPooler"], autocommit=True) as conn:
        attrs = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles"
            " WHERE rolname = current_user"
        ).fetchone()
        assert attrs == (False, False, False, False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.not_allowed (x int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE memories DISABLE ROW LEVEL SECURITY")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP INDEX idx_memories_embedding")


def test_end_user_sees_and_changes_only_its_own_rows_through_the_pooler(
    stack: DeployedStack,
) -> None:
    alice, bob, agent, room = (uuid.uuid4() for _ in range(4))
    with psycopg.connect(stack.connections["agentPooler"], autocommit=True) as conn:
        for uid, name in ((alice, "alice"), (bob, "bob"), (agent, "agent")):
            conn.execute(
                "INSERT INTO accounts (id, name, email) VALUES (%s, %s, %s)",
                (uid, name, f"{uid}@rls.test"),
            )
        conn.execute("INSERT INTO rooms (id) VALUES (%s)", (room,))
        for owner in (alice, bob):
            conn.execute(
                'INSERT INTO memories (type, content, "userId", "agentId", "roomId")'
                " VALUES ('messages', %s, %s, %s, %s)",
                (json.dumps({"text": f"secret of {owner}"}), owner, agent, room),
            )
    with psycopg.connect(stack.connections["userPooler"]) as conn:
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (str(alice),))
        seen = conn.execute('SELECT "userId" FROM memories WHERE "roomId" = %s', (room,)).fetchall()
        assert seen == [(alice,)]
        changed = conn.execute(
            "UPDATE memories SET content = '{}' WHERE \"roomId\" = %s", (room,)
        ).rowcount
        assert changed == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                'INSERT INTO memories (type, content, "userId", "roomId") VALUES (%s, %s, %s, %s)',
                ("messages", "{}", bob, room),
            )
        conn.rollback()
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (str(alice),))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE memories DISABLE ROW LEVEL SECURITY")
        conn.rollback()
        # no subject set: nothing at all
        assert conn.execute("SELECT count(*) FROM memories").fetchone() == (0,)


def _secrets(stack: DeployedStack) -> list[str]:
    state = StateFile(STACK)
    found = []
    for key, entry in state.data["resources"].items():
        # Passwords; the stack id (random:index/randomUuid) is a public label, not a secret.
        if key.startswith("random:index/randomPassword"):
            found.append(entry["outputs"]["result"])
        if key.startswith("tls:index/privateKey"):
            found.append(entry["outputs"]["privateKeyPem"].splitlines()[1])
    assert len(found) >= 10
    return found


def test_no_secret_in_logs_environment_or_plain_outputs(stack: DeployedStack) -> None:
    # Provoke a failed login so that authentication failures are in the server log too.
    bad = _swap(stack.connections["agentPrimary"], "eliza_agent:", "eliza_agent:x")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(bad, connect_timeout=5).close()
    secrets = _secrets(stack)
    containers = stack.client.containers.list(all=True, filters={"label": f"elizadb.stack={STACK}"})
    # primary, 2 replicas, pooler, bootstrap job, backup agent, readiness job
    assert len(containers) == 7
    for container in containers:
        logs = container.logs().decode(errors="replace")
        inspect = json.dumps(container.attrs["Config"])
        for secret in secrets:
            assert secret not in logs, f"a secret is in the log of {container.name}"
            assert secret not in inspect, f"a secret is in the configuration of {container.name}"
    plain = json.dumps(deploy.outputs(stack.settings, show_secrets=False))
    assert '"connections": "[secret]"' in plain
    for secret in secrets:
        assert secret not in plain


def _server_certificate(stack: DeployedStack) -> x509.Certificate:
    """The certificate as a client sees it: PostgreSQL's SSLRequest, then a verified handshake."""
    host, port = stack.outputs["primary"]["host"], stack.outputs["primary"]["port"]
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
        assert raw.recv(1) == b"S"
        context = ssl.create_default_context(cadata=stack.outputs["caCert"])
        with context.wrap_socket(raw, server_hostname=stack.outputs["primary"]["name"]) as tls:
            der_cert = tls.getpeercert(binary_form=True)
    assert der_cert is not None
    return x509.load_der_x509_certificate(der_cert)


def test_rotate_certs_issues_a_new_certificate_and_keeps_the_data(stack: DeployedStack) -> None:
    marker = str(uuid.uuid4())
    with psycopg.connect(stack.connections["agentPrimary"], autocommit=True) as conn:
        conn.execute("INSERT INTO rooms (id) VALUES (%s)", (marker,))
    before = _server_certificate(stack)
    deploy.rotate_certs(stack.settings, progress, stack.state_dir)
    after = _server_certificate(stack)
    assert after.serial_number != before.serial_number
    assert after.issuer == before.issuer  # same CA: clients keep their sslrootcert
    for uri in _endpoints(stack).values():
        with psycopg.connect(uri, connect_timeout=10) as conn:
            assert conn.info.pgconn.ssl_in_use
    with psycopg.connect(stack.connections["agentPooler"]) as conn:
        assert conn.execute("SELECT count(*) FROM rooms WHERE id = %s", (marker,)).fetchone() == (
            1,
        )
