"""A certificate authority per stack and one server certificate whose SANs cover every name and
address a client uses (container names, the pooler, localhost and the advertised host address).
Keys stay in Pulumi state as secrets."""

from __future__ import annotations

import ipaddress

import pulumi
import pulumi_tls as tls

from infra.components.common import child
from infra.settings import StackSettings
from infra.topology import Topology

SERVER_USES = ["digital_signature", "key_encipherment", "server_auth"]


class StackTls(pulumi.ComponentResource):
    ca_cert_pem: pulumi.Output[str]
    server_cert_pem: pulumi.Output[str]
    server_key_pem: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        settings: StackSettings,
        topo: Topology,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("elizadb:index:StackTls", name, None, opts)
        hours = settings.tls.cert_validity_days * 24
        ca_key = tls.PrivateKey(
            f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child(self)
        )
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            validity_period_hours=hours * 5,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=f"{topo.prefix} CA", organization="eliza-db"
            ),
            opts=child(self),
        )
        server_key = tls.PrivateKey(
            f"{name}-server-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child(self)
        )
        # On several hosts, peers reach every server at its host's address.
        hosts = topo.host_addresses.values() if topo.multi_host else ()
        addresses = sorted({"127.0.0.1", "::1", settings.advertise_host, *hosts})
        csr = tls.CertRequest(
            f"{name}-server-csr",
            private_key_pem=server_key.private_key_pem,
            dns_names=sorted(set(topo.server_names)),
            ip_addresses=[str(ipaddress.ip_address(a)) for a in addresses],
            subject=tls.CertRequestSubjectArgs(
                common_name=topo.primary.name, organization="eliza-db"
            ),
            opts=child(self),
        )
        server = tls.LocallySignedCert(
            f"{name}-server",
            cert_request_pem=csr.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem,
            validity_period_hours=hours,
            # Under Patroni every node is also a client with this certificate (of etcd, and of
            # its peers' REST APIs).
            allowed_uses=[*SERVER_USES, "client_auth"] if settings.patroni else SERVER_USES,
            opts=child(self),
        )
        self.ca_cert_pem = ca.cert_pem
        self.server_cert_pem = server.cert_pem
        self.server_key_pem = pulumi.Output.secret(server_key.private_key_pem)
        self.register_outputs({"caCert": self.ca_cert_pem})
