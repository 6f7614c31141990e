"""What the emulator's throwaway certificates say: an authority that may sign server
certificates only, and a server certificate for the loopback names that may not sign."""

from __future__ import annotations

import ipaddress

import pytest

from esim_async.testing.tls import HOSTS, make_certificates

x509 = pytest.importorskip("cryptography.x509")
oid = pytest.importorskip("cryptography.x509.oid")


def test_the_authority_signs_and_the_server_certificate_serves_loopback() -> None:
    material = make_certificates()
    ca = x509.load_pem_x509_certificate(material.ca_pem)
    chain = x509.load_pem_x509_certificates(material.server_chain_pem)
    server = chain[0]
    assert [c.fingerprint(c.signature_hash_algorithm) for c in chain[1:]] == [
        ca.fingerprint(ca.signature_hash_algorithm)
    ]
    assert server.issuer == ca.subject == ca.issuer

    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and usage.digital_signature

    constraints = server.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = server.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    purposes = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(purposes) == [oid.ExtendedKeyUsageOID.SERVER_AUTH]
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(h) for h in HOSTS if h != "localhost"
    }

    # Each certificate names its own key, and the server's names the authority's.
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    for cert in (ca, server):
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ca_ski
    server_ski = server.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert server_ski.digest != ca_ski
    assert (server.not_valid_after_utc - server.not_valid_before_utc).days == 7
    assert b"PRIVATE KEY" in material.server_key_pem


def test_the_server_certificate_is_for_the_hosts_asked() -> None:
    server = x509.load_pem_x509_certificates(
        make_certificates(("emulator.test", "10.0.0.1")).server_chain_pem
    )[0]
    common = server.subject.get_attributes_for_oid(oid.NameOID.COMMON_NAME)
    assert [a.value for a in common] == ["emulator.test"]
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["emulator.test"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]
