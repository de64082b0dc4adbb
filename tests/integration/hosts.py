"""Several Docker hosts on one machine, for multi-host integration tests and drills.

A *host* is a privileged container on the machine's Podman that runs Podman's Docker-compatible
API inside (image built from tests/integration/testhost/). The machine drives each host through
its own socket, /run/elizadb-testhosts/<cluster>/<host>/podman.sock, exactly as it would drive a
remote Docker host; the hosts reach one another over one outer network at fixed addresses, as
separate machines on a LAN would. Each host keeps its engine's state (images, containers,
volumes) in a named volume, so it survives a crash and restart of the host.

How a test uses it::

    from tests.integration.hosts import HostCluster

    @pytest.fixture(scope="module")
    def cluster() -> Iterator[HostCluster]:
        with HostCluster("patroni", ["a", "b", "c"]) as hosts:  # builds, starts, waits
            hosts.load_image("localhost/elizadb-postgres:TAG")  # into every host
            yield hosts
        # every host, its volume, the network and the socket folders are gone

    def test_failover(cluster: HostCluster) -> None:
        a = cluster["a"]  # Host: name, address, docker_host, client()
        with closing(a.client()) as client:  # a docker.DockerClient on host a
            client.containers.run(IMAGE, ..., network_mode="host", detach=True)
        # code that reads the environment: DOCKER_HOST=a.docker_host
        cluster.partition("a")  # ... the others elect a new leader ...
        cluster.heal("a")
        cluster.kill("b")
        cluster.start("b")

A cluster's name picks its containers (``elizadb-testhost-<cluster>-<host>``), network
(``elizadb-testhosts-<cluster>``, a /24 of 10.239.0.0/16, hosts at .11, .12, ... in the order
given), volumes and socket folder; entering a cluster first removes what a killed earlier run
of the same name left, and leaving it removes everything, also when the test failed. Two runs
of one module on a machine are kept apart by the module lock (tests/integration/conftest.py),
so a module uses one fixed cluster name.

Faults, each on one host:

- ``kill(host)``: the machine crashes (SIGKILL to everything in it, inner containers included).
- ``start(host)``: it boots again. Its engine starts the inner containers whose restart policy
  is ``always`` or ``unless-stopped`` (as Docker Engine does when it starts; a test host has no
  systemd to run podman-restart.service); other containers stay exited, and none is left
  listed as running without a process. ``start`` returns when the API answers, which is after
  those containers were started (about 1 s).
- ``partition(host)`` / ``heal(host)``: its network cable is pulled and plugged back: peers
  cannot reach it nor it them, while the machine still drives it through its socket. The host
  keeps its address and MAC address, so peers reach it again at once after ``heal`` (measured:
  0.2-0.3 s; a connect to it fails from the moment of the partition, which a probe with a 2 s
  timeout sees 2.2-2.4 s later). A partitioned host that is killed and started stays cut off
  until healed.

Inner networking (both measured to reach peers on other hosts):

- a container in the host's network namespace (``network_mode="host"``) is reached at
  ``host.address``;
- a container on an inner bridge network is reached through a port published on the host's
  address (``ports={"5432/tcp": (host.address, 5432)}``; netavark programs nftables for it).

A container given no network gets the inner engine's default bridge network, as on Docker
Engine. Containers on one host resolve each other's names on a user-defined inner network; a
host's inner names are not known on other hosts: peers use addresses.

Images: a host has only the images put into it. ``load_image(tag)`` copies one from the outer
engine into the hosts that lack that image id (several at once); measured on a busy 2-core
machine, the 214 MB base image took 12-17 s and the 900 MB stack image 50-65 s (one or two
hosts), so a module should load once, in its fixture. ``HostCluster(..., share_images=True)``
instead mounts the machine's image store read-only into every host as an additional image
store: each host sees every image of the outer engine at once, with no copy (``load_image``
then finds nothing to do), and its own builds and pulls still go to its own store. Use it
where the test is not about getting images onto hosts; an image removed from the machine while
a host's container runs from it breaks that container.

The outer engine is the machine's Podman API (``unix:///run/podman/podman.sock``, or
``ELIZADB_TESTHOSTS_ENGINE``), whatever DOCKER_HOST the suite runs on: Docker Engine here
refuses privileged containers (its capability bounding set lacks CAP_SYS_RESOURCE). Where that
API does not answer, the test fails in CI and skips elsewhere (tests/integration/needs.py). The
host image is built from ``localhost/debian:trixie`` (or ``ELIZADB_TESTHOSTS_BASE``) when its
tag, a digest of the build context and the base image, is absent: about 30 s, once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import EndpointConfig, Mount

from tests.integration.needs import missing

OUTER_ENGINE_ENV = "ELIZADB_TESTHOSTS_ENGINE"
DEFAULT_OUTER_ENGINE = "unix:///run/podman/podman.sock"
BASE_IMAGE_ENV = "ELIZADB_TESTHOSTS_BASE"
DEFAULT_BASE_IMAGE = "localhost/debian:trixie"
SOCKET_ROOT = Path("/run/elizadb-testhosts")
BUILD_CONTEXT = Path(__file__).parent / "testhost"
IMAGE_REPOSITORY = "localhost/elizadb-testhost"
CLUSTER_LABEL = "elizadb.testhosts.cluster"
NAME_PREFIX = "elizadb-testhost-"
NETWORK_PREFIX = "elizadb-testhosts-"
# Each cluster's outer network is a /24 of this range; hosts are .11, .12, ... in host order.
SUPERNET = ipaddress.IPv4Network("10.239.0.0/16")
FIRST_HOST_OCTET = 11
# Names go into socket paths (108 bytes at most) and container names; a host's name has no '-'
# so that elizadb-testhost-<cluster>-<host> names one host of one cluster only.
_CLUSTER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,19}")
_HOST_NAME = re.compile(r"[a-z0-9]{1,12}")


Filters = dict[str, str | list[str] | bool]


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # the process ended meanwhile
        return ""


class HostError(RuntimeError):
    """A host did not start, answer or do what it was told."""


def progress(message: str) -> None:
    sys.stderr.write(f"  [hosts] {message}\n")


@dataclass(frozen=True)
class Host:
    """One Docker host of a cluster."""

    name: str
    """Short name within the cluster ("a")."""
    container: str
    """The outer container that is this host (elizadb-testhost-<cluster>-<name>)."""
    address: str
    """Its IPv4 address on the cluster's network, where the other hosts reach it."""
    docker_host: str
    """Its engine's API for the machine: a DOCKER_HOST value (unix:///run/.../podman.sock)."""

    @property
    def mac_address(self) -> str:
        """Its fixed MAC address (02:42 and the IPv4 address, as Docker makes them): a host that
        is plugged back in after a partition has the address its peers' ARP caches hold, as a
        machine whose cable was pulled would. A new one would leave them unreachable for as long
        as their cached neighbour entry lives: measured, more than 20 s."""
        octets = ipaddress.IPv4Address(self.address).packed
        return ":".join(f"{b:02x}" for b in (0x02, 0x42, *octets))

    def client(self, timeout: int = 300) -> docker.DockerClient:
        """A docker SDK client for this host's engine; the caller closes it."""
        return docker.DockerClient(base_url=self.docker_host, timeout=timeout)


def base_image() -> str:
    """The Debian image test hosts are built from; it is also a cheap image for inner
    containers (bash, perl; no python)."""
    return os.environ.get(BASE_IMAGE_ENV) or DEFAULT_BASE_IMAGE


def outer_engine_url() -> str:
    return os.environ.get(OUTER_ENGINE_ENV) or DEFAULT_OUTER_ENGINE


def require_outer_engine() -> docker.DockerClient:
    """A client for the outer Podman API; fails in CI and skips elsewhere when it is missing."""
    url = outer_engine_url()
    hint = (
        f"a container engine is needed for the test hosts: Podman's API at {url} (set {OUTER_ENGINE_ENV}; start it with "
        "ELIZADB_ENGINE=podman bash scripts/bootstrap-engine.sh)"
    )
    try:
        client = docker.DockerClient(base_url=url, timeout=600)
        client.ping()
        components = [c.get("Name", "") for c in client.version().get("Components", [])]
    except Exception as err:  # a missing socket, a refused connection, a timeout
        missing(f"{hint}: {err}")
    if not any("Podman" in name for name in components):
        client.close()
        missing(
            f"{hint}: the engine there is not Podman ({components}); Docker Engine "
            "refuses the privileged containers that test hosts are"
        )
    return client


def _context_files() -> list[Path]:
    return sorted(p for p in BUILD_CONTEXT.rglob("*") if p.is_file())


def host_image_tag(base_image_id: str) -> str:
    """The host image's tag: a digest of the build context and of the base image it is built
    from, so that the image is rebuilt exactly when either changes."""
    digest = hashlib.sha256(base_image_id.encode())
    for path in _context_files():
        digest.update(str(path.relative_to(BUILD_CONTEXT)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"{IMAGE_REPOSITORY}:{digest.hexdigest()[:16]}"


def ensure_host_image(outer: docker.DockerClient, say: Callable[[str], None] = progress) -> str:
    """Build the host image on the outer engine unless it is there; returns its tag."""
    base = base_image()
    try:
        base_id = str(outer.images.get(base).id)
    except docker.errors.ImageNotFound:
        missing(
            f"test hosts are built from {base}, which the engine at {outer_engine_url()} does "
            f"not have (set {BASE_IMAGE_ENV}, or make it: "
            "ELIZADB_ENGINE=podman bash scripts/bootstrap-engine.sh)"
        )
    tag = host_image_tag(base_id)
    try:
        outer.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    say(f"building {tag} from {base} (about 30 s)")
    started = time.monotonic()
    log: list[str] = []
    try:
        for chunk in outer.api.build(
            path=str(BUILD_CONTEXT),
            dockerfile="Containerfile",
            tag=tag,
            buildargs={"BASE": base},
            rm=True,
            decode=True,
        ):
            if "stream" in chunk:
                log.append(chunk["stream"])
            if "error" in chunk:
                raise HostError(f"building {tag}: {chunk['error']}")
        outer.images.get(tag)
    except (docker.errors.APIError, docker.errors.BuildError, HostError) as err:
        tail = "".join(log)[-3000:]
        raise HostError(f"building the test host image failed: {err}\n{tail}") from err
    say(f"built {tag} in {time.monotonic() - started:.1f} s")
    _remove_older_host_images(outer, tag)
    return tag


def _remove_older_host_images(outer: docker.DockerClient, keep: str) -> None:
    """Earlier builds of the host image (of an older context): each is 500 MB. One that a
    host container still uses stays (the engine refuses to remove it)."""
    for image in outer.images.list(name=IMAGE_REPOSITORY):
        for tag in image.tags:
            if tag != keep and tag.startswith(f"{IMAGE_REPOSITORY}:"):
                try:
                    outer.images.remove(tag)
                except docker.errors.APIError:
                    pass


class HostCluster:
    """Named Docker hosts on one outer network; a context manager that removes them all.

    ``HostCluster("name", ["a", "b"])`` or ``HostCluster("name", 3)`` (hosts h1, h2, h3).
    ``share_images=True``: every host sees the machine's images read-only, with no copy.
    ``answer_timeout_s``: how long a host's API may take to answer after it starts.
    """

    def __init__(
        self,
        name: str,
        hosts: Sequence[str] | int = 2,
        *,
        share_images: bool = False,
        answer_timeout_s: float = 60.0,
        say: Callable[[str], None] = progress,
    ) -> None:
        names = [f"h{i}" for i in range(1, hosts + 1)] if isinstance(hosts, int) else list(hosts)
        if not _CLUSTER_NAME.fullmatch(name):
            raise ValueError(f"cluster {name!r}: use 1-20 of a-z, 0-9 and '-'")
        for n in names:
            if not _HOST_NAME.fullmatch(n):
                raise ValueError(f"host {n!r}: use 1-12 of a-z and 0-9")
        if not names or len(set(names)) != len(names):
            raise ValueError(f"host names must be distinct and at least one: {names}")
        if len(names) > 200:
            raise ValueError("at most 200 hosts in a cluster")
        self.name = name
        self.host_names = names
        self.share_images = share_images
        self._shared_store = ""
        self.answer_timeout_s = answer_timeout_s
        self.say = say
        self.network_name = f"{NETWORK_PREFIX}{name}"
        self.socket_dir = SOCKET_ROOT / name
        self.hosts: dict[str, Host] = {}
        self.subnet: ipaddress.IPv4Network | None = None
        self.image = ""
        self._outer: docker.DockerClient | None = None
        self._partitioned: set[str] = set()

    # -- context manager -----------------------------------------------------------------------
    def __enter__(self) -> HostCluster:
        self._outer = require_outer_engine()
        try:
            self.image = ensure_host_image(self._outer, self.say)
            if self.share_images:
                self._shared_store = self._outer_store()
            self._remove_everything()  # what a killed earlier run of this cluster left
            self._create_network()
            started = time.monotonic()
            for index, host in enumerate(self.host_names):
                self._create_host(host, index)
            for host in self.host_names:
                self._wait_answers(host, started)
            self.say(
                f"cluster {self.name}: "
                + ", ".join(f"{h.name} at {h.address}" for h in self.hosts.values())
                + f" answer, {time.monotonic() - started:.1f} s after the first was created"
            )
        except BaseException:
            self._close_quietly()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:  # the test's own error is the one to see
            self._close_quietly()

    def _close_quietly(self) -> None:
        try:
            self.close()
        except Exception as err:
            self.say(f"cleanup of cluster {self.name} failed: {err}")

    def __getitem__(self, host: str) -> Host:
        return self.hosts[host]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())

    @property
    def outer(self) -> docker.DockerClient:
        if self._outer is None:
            raise HostError(f"cluster {self.name} is not started (use it in a with statement)")
        return self._outer

    # -- faults -------------------------------------------------------------------------------
    def kill(self, host: str) -> None:
        """Crash the host: SIGKILL to it and so to every process in it."""
        container = self._container(host)
        container.kill()
        container.reload()
        if container.status == "running":
            raise HostError(f"host {host} still runs after kill")
        self._wait_cleaned_up(container)

    @staticmethod
    def _wait_cleaned_up(container: Container, timeout_s: float = 15) -> None:
        """Podman cleans a killed container up in processes of its own (conmon, then `podman
        container cleanup`), after the engine already reports it exited. A start before they
        end can lose the new run's interface to them (CI: a host booted with its address, and
        had only lo by the end of the test). So wait until no process on this machine, where
        the outer engine runs, names the container."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(container.id in _cmdline(proc) for proc in Path("/proc").glob("[0-9]*")):
                return
            time.sleep(0.1)
        progress(f"{container.name}: the engine's cleanup of the killed run still runs")

    def start(self, host: str) -> float:
        """Boot a killed (or stopped) host; returns the seconds until its API answered. It keeps
        its address; a partitioned host stays partitioned (heal it to plug it back)."""
        container = self._container(host)
        started = time.monotonic()
        container.start()
        took = self._wait_answers(host, started)
        if host not in self._partitioned:
            self._ensure_attached(host)
        return took

    def partition(self, host: str) -> None:
        """Cut the host off the network (no peer reaches it, it reaches none)."""
        if host in self._partitioned:
            return
        self.outer.networks.get(self.network_name).disconnect(self._container(host))
        self._partitioned.add(host)

    def heal(self, host: str) -> None:
        """Plug a partitioned host back in, at its own address."""
        if host not in self._partitioned:
            return
        record = self.hosts[host]
        self.outer.networks.get(self.network_name).connect(
            self._container(host), ipv4_address=record.address, mac_address=record.mac_address
        )
        self._partitioned.discard(host)

    def _ensure_attached(self, host: str) -> None:
        """A rebooted machine comes back at its address. Podman 4.3 can boot a killed host
        without its interface (its cleanup of the killed run raced with the new start: seen
        once in a busy CI run, never on an idle machine); plug it back in and say so."""
        address = f"{self.hosts[host].address}/"
        if address in self.exec(host, ["ip", "-4", "-o", "addr", "show"]):
            return
        progress(f"host {host} booted without its interface (engine cleanup race); rebooting it")
        container = self._container(host)
        container.stop(timeout=5)
        container.start()
        self._wait_answers(host, time.monotonic())
        if address not in self.exec(host, ["ip", "-4", "-o", "addr", "show"]):
            raise HostError(f"host {host} has no interface at {address} after a second boot")

    def is_partitioned(self, host: str) -> bool:
        return host in self._partitioned

    # -- images -------------------------------------------------------------------------------
    def load_image(self, tag: str, hosts: Iterable[str] | None = None) -> dict[str, float]:
        """Copy an image of the outer engine into the hosts (all, or those named) that do not
        have that image id under that tag. Returns the seconds each copy took, by host (hosts
        that had it already are left out); the copies into several hosts run at once."""
        targets = list(self.host_names if hosts is None else hosts)
        try:
            image = self.outer.images.get(tag)
        except docker.errors.ImageNotFound as err:
            raise HostError(f"the outer engine has no image {tag} to load into hosts") from err
        needing = [h for h in targets if not self._has_image(h, tag, str(image.id))]
        if not needing:
            return {}
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="elizadb-testhosts-", dir="/var/tmp") as tmp:
            archive = Path(tmp) / "image.tar"
            with archive.open("wb") as out:
                for chunk in image.save(named=True):
                    out.write(chunk)
            saved = time.monotonic() - started
            self.say(
                f"saved {tag} ({archive.stat().st_size / 1e6:.0f} MB) in {saved:.1f} s; "
                f"loading into {', '.join(needing)}"
            )

            def load(host: str) -> float:
                with (
                    closing(self.hosts[host].client(timeout=900)) as client,
                    archive.open("rb") as data,
                ):
                    client.images.load(data)
                    if client.images.get(tag).id != image.id:
                        raise HostError(f"{tag} loaded into {host} with another image id")
                return time.monotonic() - started

            with ThreadPoolExecutor(max_workers=len(needing)) as pool:
                times = dict(zip(needing, pool.map(load, needing), strict=True))
        self.say(
            f"loaded {tag} into "
            + ", ".join(f"{h} ({t:.1f} s)" for h, t in times.items())
            + " (times from the start of the save)"
        )
        return times

    def _has_image(self, host: str, tag: str, image_id: str) -> bool:
        with closing(self.hosts[host].client()) as client:
            try:
                return bool(client.images.get(tag).id == image_id)
            except docker.errors.ImageNotFound:
                return False

    # -- inspection ---------------------------------------------------------------------------
    def log_tail(self, host: str, lines: int = 30) -> str:
        """The last lines of the host's own log (its engine's start and service)."""
        try:
            raw = self._container(host).logs(tail=lines)
        except docker.errors.APIError as err:
            return f"(no log: {err})"
        return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)

    def exec(self, host: str, command: Sequence[str]) -> str:
        """Run a command in the host itself (not in an inner container), e.g. ``ip addr``;
        returns its output, raises HostError when it fails."""
        code, output = self._container(host).exec_run(list(command))
        text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
        if code != 0:
            raise HostError(f"{' '.join(command)} on host {host} exited {code}: {text}")
        return text

    # -- internals ----------------------------------------------------------------------------
    def _container_name(self, host: str) -> str:
        return f"{NAME_PREFIX}{self.name}-{host}"

    def _volume_name(self, host: str) -> str:
        return f"{NAME_PREFIX}{self.name}-{host}-storage"

    def _container(self, host: str) -> Container:
        if host not in self.hosts:
            raise KeyError(f"no host {host!r} in cluster {self.name} ({self.host_names})")
        return self.outer.containers.get(self.hosts[host].container)

    def _create_network(self) -> None:
        """The cluster's /24 in 10.239.0.0/16: the one its name hashes to, or the next free."""
        subnets = list(SUPERNET.subnets(new_prefix=24))
        first = zlib.crc32(self.name.encode()) % len(subnets)
        errors: list[str] = []
        for step in range(len(subnets)):
            subnet = subnets[(first + step) % len(subnets)]
            if self._subnet_in_use(subnet):
                continue
            try:
                self.outer.networks.create(
                    self.network_name,
                    driver="bridge",
                    ipam=docker.types.IPAMConfig(
                        pool_configs=[
                            docker.types.IPAMPool(
                                subnet=str(subnet), gateway=str(subnet.network_address + 1)
                            )
                        ]
                    ),
                    labels={CLUSTER_LABEL: self.name},
                )
            except docker.errors.APIError as err:  # taken meanwhile by another run
                errors.append(f"{subnet}: {err}")
                if len(errors) > 3:
                    break
                continue
            self.subnet = subnet
            return
        raise HostError(f"no free /24 in {SUPERNET} for {self.network_name}: {errors}")

    def _subnet_in_use(self, subnet: ipaddress.IPv4Network) -> bool:
        for network in self.outer.networks.list():
            for pool in (network.attrs.get("IPAM") or {}).get("Config") or []:
                try:
                    if ipaddress.ip_network(pool.get("Subnet", ""), strict=False).overlaps(subnet):
                        return True
                except ValueError:
                    continue
        return False

    def _create_host(self, host: str, index: int) -> None:
        assert self.subnet is not None
        address = str(self.subnet.network_address + FIRST_HOST_OCTET + index)
        sockets = self.socket_dir / host
        for folder in (SOCKET_ROOT, self.socket_dir, sockets):
            folder.mkdir(mode=0o700, exist_ok=True)
            folder.chmod(0o700)
        record = Host(
            name=host,
            container=self._container_name(host),
            address=address,
            docker_host=f"unix://{sockets}/podman.sock",
        )
        self.hosts[host] = record
        labels = {CLUSTER_LABEL: self.name}
        self.outer.volumes.create(self._volume_name(host), labels=labels)
        version = self.outer.api.api_version
        self.outer.containers.run(
            self.image,
            name=record.container,
            hostname=host,
            detach=True,
            privileged=True,
            labels=labels,
            network=self.network_name,
            networking_config={
                self.network_name: EndpointConfig(
                    version, ipv4_address=address, mac_address=record.mac_address
                )
            },
            volumes={
                self._volume_name(host): {"bind": "/var/lib/containers", "mode": "rw"},
                str(sockets): {"bind": "/sock", "mode": "rw"},
            },
            # A fresh /run at every start, as a machine's: the inner engine then knows it has
            # rebooted and marks the containers that were running as exited.
            tmpfs={"/run": "rw", "/tmp": "rw"},
            mounts=[self._shared_mount()] if self._shared_store else [],
        )

    def _outer_store(self) -> str:
        """The outer engine's image store, which hosts that share images mount read-only."""
        root = str(self.outer.info().get("DockerRootDir") or "")
        if not root or not (Path(root) / "overlay-images").is_dir():
            raise HostError(
                f"share_images needs the outer engine's overlay store on this machine; "
                f"{outer_engine_url()} reports {root!r}"
            )
        return root

    def _shared_mount(self) -> Mount:
        mount = Mount("/var/lib/shared", self._shared_store, type="bind", read_only=True)
        # Not recursive: the outer containers' own overlay mounts under the store are no
        # business of a host (and a copy of them would outlive their unmount there).
        mount["BindOptions"] = {"NonRecursive": True}
        return mount

    def _wait_answers(self, host: str, started: float) -> float:
        """Wait until the host's API answers _ping; the seconds since `started`."""
        record = self.hosts[host]
        deadline = started + self.answer_timeout_s
        last = "no answer yet"
        while True:
            try:
                with closing(docker.DockerClient(base_url=record.docker_host, timeout=5)) as client:
                    client.ping()
                return time.monotonic() - started
            except Exception as err:  # no socket yet, refused, timed out
                last = str(err)
            container = self._container(host)
            if container.status not in ("created", "running"):
                raise HostError(
                    f"host {host} ({record.container}) is {container.status} instead of serving "
                    f"its API; its log ends:\n{self.log_tail(host)}"
                )
            if time.monotonic() > deadline:
                raise HostError(
                    f"host {host} did not answer at {record.docker_host} within "
                    f"{self.answer_timeout_s:.0f} s ({last}); its log ends:\n{self.log_tail(host)}"
                )
            time.sleep(0.1)

    def _remove_everything(self) -> None:
        outer = self.outer
        by_label: Filters = {"label": f"{CLUSTER_LABEL}={self.name}"}
        names = {self._container_name(h) for h in self.host_names}
        containers: dict[str, Container] = {
            str(c.name): c for c in outer.containers.list(all=True, filters=by_label)
        }
        for name in names - set(containers):
            try:
                containers[name] = outer.containers.get(name)
            except docker.errors.NotFound:
                pass
        for container in containers.values():
            try:
                container.kill()  # a crash, not a 10 s stop: nothing in it is kept
            except docker.errors.APIError:
                pass  # not running (or gone)
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        volumes = {v.name for v in outer.volumes.list(filters=by_label)}
        volumes |= {self._volume_name(h) for h in self.host_names}
        for volume in volumes:
            try:
                outer.volumes.get(volume).remove(force=True)
            except docker.errors.NotFound:
                pass
        for network in outer.networks.list(names=[self.network_name]):
            if network.name == self.network_name:
                network.remove()
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        try:
            SOCKET_ROOT.rmdir()  # when no other cluster uses it
        except OSError:
            pass

    def close(self) -> None:
        """Remove every host, its volume, the network and the socket folder."""
        if self._outer is None:
            return
        errors: list[str] = []
        try:
            self._remove_everything()
        except docker.errors.APIError as err:
            errors.append(str(err))
        left = cluster_leftovers(self._outer, self.name)
        self._outer.close()
        self._outer = None
        self.hosts.clear()
        self._partitioned.clear()
        if errors or left:
            raise HostError(f"cluster {self.name} was not removed entirely: {errors + left}")


def wait_until(
    check: Callable[[], bool], timeout_s: float, interval_s: float = 0.2
) -> float | None:
    """Poll `check` until it is true; the seconds it took, or None at the timeout."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            return None
        time.sleep(interval_s)


def cluster_leftovers(outer: docker.DockerClient, cluster: str) -> list[str]:
    """What of a cluster exists on the machine: its containers, volumes, network and socket
    folder (an empty list once it is closed)."""
    by_label: Filters = {"label": f"{CLUSTER_LABEL}={cluster}"}
    network_name = f"{NETWORK_PREFIX}{cluster}"
    found = [f"container {c.name}" for c in outer.containers.list(all=True, filters=by_label)]
    found += [f"volume {v.name}" for v in outer.volumes.list(filters=by_label)]
    found += [f"network {n.name}" for n in outer.networks.list() if n.name == network_name]
    if (SOCKET_ROOT / cluster).exists():
        found.append(f"folder {SOCKET_ROOT / cluster}")
    return found
