"""The multi-host harness (tests/integration/hosts.py) does what multi-host tests rely on:
separate engines at separate addresses, services reached across hosts in both inner networking
modes, partitions that cut a host off and heal, crashes that keep a host's images and volumes,
and a cleanup that leaves nothing behind.

Cluster "hoststest" (hosts a and b) for the module; "hostsshare" and "hostsgone" of one host
each for the tests of shared images and of cleanup. The inner containers run the Debian base
image: perl listens, bash's /dev/tcp connects."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import closing

import docker
import pytest
from docker.models.containers import Container

from tests.integration.hosts import (
    SOCKET_ROOT,
    HostCluster,
    base_image,
    cluster_leftovers,
    require_outer_engine,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.multihost]

# Seconds: a probe's connect, and how long a partition or heal may take to show.
PROBE_TIMEOUT_S = 2
DETECT_WITHIN_S = 20.0


def note(message: str) -> None:
    sys.stderr.write(f"  [hosts] {message}\n")


@pytest.fixture(scope="module")
def cluster() -> Iterator[HostCluster]:
    with HostCluster("hoststest", ["a", "b"]) as hosts:
        hosts.load_image(base_image())
        yield hosts


@pytest.fixture(scope="module")
def clients(cluster: HostCluster) -> Iterator[dict[str, docker.DockerClient]]:
    made = {h.name: h.client() for h in cluster}
    yield made
    for client in made.values():
        client.close()


def listener(client: docker.DockerClient, name: str, greeting: str, **run: object) -> Container:
    """A TCP service on port 7000 of its network namespace that answers `greeting`."""
    script = (
        "use IO::Socket::INET; $| = 1;"
        " my $s = IO::Socket::INET->new(LocalPort => 7000, Listen => 16, ReuseAddr => 1)"
        ' or die "listen: $!";'
        ' print "listening\\n";'
        f' while (my $c = $s->accept) {{ print $c "{greeting}\\n"; close $c }}'
    )
    remove(client, name)
    return client.containers.run(
        base_image(), ["perl", "-e", script], name=name, detach=True, **run
    )


def output(client: docker.DockerClient, command: list[str], **run: object) -> str:
    """What `command` prints in a new container (run(remove=True) reads the container's log,
    which under load was once found empty right after the container exited; an exec's output
    comes over the API itself)."""
    container = client.containers.run(base_image(), ["sleep", "infinity"], detach=True, **run)
    try:
        code, out = container.exec_run(command)
        assert code == 0, f"{command}: exit {code}: {out!r}"
        return out.decode().strip()
    finally:
        container.kill()
        container.remove(force=True)


def remove(client: docker.DockerClient, *names: str) -> None:
    """Remove containers at once (a sleep as PID 1 ignores the SIGTERM of a plain stop)."""
    for name in names:
        try:
            container = client.containers.get(name)
        except docker.errors.NotFound:
            continue
        try:
            container.kill()
        except docker.errors.APIError:
            pass  # not running
        container.remove(force=True)


@pytest.fixture()
def prober(clients: dict[str, docker.DockerClient]) -> Iterator[Container]:
    """A container on host b to connect from (in b's own network namespace)."""
    client = clients["b"]
    remove(client, "prober")
    container = client.containers.run(
        base_image(), ["sleep", "infinity"], name="prober", network_mode="host", detach=True
    )
    yield container
    remove(client, "prober")


def answer(prober: Container, address: str, port: int) -> str:
    """What the service at address:port says to a connection from the prober ('' if none)."""
    code, output = prober.exec_run(
        [
            "timeout",
            str(PROBE_TIMEOUT_S),
            "bash",
            "-c",
            f"exec 3<>/dev/tcp/{address}/{port} && head -n 1 <&3",
        ]
    )
    return output.decode().strip() if code == 0 else ""


def test_hosts_are_separate_engines_at_separate_addresses(
    cluster: HostCluster, clients: dict[str, docker.DockerClient]
) -> None:
    a, b = cluster["a"], cluster["b"]
    assert a.address != b.address
    assert cluster.subnet is not None
    assert {a.address, b.address} <= {str(ip) for ip in cluster.subnet.hosts()}
    assert a.docker_host != b.docker_host
    assert a.docker_host.startswith(f"unix://{SOCKET_ROOT}/hoststest/a/")
    assert oct((SOCKET_ROOT / "hoststest" / "a").stat().st_mode & 0o777) == "0o700"
    # each host sees its own address on its interface
    assert f"{a.address}/24" in cluster.exec("a", ["ip", "-4", "-o", "addr", "show"])

    remove(clients["a"], "only-on-a")
    clients["a"].containers.run(base_image(), ["sleep", "60"], name="only-on-a", detach=True)
    try:
        assert "only-on-a" in [c.name for c in clients["a"].containers.list(all=True)]
        assert "only-on-a" not in [c.name for c in clients["b"].containers.list(all=True)]
    finally:
        remove(clients["a"], "only-on-a")


@pytest.mark.parametrize("mode", ["host-network", "published-port"])
def test_a_service_on_one_host_is_reached_from_another_until_partitioned(
    cluster: HostCluster,
    clients: dict[str, docker.DockerClient],
    prober: Container,
    mode: str,
) -> None:
    a = cluster["a"]
    client = clients["a"]
    if mode == "host-network":
        # in host a's network namespace: reached at a's address
        port = 7000
        listener(client, "service", "hello from a", network_mode="host")
    else:
        # on an inner bridge network, its port published on a's address
        port = 7001
        try:
            client.networks.get("inner")
        except docker.errors.NotFound:
            client.networks.create("inner", driver="bridge")
        listener(
            client,
            "service",
            "hello from a",
            network="inner",
            ports={"7000/tcp": (a.address, port)},
        )
    try:
        up = wait_until(lambda: answer(prober, a.address, port) == "hello from a", DETECT_WITHIN_S)
        assert up is not None, f"{mode}: b never reached the service at {a.address}:{port}"

        cluster.partition("a")
        try:
            cut = wait_until(lambda: answer(prober, a.address, port) == "", DETECT_WITHIN_S)
            assert cut is not None, (
                f"{mode}: b still reaches a {DETECT_WITHIN_S} s after the partition"
            )
            # b keeps failing to reach a for as long as the partition lasts
            assert answer(prober, a.address, port) == ""
            # the machine still drives a through its socket
            assert client.containers.get("service").status == "running"
            assert output(client, ["echo", "driven"]) == "driven"
            assert f"{a.address}/" not in cluster.exec("a", ["ip", "-4", "-o", "addr", "show"])
        finally:
            cluster.heal("a")
        back = wait_until(
            lambda: answer(prober, a.address, port) == "hello from a", DETECT_WITHIN_S
        )
        assert back is not None, f"{mode}: b does not reach a again {DETECT_WITHIN_S} s after heal"
        note(f"{mode}: unreachable {cut:.2f} s after partition, reachable {back:.2f} s after heal")
    finally:
        remove(client, "service")


def test_a_killed_host_keeps_its_images_and_volumes_and_boots_its_restart_policy_containers(
    cluster: HostCluster, clients: dict[str, docker.DockerClient]
) -> None:
    client = clients["a"]
    image_id = client.images.get(base_image()).id
    remove(client, "always", "plain")
    try:
        client.volumes.get("kept").remove(force=True)
    except docker.errors.NotFound:
        pass
    client.volumes.create("kept")
    kept = {"kept": {"bind": "/data", "mode": "rw"}}
    assert output(client, ["sh", "-c", "echo survived > /data/file; sync"], volumes=kept) == ""
    client.containers.run(
        base_image(),
        ["sleep", "infinity"],
        name="always",
        restart_policy={"Name": "always"},
        detach=True,
    )
    client.containers.run(base_image(), ["sleep", "infinity"], name="plain", detach=True)

    cluster.kill("a")
    with (
        pytest.raises(docker.errors.DockerException),
        closing(cluster["a"].client(timeout=3)) as dead,
    ):
        dead.ping()
    took = cluster.start("a")
    note(f"host a answered {took:.2f} s after start")

    with closing(cluster["a"].client()) as again:
        assert again.images.get(base_image()).id == image_id
        assert output(again, ["cat", "/data/file"], volumes=kept) == "survived"
        # a crash stops every container; at boot the engine starts those with a restart policy
        assert again.containers.get("always").status == "running"
        plain = again.containers.get("plain")
        assert plain.status == "exited"
        plain.start()  # and a container that was not restarted starts again when asked
        plain.reload()
        assert plain.status == "running"
        remove(again, "always", "plain")
        again.volumes.get("kept").remove(force=True)
    # same address after the restart
    assert f"{cluster['a'].address}/24" in cluster.exec("a", ["ip", "-4", "-o", "addr", "show"])


def test_closing_a_cluster_leaves_nothing_behind_even_after_a_failure() -> None:
    with closing(require_outer_engine()) as outer:
        with (
            pytest.raises(RuntimeError, match="the test failed"),
            HostCluster("hostsgone", ["x"]) as gone,
        ):
            with closing(gone["x"].client()) as client:
                client.volumes.create("inner-volume")
                client.networks.create("inner-net", driver="bridge")
            assert cluster_leftovers(outer, "hostsgone") != []
            raise RuntimeError("the test failed")
        assert cluster_leftovers(outer, "hostsgone") == []
        assert not [c for c in outer.containers.list(all=True) if "hostsgone" in str(c.name)]
        assert not [v for v in outer.volumes.list() if "hostsgone" in str(v.name)]
        assert not [n for n in outer.networks.list() if "hostsgone" in str(n.name)]
        assert not (SOCKET_ROOT / "hostsgone").exists()
        with open("/proc/self/mountinfo") as mounts:
            assert "hostsgone" not in mounts.read()


def test_a_host_that_shares_the_machines_images_runs_them_without_a_copy() -> None:
    with (
        closing(require_outer_engine()) as outer,
        HostCluster("hostsshare", ["x"], share_images=True) as shared,
    ):
        image = outer.images.get(base_image())
        assert shared.load_image(base_image()) == {}  # nothing to copy: x sees it already
        with closing(shared["x"].client()) as client:
            assert client.images.get(base_image()).id == image.id
            assert output(client, ["echo", "shared"]) == "shared"
            # the host's own store is still writable: an image made in it stays in it
            # Created and waited for: a blocking run follows the log, which Podman can leave
            # hanging when the container exits at once.
            committed = client.containers.run(base_image(), ["true"], name="committed", detach=True)
            assert committed.wait(timeout=60)["StatusCode"] == 0
            committed.commit("localhost/only-in-x", "1")
            assert client.images.get("localhost/only-in-x:1")
        with pytest.raises(docker.errors.ImageNotFound):
            outer.images.get("localhost/only-in-x:1")
    # the machine's image is untouched by the host's use and removal
    assert outer.images.get(base_image()).id == image.id
