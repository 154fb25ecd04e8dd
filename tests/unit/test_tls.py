"""imactor.tls: the generated certificate, a real handshake, and the channel binding value."""

from __future__ import annotations

import hashlib
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from imactor import tls


@pytest.fixture
def cert_and_key(tmp_path: Path) -> tuple[Path, Path]:
    return tls.ensure_certificate(tmp_path / "tls" / "example.org.crt", tmp_path / "tls" / "example.org.key",
                                  "example.org")  # fmt: skip


def test_generated_certificate(cert_and_key: tuple[Path, Path]) -> None:
    cert_path, key_path = cert_and_key
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.org", "*.example.org", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert validity.days >= 3650
    assert cert.issuer == cert.subject
    # The pair loads into a server context, so the key matches the certificate.
    tls.make_server_context(cert_path, key_path)


def test_existing_files_are_kept(cert_and_key: tuple[Path, Path]) -> None:
    cert_path, key_path = cert_and_key
    before = cert_path.read_bytes(), key_path.read_bytes()
    assert tls.ensure_certificate(cert_path, key_path, "example.org") == cert_and_key
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before


def test_missing_key_regenerates_the_pair(cert_and_key: tuple[Path, Path]) -> None:
    cert_path, key_path = cert_and_key
    old_cert = cert_path.read_bytes()
    key_path.unlink()
    tls.ensure_certificate(cert_path, key_path, "example.org")
    assert cert_path.read_bytes() != old_cert
    tls.make_server_context(cert_path, key_path)  # the new pair matches


def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str
) -> tuple[str, bytes]:
    """Run a TLS handshake over a socketpair, the server in a thread.

    Returns:
        The ALPN protocol the client negotiated and the certificate (DER) it received.
    """
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(b, server_side=True) as s:
                s.sendall(b"hello")
        except (OSError, ssl.SSLError):
            pass  # the client side reports the failure
        finally:
            b.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(a, server_hostname=server_hostname) as client:
            assert client.recv(5) == b"hello"
            peer = client.getpeercert(binary_form=True)
            assert peer is not None
            return client.selected_alpn_protocol() or "", peer
    finally:
        a.close()
        thread.join(10)


def _client_context(cert_path: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert_path))
    # Python 3.13 turns strict checking on by default; test with it on everywhere.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


@pytest.mark.parametrize("hostname", ["example.org", "conference.example.org", "localhost"])
def test_real_handshake_with_a_client_that_trusts_the_certificate(
    cert_and_key: tuple[Path, Path], hostname: str
) -> None:
    cert_path, key_path = cert_and_key
    server_ctx = tls.make_server_context(cert_path, key_path)
    client_ctx = _client_context(cert_path)
    client_ctx.set_alpn_protocols(["xmpp-client"])
    alpn, peer_der = _handshake(server_ctx, client_ctx, hostname)
    assert alpn == "xmpp-client"
    # What the client received is what the binding hashes (RFC 5929, seen from the client).
    assert hashlib.sha256(peer_der).digest() == tls.server_end_point_binding(cert_path)


def test_no_alpn_offered_still_connects(cert_and_key: tuple[Path, Path]) -> None:
    # STARTTLS clients offer no ALPN; the same context must serve them.
    alpn, _ = _handshake(
        tls.make_server_context(*cert_and_key), _client_context(cert_and_key[0]), "localhost"
    )
    assert alpn == ""


def test_wrong_hostname_is_rejected(cert_and_key: tuple[Path, Path]) -> None:
    cert_path, key_path = cert_and_key
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls.make_server_context(cert_path, key_path), _client_context(cert_path), "other.org")


def test_min_version_1_3_refuses_a_tls_1_2_client(cert_and_key: tuple[Path, Path]) -> None:
    cert_path, key_path = cert_and_key
    client_ctx = _client_context(cert_path)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        _handshake(tls.make_server_context(cert_path, key_path, "1.3"), client_ctx, "example.org")


def test_server_context_settings(cert_and_key: tuple[Path, Path]) -> None:
    ctx = tls.make_server_context(*cert_and_key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    assert all(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name) for name in tls12)
    with pytest.raises(ValueError, match="min_version"):
        tls.make_server_context(*cert_and_key, min_version="1.1")


def _pem_to_der(pem: bytes) -> bytes:
    # By hand, not through the library under test: base64 body between the armour lines.
    return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))


@pytest.mark.parametrize(
    ("signature_hash", "binding_hash"),
    [(hashes.SHA256(), "sha256"), (hashes.SHA384(), "sha384"), (hashes.SHA512(), "sha512")],
)
def test_binding_uses_the_signature_hash(
    tmp_path: Path, signature_hash: hashes.SHA256 | hashes.SHA384 | hashes.SHA512, binding_hash: str
) -> None:
    cert_pem, _ = tls.generate_self_signed("example.org", signature_hash=signature_hash)
    (tmp_path / "c.pem").write_bytes(cert_pem)
    expected = hashlib.new(binding_hash, _pem_to_der(cert_pem)).digest()
    assert tls.server_end_point_binding(tmp_path / "c.pem") == expected


# A SHA-1-signed certificate (cryptography no longer signs with SHA-1), generated once with
# `openssl req -x509 -sha1 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=sha1.test`.
SHA1_CERT = b"""-----BEGIN CERTIFICATE-----
MIIBfTCCASSgAwIBAgIUVg8Dn5TT3RMY5DWEkaWT7iir7RcwCQYHKoZIzj0EATAU
MRIwEAYDVQQDDAlzaGExLnRlc3QwIBcNMjYxMTIzMTgxMTQwWhgPMjEyNjEwMzAx
ODExNDBaMBQxEjAQBgNVBAMMCXNoYTEudGVzdDBZMBMGByqGSM49AgEGCCqGSM49
AwEHA0IABLgXaWkBnwXgwmCXpONgCFS00/efCPc7KDFcQuot7Lg+28hWGTWW4bf1
QiasByxrm1/hX9GLlks6H+u+a2U0LXujUzBRMB0GA1UdDgQWBBR0pWRN8dH38O42
mEsFGpWHH7eFaTAfBgNVHSMEGDAWgBR0pWRN8dH38O42mEsFGpWHH7eFaTAPBgNV
HRMBAf8EBTADAQH/MAkGByqGSM49BAEDSAAwRQIgSNeQqBdxVwvJSJKMAZYmeL/z
uzlnPZYMil8YCSQebsoCIQCXsEkz7vDF6+9/U9+dot+nMPcW7O5HXrOdMYEY31Vh
0w==
-----END CERTIFICATE-----
"""


def test_binding_of_a_sha1_certificate_uses_sha256(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_bytes(SHA1_CERT)
    cert = x509.load_pem_x509_certificate(SHA1_CERT)
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha1"
    expected = hashlib.sha256(_pem_to_der(SHA1_CERT)).digest()
    assert tls.server_end_point_binding(tmp_path / "c.pem") == expected
