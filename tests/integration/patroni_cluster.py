"""A Patroni cluster over a 3-member etcd in containers of the stack image, configured only by
infra/render/patroni.py and infra/render/etcd.py, for tests/integration/test_patroni_cluster.py.

Everything is named `elizadb-pt-*`; host ports are fixed in 50500-50999 on 127.0.0.1. The CA
and the one node certificate (serverAuth + clientAuth, SANs: every container name, localhost,
127.0.0.1) are made here with `cryptography`, as the stack's own are (ECDSA P-256), plus an
admin client certificate for the test's own REST calls.
"""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import os
import secrets
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import psycopg
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from docker.models.containers import Container

from infra.components.image import IMAGE_DIR, image_fingerprint
from infra.render import paths
from infra.render.etcd import ETCD_CONF, ETCD_PRIVATE_KEY, EtcdCluster, EtcdMember, render_etcd_conf
from infra.render.patroni import (
    API_PORT,
    PATRONI_YML,
    PATRONI_YML_UPLOAD,
    PatroniCluster,
    PatroniMember,
    PatroniSecrets,
    render_patroni_yml,
)

PREFIX = "elizadb-pt-"
NETWORK = f"{PREFIX}net"
PG_NODES = tuple(f"{PREFIX}pg-{i}" for i in (1, 2, 3))
ETCD_NODES = tuple(f"{PREFIX}etcd-{i}" for i in (1, 2, 3))
PG_HOST_PORT = {name: 50510 + i for i, name in enumerate(PG_NODES)}
API_HOST_PORT = {name: 50520 + i for i, name in enumerate(PG_NODES)}
REPOSITORY = "localhost/elizadb-postgres"  # the kit's own tag, so a deploy reuses the build

T = TypeVar("T")


class ClusterTimeout(AssertionError):
    """A bounded wait ran out; the message carries the last observation and the logs."""


# ---- image -------------------------------------------------------------------------------


def ensure_image(client: docker.DockerClient) -> tuple[str, float | None]:
    """The stack image under the tag the kit gives it (infra/components/image.py), built when
    absent. Returns the tag and the build time in seconds (None when it was already there)."""
    base = os.environ.get("ELIZADB_BASE_IMAGE", "debian:trixie-slim")
    tag = f"{REPOSITORY}:{image_fingerprint(base)}"
    with suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag, None
    started = time.monotonic()
    tail: list[str] = []
    for chunk in client.api.build(
        path=str(IMAGE_DIR),
        dockerfile="Containerfile",
        buildargs={"BASE_IMAGE": base},
        tag=tag,
        rm=True,
        decode=True,
    ):
        if "error" in chunk:
            raise RuntimeError(f"image build failed: {chunk['error']}\n" + "".join(tail))
        line = chunk.get("stream", "")
        if line.strip():
            tail = [*tail, line][-20:]
    client.images.get(tag)
    return tag, time.monotonic() - started


# ---- certificates ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    node_cert_pem: bytes
    node_key_pem: bytes
    admin_cert_pem: bytes
    admin_key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    common_name: str,
    usages: list[x509.ObjectIdentifier],
    sans: list[x509.GeneralName],
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def make_pki() -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{PREFIX}ca")])
    now = dt.datetime.now(dt.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in (*PG_NODES, *ETCD_NODES)]
    sans += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    node_cert, node_key = _issue(ca_key, ca_name, f"{PREFIX}node", both, sans)
    admin_cert, admin_key = _issue(
        ca_key, ca_name, f"{PREFIX}admin", [ExtendedKeyUsageOID.CLIENT_AUTH], []
    )
    return Pki(
        ca.public_bytes(serialization.Encoding.PEM), node_cert, node_key, admin_cert, admin_key
    )


# ---- the cluster -------------------------------------------------------------------------


def _tar(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """path -> (content, mode), with their parent directories, owned by root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        dirs: set[str] = set()
        for path in sorted(files):
            content, mode = files[path]
            parent = Path(path.lstrip("/")).parent
            for ancestor in reversed([parent, *parent.parents]):
                if str(ancestor) in (".", "") or str(ancestor) in dirs:
                    continue
                dirs.add(str(ancestor))
                info = tarfile.TarInfo(str(ancestor))
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(content), mode, int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def etcd_inputs() -> EtcdCluster:
    return EtcdCluster(
        members=tuple(EtcdMember(name=n, host=n) for n in ETCD_NODES), token=f"{PREFIX}test"
    )


def patroni_inputs(synchronous: bool = True) -> PatroniCluster:
    return PatroniCluster(
        scope=f"{PREFIX}cluster",
        members=tuple(PatroniMember(name=n, host=n) for n in PG_NODES),
        etcd=etcd_inputs(),
        synchronous_mode=synchronous,
        parameters={
            "max_connections": "100",
            "max_slot_wal_keep_size": "1GB",
            "shared_buffers": "128MB",
            "work_mem": "4MB",
        },
    )


@dataclass
class Cluster:
    client: docker.DockerClient
    image: str
    pki: Pki
    pki_dir: Path  # ca.crt, admin.crt, admin.key (0600) for the test's own clients
    secrets: PatroniSecrets
    patroni: PatroniCluster

    # ---- lifecycle --------------------------------------------------------------------

    @classmethod
    def create(cls, client: docker.DockerClient, image: str, pki_dir: Path) -> Cluster:
        pki = make_pki()
        for name, content in (
            ("ca.crt", pki.ca_pem),
            ("admin.crt", pki.admin_cert_pem),
            ("admin.key", pki.admin_key_pem),
        ):
            (pki_dir / name).write_bytes(content)
        (pki_dir / "admin.key").chmod(0o600)
        cluster_secrets = PatroniSecrets(
            superuser=secrets.token_urlsafe(18),
            replication=secrets.token_urlsafe(18),
            rewind=secrets.token_urlsafe(18),
            api=secrets.token_urlsafe(18),
        )
        return cls(client, image, pki, pki_dir, cluster_secrets, patroni_inputs())

    def remove_all(self) -> None:
        """Containers, volumes and the network this module made; safe to call at any time."""
        for name in (*PG_NODES, *ETCD_NODES):
            with suppress(docker.errors.NotFound):
                self.client.containers.get(name).remove(force=True, v=True)
        for name in (*PG_NODES, *ETCD_NODES):
            with suppress(docker.errors.NotFound):
                self.client.volumes.get(f"{name}-data").remove(force=True)
        for network in self.client.networks.list(names=[NETWORK]):
            if network.name == NETWORK:
                network.remove()

    def _tls_files(self) -> dict[str, tuple[bytes, int]]:
        return {
            paths.CA_CERT: (self.pki.ca_pem, 0o644),
            paths.SERVER_CERT: (self.pki.node_cert_pem, 0o644),
            paths.SERVER_KEY_UPLOAD: (self.pki.node_key_pem, 0o600),
        }

    def _run(
        self,
        name: str,
        mode: str,
        files: dict[str, tuple[bytes, int]],
        mount: str,
        ports: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        container = self.client.containers.create(
            self.image,
            command=[mode],
            name=name,
            hostname=name,
            network=NETWORK,
            ports=ports or {},
            volumes={f"{name}-data": {"bind": mount, "mode": "rw"}},
            shm_size="256m",
            labels={"elizadb.test": "patroni-cluster"},
        )
        if not container.put_archive("/", _tar(files)):
            raise RuntimeError(f"could not copy the rendered files into {name}")
        container.start()

    def start(self) -> None:
        self.remove_all()
        self.client.networks.create(NETWORK, driver="bridge", labels={"elizadb.test": "pt"})
        etcd = etcd_inputs()
        for name in ETCD_NODES:
            files = self._tls_files()
            files[ETCD_CONF] = (render_etcd_conf(etcd, name).encode(), 0o644)
            self._run(name, "etcd", files, "/var/lib/etcd")
        for name in PG_NODES:
            files = self._tls_files()
            text = render_patroni_yml(self.patroni, name, self.secrets)
            files[PATRONI_YML_UPLOAD] = (text.encode(), 0o600)
            ports = {
                "5432/tcp": ("127.0.0.1", PG_HOST_PORT[name]),
                f"{API_PORT}/tcp": ("127.0.0.1", API_HOST_PORT[name]),
            }
            self._run(name, "patroni", files, "/var/lib/postgresql/data", ports)

    def container(self, name: str) -> Container:
        return self.client.containers.get(name)

    def logs(self, name: str, tail: int = 40) -> str:
        try:
            return self.container(name).logs(tail=tail).decode("utf-8", "replace")
        except docker.errors.NotFound:
            return "(no such container)"

    def all_logs(self, tail: int = 25) -> str:
        """What a failed wait shows: each container's last lines, each node's own view of
        itself (/patroni) and the cluster's keys in etcd."""
        parts = [f"--- {name} ---\n{self.logs(name, tail)}" for name in (*PG_NODES, *ETCD_NODES)]
        for name in PG_NODES:
            try:
                parts.append(f"--- {name} /patroni ---\n{self.api_get(name, '/patroni').text}")
            except requests.RequestException as exc:
                parts.append(f"--- {name} /patroni ---\n{exc}")
        for name in ETCD_NODES:
            with suppress(docker.errors.APIError):
                code, out = self.etcdctl(name, "get", "--prefix", self.patroni.namespace)
                if code == 0:
                    parts.append(f"--- keys in etcd (via {name}) ---\n{out}")
                    break
        return "\n".join(parts)

    def etcdctl(self, member: str, *args: str, cert: bool = True) -> tuple[int, str]:
        """etcdctl inside an etcd member's container, against that member, over TLS."""
        cmd = [
            "etcdctl",
            f"--endpoints=https://{member}:2379",
            f"--cacert={paths.CA_CERT}",
            "--dial-timeout=3s",
            "--command-timeout=5s",
        ]
        if cert:
            cmd += [f"--cert={paths.SERVER_CERT}", f"--key={ETCD_PRIVATE_KEY}"]
        return self.exec(member, [*cmd, *args])

    def exec(self, name: str, cmd: list[str], user: str = "root") -> tuple[int, str]:
        code, out = self.container(name).exec_run(cmd, user=user)
        return int(code), (out or b"").decode("utf-8", "replace")

    def patronictl(self, name: str, *args: str) -> tuple[int, str]:
        return self.exec(name, ["patronictl", "-c", PATRONI_YML, *args], user="postgres")

    # ---- REST API ---------------------------------------------------------------------

    def api_url(self, name: str, path: str) -> str:
        return f"https://localhost:{API_HOST_PORT[name]}{path}"

    def api_get(self, name: str, path: str) -> requests.Response:
        return requests.get(self.api_url(name, path), verify=self.pki_dir / "ca.crt", timeout=5)

    def api_unsafe(
        self,
        method: str,
        name: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        cert: bool = True,
        password: bool = True,
    ) -> requests.Response:
        """A call that changes something: with the admin client certificate and the REST API
        password unless told otherwise."""
        return requests.request(
            method,
            self.api_url(name, path),
            json=body,
            verify=self.pki_dir / "ca.crt",
            cert=(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
            if cert
            else None,
            auth=(self.patroni.api_user, self.secrets.api) if password else None,
            timeout=30,
        )

    def members(self) -> list[dict[str, Any]]:
        """/cluster as seen by the first node that answers."""
        errors: list[str] = []
        for name in PG_NODES:
            try:
                reply = self.api_get(name, "/cluster")
                reply.raise_for_status()
                found: list[dict[str, Any]] = reply.json()["members"]
                return found
            except (requests.RequestException, ValueError, KeyError) as exc:
                errors.append(f"{name}: {exc}")
        raise ConnectionError("; ".join(errors))

    def leader(self) -> str | None:
        with suppress(ConnectionError):
            for member in self.members():
                if member["role"] == "leader" and member["state"] == "running":
                    return str(member["name"])
        return None

    # ---- PostgreSQL -------------------------------------------------------------------

    def conninfo(self, names: tuple[str, ...] = PG_NODES, **extra: Any) -> str:
        return psycopg.conninfo.make_conninfo(
            host=",".join("localhost" for _ in names),
            hostaddr=",".join("127.0.0.1" for _ in names),
            port=",".join(str(PG_HOST_PORT[n]) for n in names),
            dbname="postgres",
            user="postgres",
            password=self.secrets.superuser,
            sslmode="verify-full",
            sslrootcert=str(self.pki_dir / "ca.crt"),
            connect_timeout=3,
            **extra,
        )

    def connect(self, name: str, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo((name,)), autocommit=True, **kwargs)

    def query(self, name: str, sql: str) -> list[tuple[Any, ...]]:
        with self.connect(name) as conn:
            return conn.execute(sql).fetchall()  # type: ignore[arg-type]  # test-owned text

    # ---- waiting ----------------------------------------------------------------------

    def wait(self, what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
        """Poll `probe` until it returns something other than None (or False)."""
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            try:
                value = probe()
                if value is not None and value is not False:
                    return value
                last = value
            except Exception as exc:  # every failure is the next try's reason
                last = exc
            time.sleep(0.5)
        raise ClusterTimeout(
            f"{what}: not within {timeout_s:.0f} s; last observation: {last!r}\n{self.all_logs()}"
        )


def iter_nodes_but(name: str) -> Iterator[str]:
    return (n for n in PG_NODES if n != name)
