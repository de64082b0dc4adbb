"""What backups and restores need from the container engine: commands inside a stack's
containers, the node that is primary now, and one-shot jobs on the stack's image.

Everything runs through the Docker API (DOCKER_HOST) of the stack's host. Queries inside a
server's container run as the postgres OS user over its Unix socket (peer authentication), so no
password is needed here.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import docker
import docker.errors
from docker.types import Mount

from elizadb.errors import ElizaDbError
from infra.components.common import LABEL_NODE, LABEL_ROLE, LABEL_STACK
from infra.topology import Node, Topology

Progress = Callable[[str], None]


class BackupError(ElizaDbError):
    """A backup, a restore or one of their jobs failed; the message carries the log's end."""


@dataclass(frozen=True)
class ExecResult:
    code: int
    stdout: str
    stderr: str

    def tail(self, lines: int = 25) -> str:
        text = (self.stderr + self.stdout).strip().splitlines()
        return "\n".join(text[-lines:])


def exec_in(
    client: docker.DockerClient, container: str, cmd: Sequence[str], user: str = ""
) -> ExecResult:
    """Run `cmd` in a running container and wait for it; stdout and stderr kept apart."""
    api = client.api
    try:
        exec_id = api.exec_create(container, list(cmd), user=user, stdout=True, stderr=True)["Id"]
        out, err = api.exec_start(exec_id, demux=True)
        code = api.exec_inspect(exec_id).get("ExitCode")
    except docker.errors.NotFound:
        raise BackupError(f"container {container} does not exist") from None
    except docker.errors.APIError as exc:
        raise BackupError(f"cannot run {cmd[0]} in {container}: {exc.explanation or exc}") from None
    return ExecResult(
        code if isinstance(code, int) else 1,
        (out or b"").decode(errors="replace"),
        (err or b"").decode(errors="replace"),
    )


def psql(
    client: docker.DockerClient, node: Node, *statements: str, database: str = "postgres"
) -> ExecResult:
    """Statements, each its own `-c` (so each runs outside a transaction block), on one node."""
    cmd = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", database]
    for statement in statements:
        cmd += ["-c", statement]
    return exec_in(client, node.name, cmd, user="postgres")


def is_running(client: docker.DockerClient, name: str) -> bool:
    try:
        return client.containers.get(name).status == "running"
    except docker.errors.NotFound:
        return False


def in_recovery(client: docker.DockerClient, node: Node) -> bool | None:
    """True for a standby, False for a primary, None when the node does not answer."""
    if not is_running(client, node.name):
        return None
    result = psql(client, node, "SELECT pg_is_in_recovery()")
    if result.code != 0:
        return None
    return {"t": True, "f": False}.get(result.stdout.strip())


def running_primary(client: docker.DockerClient, topo: Topology) -> Node | None:
    """The node that accepts writes now, None when none does; more than one is an error."""
    primaries = [n for n in topo.nodes if in_recovery(client, n) is False]
    if len(primaries) > 1:
        raise BackupError(
            "more than one node accepts writes ("
            + ", ".join(n.name for n in primaries)
            + "); resolve that first (elizadb status)"
        )
    return primaries[0] if primaries else None


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout_s: float,
    interval_s: float = 0.5,
    on_timeout: Callable[[], str] = lambda: "",
) -> float:
    """Seconds until `check()` is true; BackupError after `timeout_s`."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise BackupError(f"{what}: not done after {timeout_s:.0f}s\n{on_timeout()}".rstrip())
        time.sleep(interval_s)


def container_logs(client: docker.DockerClient, name: str, lines: int = 30) -> str:
    try:
        return client.api.logs(name, tail=lines).decode(errors="replace")
    except docker.errors.APIError:
        return ""


def tar_files(files: dict[str, str]) -> bytes:
    """An archive of text files (absolute paths), for put_archive at /."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        made: set[str] = set()
        for path, content in sorted(files.items()):
            parts = path.strip("/").split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in made:
                    made.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            data = content.encode()
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class VolumeMount:
    volume: str
    path: str
    read_only: bool = False


def run_job(
    client: docker.DockerClient,
    *,
    image: str,
    name: str,
    stack: str,
    command: Sequence[str],
    mounts: Sequence[VolumeMount],
    files: dict[str, str],
    node: str = "",
    timeout_s: float = 3600,
    stdout_only: bool = False,
) -> str:
    """Run the image's entrypoint with `command` in a one-shot container, wait for it, remove it,
    and return its output; BackupError with the log's end when it fails. The container carries
    the stack's label, so `elizadb down` removes a leftover of an interrupted run."""
    api = client.api
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)
    host_config = api.create_host_config(
        mounts=[
            Mount(target=m.path, source=m.volume, type="volume", read_only=m.read_only)
            for m in mounts
        ],
    )
    try:
        created = api.create_container(
            image=image,
            command=list(command),
            name=name,
            labels={LABEL_STACK: stack, LABEL_ROLE: "backup-job", LABEL_NODE: node or name},
            host_config=host_config,
        )
    except docker.errors.APIError as exc:
        raise BackupError(f"cannot create {name} from {image}: {exc.explanation or exc}") from None
    try:
        if files:
            api.put_archive(created["Id"], "/", tar_files(files))
        api.start(created["Id"])
        # types-docker says int; docker-py hands the timeout to requests, which takes a float.
        result = api.wait(created["Id"], timeout=timeout_s)  # type: ignore[arg-type]
        logs = api.logs(created["Id"]).decode(errors="replace")
        stdout = api.logs(created["Id"], stderr=False).decode(errors="replace")
    except docker.errors.APIError as exc:
        raise BackupError(
            f"{name}: the container engine refused: {exc.explanation or exc}"
        ) from None
    finally:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_container(created["Id"], force=True)
    if result.get("StatusCode") != 0:
        tail = "\n".join(logs.strip().splitlines()[-25:])
        raise BackupError(
            f"{name} failed (exit code {result.get('StatusCode')}); its log ends:\n{tail}"
        )
    return stdout if stdout_only else logs
