"""TLS: the self-signed development certificate, the server `ssl.SSLContext`, channel binding.

A fresh install has no certificate, so `ensure_certificate` generates a self-signed one for the
domain on first start (clients must be told to trust it: this is for development and tests). The
server context is the same for STARTTLS (RFC 6120 §5) and direct TLS (XEP-0368); its ALPN
protocol only matters to direct-TLS clients, which offer "xmpp-client".
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: XEP-0368 §4: the ALPN protocol name of client-to-server XMPP over direct TLS.
ALPN_XMPP_CLIENT = "xmpp-client"
#: Lifetime of a generated certificate: long enough never to expire under a developer.
VALIDITY = datetime.timedelta(days=3650)
# TLS 1.2 suites: forward secrecy and AEAD only (TLS 1.3 suites are all fine and not set here).
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# An ECDSA server key only ever signs handshakes.
_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def ensure_certificate(cert_path: Path, key_path: Path, domain: str) -> tuple[Path, Path]:
    """Return the certificate and key paths, generating a self-signed pair if either is missing.

    The certificate (EC P-256, 10 years) names `domain`, ``*.domain``, ``localhost`` and
    ``127.0.0.1`` in its subjectAltName, so the same file serves the domain, its components and
    local tests. The key is written with mode 0600; both files are written atomically, so a crash
    never leaves half a key behind.

    Args:
        cert_path: Where the PEM certificate is, or is to be written.
        key_path: Where the PEM private key is, or is to be written.
        domain: The XMPP domain the certificate is for.

    Returns:
        ``(cert_path, key_path)``.
    """
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    cert_pem, key_pem = generate_self_signed(domain)
    write_atomically(key_path, key_pem, mode=0o600)
    write_atomically(cert_path, cert_pem, mode=0o644)
    return cert_path, key_path


def generate_self_signed(
    domain: str, *, signature_hash: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None
) -> tuple[bytes, bytes]:
    """A self-signed certificate and its private key, both PEM.

    Args:
        domain: The subject's common name and first subjectAltName.
        signature_hash: The signature's hash; SHA-256 by default (other values are for tests of
            channel binding).

    Returns:
        ``(certificate_pem, private_key_pem)``.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    dns_names = dict.fromkeys([domain, f"*.{domain}", "localhost"])  # ordered, de-duplicated
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    now = datetime.datetime.now(datetime.UTC)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # A little in the past, so a client whose clock lags ours still accepts it.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        # Strict X.509 verification (Python 3.13's default context) wants an AKI even here.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, signature_hash or hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def make_server_context(cert: Path, key: Path, min_version: str = "1.2") -> ssl.SSLContext:
    """The server side TLS context for both STARTTLS and direct TLS.

    Args:
        cert: PEM certificate chain.
        key: PEM private key.
        min_version: Oldest TLS version accepted, "1.2" or "1.3".

    Raises:
        ValueError: `min_version` is not "1.2" or "1.3".
        OSError, ssl.SSLError: The certificate or key cannot be read or do not match.
    """
    if min_version not in _VERSIONS:
        raise ValueError(f"unsupported TLS min_version {min_version!r}; expected '1.2' or '1.3'")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[min_version]
    context.set_ciphers(_TLS12_CIPHERS)
    # CRIME (compression), renegotiation attacks, and a fresh ECDH key per handshake.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_ECDH_USE
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    # No session tickets (Prosody's default too): OpenSSL's ticket key lives as long as the
    # process and never rotates, so one stolen key would open every recorded session that got
    # a ticket, which forward secrecy is meant to prevent. Resumption would rarely work anyway:
    # each worker has its own key and the kernel spreads connections over the workers. Each
    # ticket also cost a handshake about 4 % more CPU on both sides (docs/benchmarks.md).
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols([ALPN_XMPP_CLIENT])
    return context


@dataclass(frozen=True, slots=True)
class HostContexts:
    """The server contexts of every served domain, and each one's `tls-server-end-point`."""

    #: Handed to every TLS listener: the primary domain's, switching by SNI (`make_host_contexts`).
    default: ssl.SSLContext
    #: Context → the channel binding of its certificate (SCRAM-*-PLUS must see the one it got).
    bindings: Mapping[ssl.SSLContext, bytes]


def make_host_contexts(
    certificates: Mapping[str, tuple[Path, Path]], primary: str, min_version: str = "1.2"
) -> HostContexts:
    """One server context per domain (virtual hosts), the primary's chosen unless the client's
    Server Name Indication (RFC 6066 §3) names another served domain: then that domain's.

    A client that sends no SNI, or a name we do not serve, gets the primary domain's certificate;
    the XMPP stream header that follows may still name another host, whose clients should send
    SNI (every current client library does).

    Args:
        certificates: Domain → (certificate, key), the primary domain's among them.
        primary: The domain whose context is the default.
        min_version: As `make_server_context`.

    Raises:
        As `make_server_context`, and ValueError from `server_end_point_binding`.
    """
    contexts = {
        domain: make_server_context(cert, key, min_version=min_version)
        for domain, (cert, key) in certificates.items()
    }
    default = contexts[primary]
    bindings = {contexts[domain]: server_end_point_binding(pair[0]) for domain, pair in certificates.items()}
    if len(contexts) > 1:

        def by_name(connection: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
            chosen = contexts.get((server_name or "").lower().rstrip("."))
            if chosen is not None and chosen is not default:
                connection.context = chosen

        default.sni_callback = by_name
    return HostContexts(default, bindings)


def server_end_point_binding(cert_path: Path) -> bytes:
    """The RFC 5929 §4 ``tls-server-end-point`` channel binding of our certificate.

    It is the hash of the DER certificate, with the hash function of the certificate's signature,
    except that MD5 and SHA-1 are replaced by SHA-256 (RFC 5929 §4.1). SCRAM-*-PLUS with this
    binding type compares it with what the client computed from the certificate it received.

    Args:
        cert_path: The PEM certificate the server presents (the first one in a chain file).

    Raises:
        ValueError: The signature uses no single hash (e.g. Ed25519), for which RFC 5929 leaves
            the binding undefined; do not offer ``tls-server-end-point`` then.
    """
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None:
        raise ValueError("tls-server-end-point is undefined for a signature without a hash")
    name = algorithm.name  # "sha256", "sha384", "sha1", "md5"…
    if name in ("md5", "sha1"):
        name = "sha256"
    return hashlib.new(name, certificate.public_bytes(serialization.Encoding.DER)).digest()


def write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Write through a temporary file created with `mode`, then rename it into place (the TLS
    key, and the exports of `imactor.migration`: never readable by others, never half written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # O_EXCL + mode at creation: the key is never readable by others, not even for an instant.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
