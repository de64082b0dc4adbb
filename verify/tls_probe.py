"""Read a server's certificate over the wire, the way a PostgreSQL client starts TLS.

A PostgreSQL (or PgBouncer) client first sends an 8-byte SSLRequest; the server answers one byte,
'S' to go on with a TLS handshake on the same socket or 'N' to refuse. After the handshake the
probe closes the socket without a startup packet: no session is opened.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


class TlsProbeError(Exception):
    """The endpoint did not complete a TLS handshake (refused TLS, bad chain, wrong name...)."""


@dataclass(frozen=True)
class Handshake:
    certificate: x509.Certificate
    tls_version: str


def handshake(
    host: str, port: int, *, timeout: float, cafile: str | None, server_hostname: str | None
) -> Handshake:
    """TLS with the endpoint. With `cafile`, the chain must lead to it and the certificate must
    be valid for `server_hostname` (a name or an IP address); without, nothing is verified and
    only the certificate is read."""
    if cafile:
        context = ssl.create_default_context(cafile=cafile)  # CERT_REQUIRED + check_hostname
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.sendall(SSL_REQUEST)
            answer = raw.recv(1)
            if answer != b"S":
                raise TlsProbeError(f"the server refused TLS (answered {answer!r} to SSLRequest)")
            with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
                der = tls.getpeercert(binary_form=True)
                version = tls.version() or "?"
    except ssl.SSLCertVerificationError as err:
        raise TlsProbeError(err.verify_message or str(err)) from None
    except (OSError, ssl.SSLError) as err:
        raise TlsProbeError(str(err) or type(err).__name__) from None
    if not der:
        raise TlsProbeError("the server sent no certificate")
    return Handshake(x509.load_der_x509_certificate(der), version)


def days_left(cert: x509.Certificate, now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    return (cert.not_valid_after_utc - now).total_seconds() / 86400
