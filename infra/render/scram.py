"""SCRAM-SHA-256 password verifiers, computed client-side.

Roles get their password as a verifier, never as plain text, so the server never sees (or logs)
the password. The salt is derived from a per-stack secret seed, so the verifier — and every file
that carries it — is stable from one run to the next.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

ITERATIONS = 4096  # PostgreSQL's default scram_iterations


def scram_verifier(password: str, role: str, salt_seed: str) -> str:
    salt = hmac.new(salt_seed.encode(), f"scram-salt:{role}".encode(), hashlib.sha256).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
