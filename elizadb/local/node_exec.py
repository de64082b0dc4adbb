"""Commands inside a node's container as the postgres OS user: psql over the local socket with
peer authentication, so no password is needed (status, failover, drills)."""

from __future__ import annotations

import docker
import docker.errors


def exec_as_postgres(
    client: docker.DockerClient, container: str, cmd: list[str]
) -> tuple[int, str]:
    """(exit code, output); exit code 1 and no output when the engine refuses the exec."""
    api = client.api
    try:
        exec_id = api.exec_create(container, cmd, user="postgres")["Id"]
        out = api.exec_start(exec_id).decode(errors="replace")
        return api.exec_inspect(exec_id).get("ExitCode", 1), out
    except docker.errors.APIError:
        return 1, ""


def psql_lines(
    client: docker.DockerClient, container: str, sql: str, timeout_s: float = 10
) -> list[str] | None:
    """The unaligned rows (fields separated by |) of one statement; None when it failed."""
    code, out = exec_as_postgres(
        client,
        container,
        [
            "psql",
            "-X",
            "-At",
            "-F",
            "|",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "postgres",
            "-c",
            f"SET statement_timeout = '{int(timeout_s * 1000)}'",
            "-c",
            sql,
        ],
    )
    if code != 0:
        return None
    return [line for line in out.splitlines() if line and line != "SET"]
