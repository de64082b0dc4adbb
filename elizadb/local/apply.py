"""Apply a captured declaration through the Docker API, the way the docker provider would:
networks and volumes are created when missing, the image is built when its tag is absent, and a
container is replaced only when what was declared for it changed (its spec digest, kept as a
label). Containers of the stack that are no longer declared are removed; volumes never are.

Readiness is the declared health check itself, run with `exec` in a tight loop: the engine's own
health scheduling is slow to report (and Podman needs systemd timers for it).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from docker.types import Healthcheck, IPAMConfig, IPAMPool, Mount

from elizadb.engine import Engines, File, Target, exec_in, on, put_files
from elizadb.errors import DeployError, EngineError
from elizadb.local.capture import Declaration, Declared
from infra.components.common import stack_filter
from infra.durations import parse_go_duration

NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
CONTAINER = "docker:index/container:Container"
PROVIDER = "pulumi:providers:docker"
# infra/program.py names a declared host's provider "host-<host>".
PROVIDER_PREFIX = "host-"
LABEL_SPEC = "elizadb.spec"
# The declared destroyGraceSeconds, kept on the container: like the provider, a removal waits as
# long as the declaration the container was made from said.
LABEL_GRACE = "elizadb.destroy-grace-seconds"

Progress = Callable[[str], None]


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    built_image: bool = False

    @property
    def changed(self) -> bool:
        return bool(
            self.created or self.replaced or self.started or self.removed or self.built_image
        )


def spec_digest(decl: Declared) -> str:
    return hashlib.sha256(json.dumps(decl.inputs, sort_keys=True).encode()).hexdigest()[:20]


def grace_seconds(labels: dict[str, str]) -> int:
    """How long to let a container stop before it is killed. As the provider does, a container
    declared without a grace period gets none; one made before grace periods were declared (no
    label at all, but our spec label) gets the old fixed 30 s."""
    if LABEL_GRACE in labels:
        return int(labels[LABEL_GRACE])
    return 30 if LABEL_SPEC in labels else 0


def _labels(decl: Declared) -> dict[str, str]:
    found = {item["label"]: item["value"] for item in decl.inputs.get("labels") or []}
    return dict(sorted(found.items()))


def upload_files(uploads: Iterable[dict[str, Any]]) -> list[File]:
    """The provider's `uploads` of a container as files to put into it."""
    return [File(u["file"], u["content"], 0o755 if u.get("executable") else 0o644) for u in uploads]


def _container_levels(containers: list[Declared]) -> list[list[Declared]]:
    """Group containers so that each depends only on containers of earlier groups."""
    by_urn = {c.urn: c for c in containers}

    def deps(c: Declared) -> set[str]:
        # A dependency on a component means one on every container below it.
        found: set[str] = set()
        for urn in c.dependencies:
            if urn in by_urn:
                found.add(urn)
            else:
                found |= {o.urn for o in containers if o.parent == urn}
        return found - {c.urn}

    remaining = {c.urn: deps(c) for c in containers}
    levels: list[list[Declared]] = []
    done: set[str] = set()
    while remaining:
        ready = [urn for urn, d in remaining.items() if d <= done]
        if not ready:
            raise DeployError(f"dependency cycle among containers: {sorted(remaining)}")
        levels.append([by_urn[u] for u in _declaration_order(ready, containers)])
        done.update(ready)
        for urn in ready:
            del remaining[urn]
    return levels


def _declaration_order(urns: list[str], containers: list[Declared]) -> list[str]:
    order = {c.urn: i for i, c in enumerate(containers)}
    return sorted(urns, key=order.__getitem__)


class Applier:
    """Applies a declaration on one engine, or on the engines of a stack's hosts (each
    resource on the host whose provider it was declared with)."""

    def __init__(
        self,
        target: Target,
        stack: str,
        progress: Progress,
        conforming: dict[str, str] | None = None,
    ) -> None:
        self.target = target
        self.stack = stack
        # Provider URN -> host name, from the declaration being applied.
        self._provider_hosts: dict[str, str] = {}
        self.progress = progress
        # Containers brought in line with a newer declaration in place (a failover repoints the
        # pooler without recreating it): name -> the spec digest they now match.
        self.conforming = conforming or {}

    # -- resources -------------------------------------------------------------------------
    def apply(self, declaration: Declaration) -> ApplyReport:
        try:
            return self._apply(declaration)
        except docker.errors.APIError as exc:
            raise EngineError(f"the container engine refused: {exc.explanation or exc}") from None

    def _engines(self) -> list[tuple[str, docker.DockerClient]]:
        """Every engine of the stack, with its host's name ("" for a single engine)."""
        if isinstance(self.target, Engines):
            return self.target.all()
        return [("", self.target)]

    def _host(self, decl: Declared) -> str:
        """The host a resource was declared on ("" for a single engine)."""
        if not isinstance(self.target, Engines):
            return ""
        return self._provider_hosts.get(decl.provider, self.target.default_host)

    def _client(self, decl: Declared) -> docker.DockerClient:
        """The engine a resource was declared on."""
        if not isinstance(self.target, Engines):
            return self.target
        return self.target.host(self._host(decl))

    def _where(self, decl: Declared) -> str:
        return f" on {self._host(decl)}" if decl.provider else ""

    def prepare(self, declaration: Declaration) -> bool:
        """Everything but the containers: hosts, networks, volumes, images. True when an image
        was built."""
        self._provider_hosts = {
            p.urn: p.name.removeprefix(PROVIDER_PREFIX) for p in declaration.of_type(PROVIDER)
        }
        for net in declaration.of_type(NETWORK):
            self._ensure_network(net)
        for vol in declaration.of_type(VOLUME):
            self._ensure_volume(vol)
        built = False
        for image in declaration.of_type(REMOTE_IMAGE):
            built |= self.ensure_image(image)
        return built

    def _apply(self, declaration: Declaration) -> ApplyReport:
        report = ApplyReport()
        report.built_image = self.prepare(declaration)
        containers = declaration.of_type(CONTAINER)
        wanted = {(self._host(c), c.inputs["name"]) for c in containers}
        for host, client in self._engines():
            for existing in self._stack_containers(client):
                if (host, existing.name) not in wanted:
                    self.progress(f"removing {existing.name} (no longer declared)")
                    self._remove(client, str(existing.name))
                    report.removed.append(existing.name)
        for level in _container_levels(containers):
            started = [c for c in level if self._ensure_container(c, report)]
            self._wait_all(started)
        return report

    def _stack_containers(self, client: docker.DockerClient) -> list[Any]:
        """The stack's containers on one engine."""
        return client.containers.list(all=True, filters=stack_filter(self.stack))

    def _ensure_network(self, decl: Declared) -> None:
        name = decl.inputs["name"]
        digest = spec_digest(decl)
        client = self._client(decl)
        existing = [n for n in client.networks.list(names=[name]) if n.name == name]
        if existing:
            if existing[0].attrs.get("Labels", {}).get(LABEL_SPEC) == digest:
                return
            # Addressing changed (or the network predates it): containers must leave it first;
            # they are recreated below, since their declared addresses changed too.
            self.progress(f"recreating network {name}{self._where(decl)} (its declaration changed)")
            for container in self._stack_containers(client):
                self._remove(client, str(container.name))
            existing[0].remove()
        self.progress(f"creating network {name}{self._where(decl)}")
        pools = [
            IPAMPool(subnet=c.get("subnet"), gateway=c.get("gateway"), iprange=c.get("ipRange"))
            for c in decl.inputs.get("ipamConfigs") or []
        ]
        client.networks.create(
            name,
            driver="bridge",
            labels={**_labels(decl), LABEL_SPEC: digest},
            ipam=IPAMConfig(pool_configs=pools) if pools else None,
        )

    def _ensure_volume(self, decl: Declared) -> None:
        name = decl.inputs["name"]
        client = self._client(decl)
        try:
            client.volumes.get(name)
        except docker.errors.NotFound:
            self.progress(f"creating volume {name}{self._where(decl)}")
            client.volumes.create(name, labels=_labels(decl))

    def ensure_image(self, decl: Declared) -> bool:
        tag = decl.inputs["name"]
        client = self._client(decl)
        try:
            client.images.get(tag)
            return False
        except docker.errors.ImageNotFound:
            pass
        build = decl.inputs["build"]
        self.progress(
            f"building image {tag}{self._where(decl)} (base {build['buildArgs'].get('BASE_IMAGE')})"
        )
        started = time.monotonic()
        stream = client.api.build(
            path=build["context"],
            dockerfile=Path(build["dockerfile"]).name,
            buildargs=build.get("buildArgs") or {},
            tag=tag,
            rm=True,
            decode=True,
        )
        tail: list[str] = []
        for chunk in stream:
            if "error" in chunk:
                raise DeployError(f"image build failed: {chunk['error'].strip()}\n" + "".join(tail))
            line = chunk.get("stream", "")
            if line.strip():
                tail = ([*tail, line])[-20:]
                if line.startswith(("STEP", "Step")):
                    self.progress(f"  {line.strip()}")
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            raise DeployError("image build finished without an image:\n" + "".join(tail)) from None
        self.progress(f"built {tag} in {time.monotonic() - started:.1f}s")
        return True

    # -- containers ------------------------------------------------------------------------
    def _same(self, current: Any, name: str, digest: str) -> bool:
        """Whether an existing container is what its declaration (digest) asks for."""
        return bool(
            current.labels.get(LABEL_SPEC) == digest
            or (self.conforming.get(name) == digest and current.labels.get(LABEL_SPEC) is not None)
        )

    def replaces(self, decl: Declared) -> bool:
        """Whether applying would replace this running container (its declaration changed)."""
        try:
            current = self._client(decl).containers.get(decl.inputs["name"])
        except docker.errors.NotFound:
            return False
        return current.status == "running" and not self._same(
            current, decl.inputs["name"], spec_digest(decl)
        )

    def start(self, decls: list[Declared], report: ApplyReport, wait: bool = True) -> None:
        """Create, replace or start these containers as declared (`prepare` first), all of them
        before waiting until they are ready (etcd members answer only as a majority), or
        without waiting."""
        started = [d for d in decls if self._ensure_container(d, report)]
        if wait:
            self._wait_all(started)

    def _ensure_container(self, decl: Declared, report: ApplyReport) -> bool:
        """Create, replace or start as needed; True when it must then be waited for."""
        name = decl.inputs["name"]
        digest = spec_digest(decl)
        is_job = bool(decl.inputs.get("attach"))
        client = self._client(decl)
        try:
            current = client.containers.get(name)
        except docker.errors.NotFound:
            current = None
        if current is not None:
            same = self._same(current, name, digest)
            if (
                same
                and is_job
                and current.attrs["State"].get("ExitCode") == 0
                and current.status == "exited"
            ):
                report.unchanged.append(name)
                return False
            if same and current.status == "running":
                report.unchanged.append(name)
                return False
            if same and not is_job:
                self.progress(f"starting {name}")
                current.start()
                report.started.append(name)
                return True
            self.progress(
                f"replacing {name} (its declaration changed)" if not same else f"re-running {name}"
            )
            self._remove(client, name)
            report.replaced.append(name)
        else:
            report.created.append(name)
        self._create_and_start(decl, digest)
        return True

    def _create_and_start(self, decl: Declared, digest: str) -> None:
        spec = decl.inputs
        name = spec["name"]
        client = self._client(decl)
        api = client.api
        labels = {**_labels(decl), LABEL_SPEC: digest}
        if spec.get("destroyGraceSeconds"):
            labels[LABEL_GRACE] = str(spec["destroyGraceSeconds"])
        ports = {
            p["internal"]: (p.get("ip") or "127.0.0.1", p["external"])
            for p in spec.get("ports") or []
        }
        mounts = [
            Mount(target=v["containerPath"], source=v["volumeName"], type="volume")
            for v in spec.get("volumes") or []
        ]
        restart = spec.get("restart") or "no"
        host_config = api.create_host_config(
            port_bindings=ports or None,
            mounts=mounts or None,
            restart_policy={"Name": restart} if restart != "no" else None,
            mem_limit=f"{spec['memory']}m" if spec.get("memory") else None,
            memswap_limit=f"{spec['memorySwap']}m" if spec.get("memorySwap") else None,
            shm_size=f"{spec['shmSize']}m" if spec.get("shmSize") else None,
        )
        networks = spec.get("networksAdvanced") or []
        networking = None
        if networks:
            first = networks[0]
            # types-docker types the argument as one EndpointConfig; docker-py takes a mapping
            # of network name to EndpointConfig (its docstring and the Engine API).
            networking = api.create_networking_config(
                {  # type: ignore[arg-type]
                    first["name"]: api.create_endpoint_config(
                        aliases=first.get("aliases"), ipv4_address=first.get("ipv4Address")
                    )
                }
            )
        health = spec.get("healthcheck")
        healthcheck = None
        if health:
            healthcheck = Healthcheck(
                test=health["tests"],
                interval=parse_go_duration(health["interval"]),
                timeout=parse_go_duration(health["timeout"]),
                retries=health["retries"],
                start_period=parse_go_duration(health["startPeriod"]),
            )
        self.progress(f"creating {name}{self._where(decl)}")
        created = api.create_container(
            image=spec["image"],
            entrypoint=spec.get("entrypoints"),
            command=spec.get("command"),
            name=name,
            hostname=spec.get("hostname"),
            environment=spec.get("envs") or None,
            labels=labels,
            ports=list(ports) or None,
            host_config=host_config,
            networking_config=networking,
            healthcheck=healthcheck,
            stop_signal=spec.get("stopSignal"),
            stop_timeout=spec.get("stopTimeout"),
        )
        for extra in networks[1:]:
            api.connect_container_to_network(
                created["Id"],
                extra["name"],
                aliases=extra.get("aliases"),
                ipv4_address=extra.get("ipv4Address"),
            )
        uploads = spec.get("uploads") or []
        if uploads:
            put_files(client, created["Id"], upload_files(uploads))
        api.start(created["Id"])

    def remove(self, name: str) -> None:
        """Stop (within its grace) and remove a container of the stack, wherever it runs."""
        self._remove(on(self.target, name), name)

    @staticmethod
    def _remove(client: docker.DockerClient, name: str, graceful: bool = True) -> None:
        try:
            container = client.containers.get(name)
        except docker.errors.NotFound:
            return
        if graceful:
            try:
                container.stop(timeout=grace_seconds(container.labels))
            except docker.errors.APIError:
                pass  # already stopped, or its process is gone (a leftover): removal still works
        container.remove(force=True)

    # -- readiness -------------------------------------------------------------------------
    def _wait_all(self, containers: list[Declared]) -> None:
        if not containers:
            return
        with ThreadPoolExecutor(max_workers=len(containers)) as pool:
            for future in [pool.submit(self._wait_one, c) for c in containers]:
                future.result()

    def _wait_one(self, decl: Declared) -> None:
        spec = decl.inputs
        name = spec["name"]
        client = self._client(decl)
        api = client.api
        started = time.monotonic()
        if spec.get("attach"):
            self.progress(f"waiting for {name} to finish")
            result = api.wait(name, timeout=600)
            logs = api.logs(name, tail=40).decode(errors="replace")
            if result.get("StatusCode") != 0:
                raise DeployError(
                    f"{name} failed with exit code {result.get('StatusCode')}; its log ends:\n"
                    f"{logs}\nsee `docker logs {name}`"
                )
            for line in logs.splitlines():
                # What the migrations did, and each step of a parameter roll (patroni_roll.py).
                if "elizadb-migrate" in line or line.startswith(("applied", "unchanged", "roll:")):
                    self.progress(f"  {line.strip()}")
            self.progress(f"{name} finished in {time.monotonic() - started:.1f}s")
            return
        health = spec.get("healthcheck")
        if not health:
            return
        test = (
            health["tests"][1:] if health["tests"][0] == "CMD" else ["sh", "-c", health["tests"][1]]
        )
        timeout = spec.get("waitTimeout") or 120
        self.progress(f"waiting for {name} to be ready")
        while True:
            state = api.inspect_container(name)["State"]
            if not state.get("Running"):
                logs = api.logs(name, tail=30).decode(errors="replace")
                raise DeployError(
                    f"{name} stopped (status {state.get('Status')}, exit code "
                    f"{state.get('ExitCode')}) before it was ready; its log ends:\n{logs}"
                )
            if exec_in(client, name, test).ok:
                break
            if time.monotonic() - started > timeout:
                logs = api.logs(name, tail=30).decode(errors="replace")
                raise DeployError(
                    f"{name} was not ready after {timeout}s (health check {' '.join(test)}); "
                    f"its log ends:\n{logs}"
                )
            time.sleep(0.25)
        self.progress(f"{name} ready in {time.monotonic() - started:.1f}s")

    # -- teardown --------------------------------------------------------------------------
    def down(self, delete_volumes: bool) -> list[str]:
        """Remove the stack's containers and networks (and volumes, when asked) on every host;
        a host that does not answer is reported after the others are done."""
        removed: list[str] = []
        unreachable: list[str] = []
        hosts = sorted(self.target.hosts) if isinstance(self.target, Engines) else [""]
        for host in hosts:
            try:
                client = self.target.host(host) if isinstance(self.target, Engines) else self.target
                removed += self._down_on(client, f" on {host}" if host else "", delete_volumes)
            except (EngineError, requests.exceptions.ConnectionError):
                unreachable.append(host)
        if unreachable:
            raise EngineError(
                f"host(s) {', '.join(unreachable)} did not answer: the stack's containers, "
                f"networks and volumes there were left ({len(removed)} removed elsewhere); run "
                "`elizadb down` again once they are back"
            )
        return removed

    def _down_on(self, client: docker.DockerClient, at: str, delete_volumes: bool) -> list[str]:
        removed = []
        label = stack_filter(self.stack)
        for container in self._stack_containers(client):
            self.progress(f"removing {container.name}{at}")
            # A clean shutdown keeps what a kept volume holds consistent; when the volumes go
            # too there is nothing to keep, and a backup agent's or a node's grace (up to two
            # minutes) would only be waited out.
            self._remove(client, str(container.name), graceful=not delete_volumes)
            removed.append(str(container.name))
        for net in client.networks.list(filters=label):
            self.progress(f"removing network {net.name}{at}")
            net.remove()
            removed.append(str(net.name))
        if delete_volumes:
            for vol in client.volumes.list(filters=label):
                self.progress(f"deleting volume {vol.name}{at}")
                vol.remove(force=True)
                removed.append(str(vol.name))
        return removed
