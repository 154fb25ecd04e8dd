"""RFC 6125 name matching for XMPP servers (RFC 6120 §13.7.1.2), on real DER certificates."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from imactor.xmpp.certnames import ID_ON_DNSSRV, ID_ON_XMPPADDR, CertificateIdentities


def _der_string(tag: int, text: str) -> bytes:
    data = text.encode()
    assert len(data) < 128
    return bytes([tag, len(data)]) + data


def make_der(*names: x509.GeneralName, common_name: str = "ignored.example") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )  # fmt: skip
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def xmpp_addr(domain: str) -> x509.OtherName:
    return x509.OtherName(ID_ON_XMPPADDR, _der_string(0x0C, domain))


def srv_id(name: str) -> x509.OtherName:
    return x509.OtherName(ID_ON_DNSSRV, _der_string(0x16, name))


@pytest.mark.parametrize(
    ("pattern", "domain", "expected"),
    [
        ("example.com", "example.com", True),
        ("Example.COM.", "example.com", True),
        ("example.com", "EXAMPLE.com", True),
        ("example.com", "other.com", False),
        ("*.example.com", "chat.example.com", True),
        ("*.example.com", "example.com", False),  # a wildcard is exactly one label
        ("*.example.com", "a.b.example.com", False),
        ("f*.example.com", "foo.example.com", False),  # no partial wildcards
        ("chat.*.com", "chat.example.com", False),  # only the left-most label
        ("*.com", "example.com", False),  # not a whole top-level domain
        ("*", "example", False),
    ],
)
def test_dns_id(pattern: str, domain: str, expected: bool) -> None:
    identities = CertificateIdentities.from_der(make_der(x509.DNSName(pattern)))
    assert identities.speaks_for(domain) is expected


def test_srv_id_for_xmpp_server_only() -> None:
    identities = CertificateIdentities.from_der(make_der(srv_id("_xmpp-server.example.com")))
    assert identities.speaks_for("example.com")
    assert not identities.speaks_for("other.com")
    client_only = CertificateIdentities.from_der(make_der(srv_id("_xmpp-client.example.com")))
    assert not client_only.speaks_for("example.com")


def test_xmpp_addr() -> None:
    identities = CertificateIdentities.from_der(make_der(xmpp_addr("example.com")))
    assert identities.xmpp_addrs == ("example.com",)
    assert identities.speaks_for("example.com")
    assert not CertificateIdentities.from_der(make_der(xmpp_addr("*.example.com"))).speaks_for(
        "a.example.com"
    )


def test_internationalized_names_compare_as_a_labels() -> None:
    identities = CertificateIdentities.from_der(make_der(x509.DNSName("xn--bcher-kva.example")))
    assert identities.speaks_for("bücher.example")


def test_the_common_name_is_not_an_identifier() -> None:
    # RFC 6125 §6.4.4: CN only without subjectAltName identifiers; we never use it.
    assert not CertificateIdentities.from_der(make_der(common_name="example.com")).speaks_for("example.com")


def test_unreadable_certificates_speak_for_nobody() -> None:
    assert CertificateIdentities.from_der(b"not a certificate") == CertificateIdentities()
    assert not CertificateIdentities().speaks_for("example.com")


def test_malformed_other_names_are_ignored() -> None:
    broken = x509.OtherName(ID_ON_XMPPADDR, b"\x02\x01\x05")  # an INTEGER where a string belongs
    identities = CertificateIdentities.from_der(make_der(broken, x509.DNSName("example.net")))
    assert identities.xmpp_addrs == ()
    assert identities.speaks_for("example.net")
