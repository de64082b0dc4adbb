"""Throwaway PostgreSQL servers in containers of the eliza-db image, for integration tests.

The image's own entrypoint belongs to the deployment; these tests only need a bare server, so
the container runs `initdb` and `postgres` directly (as user postgres) and publishes 5432 on a
random 127.0.0.1 port. Usage:

    with ScratchPostgres.start(client, "migrations") as pg:
        pg.put_files("/opt/sql", {"0001_x.sql": b"..."})
        result = pg.exec(["elizadb-migrate", "/opt/sql"], env=pg.libpq_env("eliza"))
        with pg.connect("eliza") as conn: ...

Every container is named elizadb-sqltest-<purpose>; a leftover of that name (from a killed run)
is removed before starting, and the context manager removes the container at the end.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import psycopg
import requests
from docker.models.containers import Container

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_TAG = "localhost/elizadb-sqltest:dev"
NAME_PREFIX = "elizadb-sqltest-"
# A throwaway server reachable only on 127.0.0.1 of this machine: a fixed password is fine.
SUPERUSER_PASSWORD = "scratch-superuser-pw"

# The candidates for the engine's API socket, in order. Podman's Docker-compatible socket is
# where scripts/bootstrap-engine.sh puts it.
_ENGINE_SOCKETS = ("unix:///run/podman/podman.sock", "unix:///var/run/docker.sock")

# initdb + postgres, tuned for a disposable server: no fsync, enough shared memory for HNSW
# builds. Host connections arriving through the published port come from the network gateway,
# not 127.0.0.1, hence the 0.0.0.0/0 line (password-checked).
_SERVER_SCRIPT = r"""
set -eu
printf '%s\n' "$SCRATCH_SUPERUSER_PASSWORD" > /tmp/pw
initdb -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile=/tmp/pw >/dev/null
rm /tmp/pw
echo 'host all all 0.0.0.0/0 scram-sha-256' >> "$PGDATA/pg_hba.conf"
exec postgres -c listen_addresses='*' -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c shared_buffers=256MB -c maintenance_work_mem=256MB
"""


class EngineUnavailable(RuntimeError):
    """No Docker-compatible container engine answers on this machine."""


class ScratchTimeout(RuntimeError):
    """The server in a scratch container did not accept a query in time."""


def engine_client() -> docker.DockerClient:
    """A client for $DOCKER_HOST when it is set, else for the first usual socket that answers.

    An explicit DOCKER_HOST is the engine the run was told to use: falling back to another one
    would hide a broken setting (and let CI pass on an engine it was not meant to test)."""
    if os.environ.get("DOCKER_HOST"):
        candidates = [os.environ["DOCKER_HOST"]]
    else:
        candidates = list(_ENGINE_SOCKETS)
    errors: list[str] = []
    for base_url in candidates:
        try:
            client = docker.DockerClient(base_url=base_url, timeout=120)
            client.ping()
            return client
        # "Not there" comes as the SDK's own error, as a requests error, or as an OSError.
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            errors.append(f"{base_url}: {exc}")
    raise EngineUnavailable(
        "no container engine answers ("
        + "; ".join(errors)
        + "); run scripts/bootstrap-engine.sh to start Podman's Docker-compatible service"
    )


def build_image(client: docker.DockerClient) -> str:
    """Build image/Containerfile as IMAGE_TAG (layer cache makes a rebuild take seconds)."""
    base = os.environ.get("ELIZADB_BASE_IMAGE", "localhost/debian:trixie")
    client.images.build(
        path=str(REPO_ROOT / "image"),
        dockerfile="Containerfile",
        tag=IMAGE_TAG,
        buildargs={"BASE_IMAGE": base},
        rm=True,
    )
    return IMAGE_TAG


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


def tar_of(files: Mapping[str, bytes], mode: int = 0o644) -> bytes:
    """A tar archive of name -> content, owned by root, every file with `mode`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@dataclass
class ScratchPostgres:
    client: docker.DockerClient
    container: Container
    host_port: int

    @classmethod
    @contextmanager
    def start(
        cls, client: docker.DockerClient, purpose: str, timeout_s: float = 60.0
    ) -> Iterator[ScratchPostgres]:
        name = NAME_PREFIX + purpose
        _remove_if_present(client, name)
        container = client.containers.run(
            IMAGE_TAG,
            name=name,
            entrypoint=["bash", "-c", _SERVER_SCRIPT],
            user="postgres",
            environment={"SCRATCH_SUPERUSER_PASSWORD": SUPERUSER_PASSWORD},
            ports={"5432/tcp": ("127.0.0.1", None)},
            # Docker's default 64 MB /dev/shm breaks parallel HNSW builds.
            shm_size="512m",
            detach=True,
        )
        try:
            server = cls(client, container, _published_port(container))
            server._wait_ready(timeout_s)
            yield server
        finally:
            _remove_if_present(client, name)

    # ---- inside the container ----------------------------------------------------------------

    def exec(
        self, cmd: list[str], env: Mapping[str, str] | None = None, user: str = "root"
    ) -> ExecResult:
        code, (out, err) = self.container.exec_run(
            cmd, environment=dict(env or {}), user=user, demux=True
        )
        return ExecResult(
            int(code),
            (out or b"").decode("utf-8", "replace"),
            (err or b"").decode("utf-8", "replace"),
        )

    def put_files(self, directory: str, files: Mapping[str, bytes], mode: int = 0o644) -> None:
        """Create `directory` (parents too) and write `files` (name -> bytes) into it."""
        made = self.exec(["mkdir", "-p", directory])
        if made.exit_code != 0:
            raise RuntimeError(f"mkdir {directory}: {made.stderr}")
        if not self.container.put_archive(directory, tar_of(files, mode)):
            raise RuntimeError(f"could not copy files into {self.container.name}:{directory}")

    def libpq_env(self, database: str) -> dict[str, str]:
        """libpq variables for a superuser session over TCP inside the container, with the
        password in a pgpass file, the way a deployment's runner would connect."""
        passfile = "/root/.elizadb-scratch.pgpass"
        self.put_files(
            "/root",
            {".elizadb-scratch.pgpass": f"*:*:*:postgres:{SUPERUSER_PASSWORD}\n".encode()},
            0o600,
        )
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": "5432",
            "PGUSER": "postgres",
            "PGDATABASE": database,
            "PGPASSFILE": passfile,
            "PGSSLMODE": "disable",
        }

    # ---- from the host -----------------------------------------------------------------------

    def conninfo(
        self, database: str, user: str = "postgres", password: str = SUPERUSER_PASSWORD
    ) -> str:
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1",
            port=self.host_port,
            dbname=database,
            user=user,
            password=password,
            connect_timeout=5,
        )

    def connect(
        self,
        database: str,
        user: str = "postgres",
        password: str = SUPERUSER_PASSWORD,
        **kwargs: Any,
    ) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo(database, user, password), **kwargs)

    def _wait_ready(self, timeout_s: float) -> None:
        """Ready means a real query answers, not a log line."""
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            self.container.reload()
            if self.container.status not in ("created", "running"):
                break
            try:
                with self.connect("postgres") as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(0.3)
        logs = self.container.logs(tail=30).decode("utf-8", "replace")
        raise ScratchTimeout(
            f"{self.container.name} (status {self.container.status}) answered no query within "
            f"{timeout_s:.0f} s on 127.0.0.1:{self.host_port}; last error: {last_error}\n"
            f"--- last lines of its log ---\n{logs}"
        )


def _published_port(container: Container) -> int:
    # The engine picks the host port at start; it shows up in the container's port map.
    for _ in range(50):
        container.reload()
        bindings = (container.ports or {}).get("5432/tcp")
        if bindings:
            return int(bindings[0]["HostPort"])
        time.sleep(0.1)
    raise RuntimeError(f"{container.name}: 5432/tcp was not published")


def _remove_if_present(client: docker.DockerClient, name: str) -> None:
    with suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)
