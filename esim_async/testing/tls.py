"""Throwaway TLS material for serving the emulator over https on loopback.

:func:`make_certificates` makes a private certificate authority and a server certificate it
signed for ``127.0.0.1``, ``::1`` and ``localhost``. Clients trust the authority's certificate
(:attr:`Certificates.ca_pem`): point ``SSL_CERT_FILE``, ``NODE_EXTRA_CA_CERTS``, ``curl
--cacert`` or an :class:`ssl.SSLContext` at a file holding it. Nothing is reused: each call makes
new keys, valid for a few days, whose private parts stay in memory or in a private directory.

The ``cryptography`` package makes them (``pip install "esim-async[tls]"``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .clock import utc_now

__all__ = ["Certificates", "TlsFiles", "make_certificates"]

#: Names the server certificate is valid for.
HOSTS = ("127.0.0.1", "::1", "localhost")
#: How long the certificates are valid.
VALIDITY = timedelta(days=7)


@dataclass(frozen=True)
class Certificates:
    """PEM bytes: the authority's certificate, and the server's certificate chain and key."""

    ca_pem: bytes
    server_chain_pem: bytes
    server_key_pem: bytes = field(repr=False)


def make_certificates(hosts: tuple[str, ...] = HOSTS) -> Certificates:
    """A fresh authority and a server certificate for ``hosts`` (IP addresses or names)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:
        raise ImportError(
            "serving the emulator over TLS needs the cryptography package: "
            "pip install 'esim-async[tls]'"
        ) from exc

    now = utc_now()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "esim-async emulator CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())

    def issued(
        subject: x509.Name, key: ec.EllipticCurvePrivateKey, *, ca: bool
    ) -> x509.CertificateBuilder:
        """A certificate of ``key`` for ``subject`` from the authority, valid from five minutes
        ago for :data:`VALIDITY`; ``ca``: it may sign certificates (none below it)."""
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(
                x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=ca,
                    crl_sign=ca,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )

    ca = issued(ca_name, ca_key, ca=True).sign(ca_key, hashes.SHA256())
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server = (
        issued(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]), key, ca=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem)
    return Certificates(
        ca_pem=ca_pem,
        server_chain_pem=server.public_bytes(pem) + ca_pem,
        server_key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


class TlsFiles:
    """Certificates on disk for one server: the authority's certificate where clients can read
    it, the server's key in a private directory removed by :meth:`cleanup`."""

    def __init__(self, certificates: Certificates, cert_out: str | os.PathLike[str] | None) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="esim-emulator-tls-"))
        chain, key = self._dir / "server-chain.pem", self._dir / "server-key.pem"
        chain.write_bytes(certificates.server_chain_pem)
        key.touch(mode=0o600)
        key.write_bytes(certificates.server_key_pem)
        self._chain, self._key = chain, key
        #: The certificate clients trust (the authority's), PEM.
        self.cert_path = Path(cert_out) if cert_out is not None else self._dir / "emulator-ca.pem"
        self.cert_path.parent.mkdir(parents=True, exist_ok=True)
        self.cert_path.write_bytes(certificates.ca_pem)

    def server_context(self) -> ssl.SSLContext:
        """The server side: TLS 1.2 or newer with the server's chain and key."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._chain, self._key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate, verification on."""
        return ssl.create_default_context(cafile=str(self.cert_path))

    def cleanup(self) -> None:
        """Remove the private directory (a certificate written elsewhere stays)."""
        shutil.rmtree(self._dir, ignore_errors=True)
