"""The stack's CA certificate for a client run: the outputs carry it (`caCert`) and name it by a
path relative to the project (`caCertPath`), which a run from elsewhere cannot use. Every run
writes it to a file only its user can read, and removes it afterwards."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from psycopg.conninfo import make_conninfo


@contextmanager
def private_ca_file(pem: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="elizadb-ca-") as folder:
        path = Path(folder) / "ca.crt"
        # 0600 from the start: never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(pem)
        yield str(path)


def with_root_cert(uri: str, ca_path: str, **overrides: str) -> str:
    """`uri` verified against the CA at `ca_path` (and any other parameter overridden)."""
    return make_conninfo(uri, sslrootcert=ca_path, **overrides)
