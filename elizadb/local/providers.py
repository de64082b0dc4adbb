"""Local stand-ins for the random and tls providers: real passwords, keys and certificates,
made with `secrets` and `cryptography` and kept in the state file, returned to the Pulumi
program with the provider schema's (camelCase) output names.

A value is remade only when the inputs it depends on change (its fingerprint), as the providers
would replace the resource."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import secrets
import string
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from elizadb.local.state import StateFile

RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
RANDOM_UUID = "random:index/randomUuid:RandomUuid"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"
CERT_REQUEST = "tls:index/certRequest:CertRequest"
LOCALLY_SIGNED_CERT = "tls:index/locallySignedCert:LocallySignedCert"

TYPES = frozenset(
    {RANDOM_PASSWORD, RANDOM_UUID, PRIVATE_KEY, SELF_SIGNED_CERT, CERT_REQUEST, LOCALLY_SIGNED_CERT}
)


def fingerprint(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def provide(typ: str, name: str, inputs: dict[str, Any], state: StateFile) -> dict[str, Any]:
    key = f"{typ}::{name}"
    fp = fingerprint(inputs)
    kept = state.get(key, fp)
    if kept is not None:
        return {**inputs, **kept}
    made = _MAKERS[typ](inputs)
    state.put(key, fp, made)
    return {**inputs, **made}


def _password(inputs: dict[str, Any]) -> dict[str, Any]:
    alphabet = string.ascii_letters + string.digits
    if inputs.get("special", True):
        alphabet += inputs.get("overrideSpecial") or "!#$%&*()-_=+[]{}<>:?"
    length = int(inputs.get("length", 16))
    return {"result": "".join(secrets.choice(alphabet) for _ in range(length))}


def _uuid(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"result": str(uuid.uuid4())}


def _private_key(inputs: dict[str, Any]) -> dict[str, Any]:
    if inputs.get("algorithm") != "ECDSA" or inputs.get("ecdsaCurve", "P224") != "P256":
        raise ValueError("the local tls provider makes ECDSA P256 keys only")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {"privateKeyPem": pem, "publicKeyPem": public}


def _load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _subject(inputs: dict[str, Any]) -> x509.Name:
    subject = inputs.get("subject") or {}
    attrs = []
    if subject.get("commonName"):
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, subject["commonName"]))
    if subject.get("organization"):
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject["organization"]))
    return x509.Name(attrs)


def _sans(inputs: dict[str, Any]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in inputs.get("dnsNames") or []]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in inputs.get("ipAddresses") or []]
    return names


def _validity(inputs: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return start, start + dt.timedelta(hours=int(inputs["validityPeriodHours"]))


def _key_usage(uses: list[str]) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature="digital_signature" in uses,
        content_commitment=False,
        key_encipherment="key_encipherment" in uses,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign="cert_signing" in uses,
        crl_sign="crl_signing" in uses,
        encipher_only=False,
        decipher_only=False,
    )


def _self_signed(inputs: dict[str, Any]) -> dict[str, Any]:
    key = _load_key(inputs["privateKeyPem"])
    start, end = _validity(inputs)
    name = _subject(inputs)
    is_ca = bool(inputs.get("isCaCertificate"))
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(_key_usage(inputs.get("allowedUses") or []), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = builder.sign(key, hashes.SHA256())
    return {"certPem": cert.public_bytes(serialization.Encoding.PEM).decode()}


def _cert_request(inputs: dict[str, Any]) -> dict[str, Any]:
    key = _load_key(inputs["privateKeyPem"])
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject(inputs))
    sans = _sans(inputs)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return {"certRequestPem": csr.public_bytes(serialization.Encoding.PEM).decode()}


def _locally_signed(inputs: dict[str, Any]) -> dict[str, Any]:
    csr = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
    ca_key = _load_key(inputs["caPrivateKeyPem"])
    ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
    start, end = _validity(inputs)
    uses = inputs.get("allowedUses") or []
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(uses), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    purposes = [
        oid
        for use, oid in (
            ("server_auth", ExtendedKeyUsageOID.SERVER_AUTH),
            ("client_auth", ExtendedKeyUsageOID.CLIENT_AUTH),
        )
        if use in uses
    ]
    if purposes:
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(san.value, critical=False)
    except x509.ExtensionNotFound:
        pass
    cert = builder.sign(ca_key, hashes.SHA256())
    return {
        "certPem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "validityEndTime": end.isoformat(),
    }


_MAKERS = {
    RANDOM_PASSWORD: _password,
    RANDOM_UUID: _uuid,
    PRIVATE_KEY: _private_key,
    SELF_SIGNED_CERT: _self_signed,
    CERT_REQUEST: _cert_request,
    LOCALLY_SIGNED_CERT: _locally_signed,
}
