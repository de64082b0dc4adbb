"""Every call eliza-db makes into a container engine, in one place: connecting, commands inside a
container (psql as the postgres OS user over the local socket, so no password is needed),
files in, logs, one-shot jobs and bounded waits that explain their timeout.

Each function takes the client of the engine that runs the container it acts on: a stack whose
nodes live on several Docker hosts passes each node's own client. Every refusal of the engine is
an EngineError; a command that ran and failed is an ExecResult with its exit code.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import docker.tls
import requests
from docker.types import Mount

from elizadb.errors import EngineError

# An exec that the engine refused, or that never reported its exit code.
REFUSED = 1


def connect(url: str | None = None, cert_path: str | None = None) -> docker.DockerClient:
    """A client for `url` (unix://, ssh:// through the ssh command, tcp:// with the client
    certificates of `cert_path`), else DOCKER_HOST (or the default socket), with a clear error
    when none answers."""
    where = url or os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        if not url:
            client = docker.from_env(timeout=300)
        elif cert_path:
            folder = Path(cert_path)
            tls = docker.tls.TLSConfig(
                client_cert=(str(folder / "cert.pem"), str(folder / "key.pem")),
                ca_cert=str(folder / "ca.pem"),
                verify=True,
            )
            client = docker.DockerClient(base_url=url, tls=tls, timeout=300)
        else:
            client = docker.DockerClient(
                base_url=url, timeout=300, use_ssh_client=url.startswith("ssh://")
            )
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineError(
            f"no container engine answers at {where} ({exc}). Start Docker, or run "
            "`scripts/bootstrap-engine.sh` and export the DOCKER_HOST it prints"
        ) from None
    return client


@dataclass(frozen=True)
class HostEngine:
    """Where a Docker host's API answers: its url (None: DOCKER_HOST) and, for tcp://, the
    folder of its client certificates."""

    url: str | None = None
    cert_path: str | None = None


class Engines:
    """The engines of a stack whose parts run on several Docker hosts: a client per host,
    connected when first needed, and the host of each container (`placement`, container name
    to host; any other container, such as a job, runs on `default_host`).

    Every function of this module takes either one client or an Engines, and then acts on the
    engine that runs the container it names."""

    def __init__(
        self,
        hosts: Mapping[str, HostEngine],
        placement: Mapping[str, str],
        default_host: str,
    ) -> None:
        self.hosts = dict(hosts)
        self.placement = dict(placement)
        self.default_host = default_host
        self._clients: dict[str, docker.DockerClient] = {}

    def host(self, name: str) -> docker.DockerClient:
        if name not in self._clients:
            where = self.hosts.get(name, HostEngine())
            self._clients[name] = connect(where.url, where.cert_path)
        return self._clients[name]

    def host_of(self, container: str) -> str:
        return self.placement.get(container, self.default_host)

    def of(self, container: str) -> docker.DockerClient:
        return self.host(self.host_of(container))

    def all(self) -> list[tuple[str, docker.DockerClient]]:
        """Every host's client, in name order."""
        return [(name, self.host(name)) for name in sorted(self.hosts)]


# One engine, or the engines of a stack on several hosts.
Target = docker.DockerClient | Engines


def on(target: Target, container: str) -> docker.DockerClient:
    """The client of the engine that runs `container`."""
    return target.of(container) if isinstance(target, Engines) else target


@dataclass(frozen=True)
class ExecResult:
    code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def tail(self, lines: int = 25) -> str:
        text = (self.stderr + self.stdout).strip().splitlines()
        return "\n".join(text[-lines:])


def exec_in(client: Target, container: str, cmd: Sequence[str], user: str = "") -> ExecResult:
    """Run `cmd` in a running container and wait for it; stdout and stderr kept apart."""
    api = on(client, container).api
    try:
        exec_id = api.exec_create(container, list(cmd), user=user, stdout=True, stderr=True)["Id"]
        out, err = api.exec_start(exec_id, demux=True)
        code = api.exec_inspect(exec_id).get("ExitCode")
    except docker.errors.NotFound:
        raise EngineError(f"container {container} does not exist") from None
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot run {cmd[0]} in {container}: {exc.explanation or exc}") from None
    except requests.exceptions.ConnectionError:
        raise EngineError(f"the engine that runs {container} does not answer") from None
    return ExecResult(
        code if isinstance(code, int) else REFUSED,
        (out or b"").decode(errors="replace"),
        (err or b"").decode(errors="replace"),
    )


def psql(
    client: Target,
    container: str,
    *statements: str,
    database: str = "postgres",
    timeout_s: float | None = None,
) -> ExecResult:
    """Statements on one node as the postgres OS user, each its own `-c` (so each runs outside a
    transaction block); rows unaligned, fields separated by |."""
    cmd = ["psql", "-X", "-q", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", database]
    if timeout_s is not None:
        # -q hides the SET's own output.
        cmd += ["-c", f"SET statement_timeout = '{int(timeout_s * 1000)}'"]
    for statement in statements:
        cmd += ["-c", statement]
    return exec_in(client, container, cmd, user="postgres")


def query_rows(client: Target, container: str, sql: str, timeout_s: float = 10) -> list[str] | None:
    """The rows of one statement (fields separated by |); None when the node cannot answer."""
    try:
        result = psql(client, container, sql, timeout_s=timeout_s)
    except EngineError:
        return None
    if not result.ok:
        return None
    return [line for line in result.stdout.splitlines() if line]


# The status of a container whose host's engine does not answer (a lost host).
UNREACHABLE = "unreachable"


def container_status(client: Target, name: str) -> str | None:
    """The engine's status of a container (running, exited, ...); None when it does not exist,
    UNREACHABLE when the engine that runs it does not answer."""
    try:
        return str(on(client, name).containers.get(name).status)
    except docker.errors.NotFound:
        return None
    except (EngineError, requests.exceptions.ConnectionError):
        return UNREACHABLE


def container_state(client: Target, name: str) -> dict[str, Any]:
    """The engine's State record of a container (Running, Restarting, ExitCode, ...)."""
    try:
        return dict(on(client, name).api.inspect_container(name)["State"])
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot inspect {name}: {exc.explanation or exc}") from None


def is_running(client: Target, name: str) -> bool:
    return container_status(client, name) == "running"


def start(client: Target, name: str) -> None:
    try:
        on(client, name).api.start(name)
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot start {name}: {exc.explanation or exc}") from None


def stop(client: Target, name: str, timeout_s: int = 10) -> None:
    """Stop a container through the engine (so that its restart policy does not bring it back);
    kill it when it will not stop. A container that does not exist is already stopped."""
    try:
        on(client, name).api.stop(name, timeout=timeout_s)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError:
        kill(client, name)


def remove(client: Target, name: str) -> None:
    """Remove a container, running or not; one that does not exist is already gone."""
    try:
        on(client, name).api.remove_container(name, force=True)
    except docker.errors.NotFound:
        pass


def kill(client: Target, name: str) -> None:
    """SIGKILL. Any other signal is sent from inside the container: one through the kill API
    makes Docker Engine (20.10) drop the container's restart policy for its next exit."""
    try:
        on(client, name).api.kill(name, signal="SIGKILL")
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot kill {name}: {exc.explanation or exc}") from None


def in_recovery(client: Target, container: str) -> bool | None:
    """True for a standby, False for a primary, None when the node does not answer."""
    if not is_running(client, container):
        return None
    rows = query_rows(client, container, "SELECT pg_is_in_recovery()")
    if not rows:
        return None
    return {"t": True, "f": False}.get(rows[-1])


def logs(client: Target, name: str, lines: int = 30) -> str:
    try:
        return on(client, name).api.logs(name, tail=lines).decode(errors="replace")
    except docker.errors.APIError:
        return ""


def explain(client: Target, name: str, lines: int = 30) -> str:
    """What a timeout message needs to say about a container: its status, exit code and log end."""
    try:
        state = on(client, name).api.inspect_container(name)["State"]
    except docker.errors.NotFound:
        return f"{name} does not exist"
    except docker.errors.APIError as exc:
        return f"{name} cannot be inspected: {exc.explanation or exc}"
    return (
        f"{name}: status {state.get('Status')}, exit code {state.get('ExitCode')}; "
        f"its log ends:\n{logs(client, name, lines)}"
    )


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout_s: float,
    interval_s: float = 0.5,
    on_timeout: Callable[[], str] = lambda: "",
) -> float:
    """Seconds until `check()` is true; EngineError after `timeout_s`, with what `on_timeout`
    says (for a container: `lambda: explain(client, name)`)."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise EngineError(f"{what}: not done after {timeout_s:.0f}s\n{on_timeout()}".rstrip())
        time.sleep(interval_s)


@dataclass(frozen=True)
class File:
    """A text file put into a container (absolute path)."""

    path: str
    content: str
    mode: int = 0o644


def tar_files(files: Iterable[File]) -> bytes:
    """An archive of `files` with their parent folders, for put_archive at /. Sorted, so the
    same files always make the same archive.

    It ends at its two end-of-archive blocks, without the zeros tarfile pads it with to a
    multiple of 10 KiB: Podman's copier stops reading at the end blocks, and the rest of the
    upload then fails with "broken pipe" now and then (containers/buildah#6573; seen once in
    a CI run, on a container's first upload)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        made: set[str] = set()
        for item in sorted(files, key=lambda f: f.path):
            parts = item.path.strip("/").split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in made:
                    made.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            data = item.content.encode()
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode = len(data), item.mode
            tar.addfile(info, io.BytesIO(data))
    # Closed: tar.offset counts the end blocks, not the padding after them.
    return buffer.getvalue()[: tar.offset]


def put_files(client: Target, container: str, files: Iterable[File]) -> None:
    try:
        on(client, container).api.put_archive(container, "/", tar_files(files))
    except docker.errors.APIError as exc:
        raise EngineError(
            f"cannot write files into {container}: {exc.explanation or exc}"
        ) from None


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
    labels: dict[str, str],
    command: Sequence[str],
    mounts: Sequence[VolumeMount],
    files: Iterable[File] = (),
    archive: tuple[str, IO[bytes]] | None = None,
    timeout_s: float = 3600,
    stdout_only: bool = False,
) -> str:
    """Run the image's entrypoint with `command` in a one-shot container, wait for it, remove it,
    and return its output; EngineError with the log's end when it fails. Give it the stack's
    labels, so that `elizadb down` removes a leftover of an interrupted run. `archive`: a tar
    stream unpacked at a folder of the container before it starts (not in a volume: an engine
    may not mount those before the start)."""
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
            image=image, command=list(command), name=name, labels=labels, host_config=host_config
        )
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot create {name} from {image}: {exc.explanation or exc}") from None
    files = list(files)
    try:
        if files:
            api.put_archive(created["Id"], "/", tar_files(files))
        if archive is not None:
            api.put_archive(created["Id"], archive[0], archive[1])
        api.start(created["Id"])
        # types-docker says int; docker-py hands the timeout to requests, which takes a float.
        result = api.wait(created["Id"], timeout=timeout_s)  # type: ignore[arg-type]
        output = api.logs(created["Id"]).decode(errors="replace")
        stdout = api.logs(created["Id"], stderr=False).decode(errors="replace")
    except docker.errors.APIError as exc:
        raise EngineError(
            f"{name}: the container engine refused: {exc.explanation or exc}"
        ) from None
    finally:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_container(created["Id"], force=True)
    if result.get("StatusCode") != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise EngineError(
            f"{name} failed (exit code {result.get('StatusCode')}); its log ends:\n{tail}"
        )
    return stdout if stdout_only else output


def export_volume(
    client: docker.DockerClient,
    *,
    image: str,
    name: str,
    labels: dict[str, str],
    volume: str,
    path: str,
    out: IO[bytes],
) -> None:
    """Write a tar of `volume` (its entries under the base name of `path`) into `out`, through a
    container that mounts it read-only at `path`. The container runs while it is read: Podman
    mounts a volume only for a started container, and reads an empty folder otherwise. Tar
    headers from Podman name every file root's: the reader sets owners itself."""
    api = client.api
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)
    host_config = api.create_host_config(
        mounts=[Mount(target=path, source=volume, type="volume", read_only=True)]
    )
    try:
        created = api.create_container(
            image=image,
            entrypoint=["sleep", "3600"],
            name=name,
            labels=labels,
            host_config=host_config,
        )
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot create {name} from {image}: {exc.explanation or exc}") from None
    try:
        api.start(created["Id"])
        stream, _ = api.get_archive(created["Id"], path)
        for chunk in stream:
            out.write(chunk)
    except docker.errors.APIError as exc:
        raise EngineError(
            f"{name}: cannot read volume {volume}: {exc.explanation or exc}"
        ) from None
    finally:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_container(created["Id"], force=True)
