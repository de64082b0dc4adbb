"""Which container engine a benchmark ran on, for its result file: results from Podman and from
Docker Engine sit side by side and must say which is which."""

from __future__ import annotations

import os

import docker


def engine_description() -> dict[str, str]:
    host = os.environ.get("DOCKER_HOST", "default")
    version = docker.DockerClient(base_url=host if host != "default" else None).version()
    # Podman names its component "Podman Engine"; Docker Engine names it "Engine".
    engine = next((c for c in version.get("Components", []) if "Engine" in c.get("Name", "")), {})
    return {
        "docker_host": host,
        "name": "Podman" if "Podman" in engine.get("Name", "") else "Docker Engine",
        "version": str(engine.get("Version", version.get("Version", "?"))),
        "api_version": str(version.get("ApiVersion", "?")),
    }
