"""Which XMPP domains a server certificate speaks for: RFC 6125 as RFC 6120 §13.7.1.2 profiles it.

A certificate presents identifiers in its subjectAltName; a domain is a *reference identifier*
to compare with them. For a server-to-server stream the references of `example.com` are:

- DNS-ID `example.com` (a dNSName), where a wildcard stands for exactly one whole label and only
  as the left-most label (`*.example.com` matches `a.example.com`, never `example.com`,
  `a.b.example.com` or anything with a partial wildcard such as `f*.example.com`: RFC 6125
  §6.4.3, RFC 6120 §13.7.1.2.1);
- SRV-ID `_xmpp-server.example.com` (an id-on-dnsSRV otherName, RFC 4985), no wildcard;
- XmppAddr `example.com` (an id-on-xmppAddr otherName, RFC 6120 §13.7.1.4), no wildcard.

The Common Name is never used: RFC 6125 §6.4.4 allows it only when the certificate has no
subjectAltName identifiers of the supported kinds, and every certificate a current CA issues has
them. Chain validation is not here: the shell checks the chain (its trust store, expiry); this
module only says which names a certificate that chains to a trusted root may stand for.
"""

from __future__ import annotations

from dataclasses import dataclass

import idna
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

#: id-on-xmppAddr (RFC 6120 §13.7.1.4): a UTF8String with a JID.
ID_ON_XMPPADDR = ObjectIdentifier("1.3.6.1.5.5.7.8.5")
#: id-on-dnsSRV (RFC 4985): an IA5String "_service.domain".
ID_ON_DNSSRV = ObjectIdentifier("1.3.6.1.5.5.7.8.7")

_UTF8STRING, _IA5STRING = 0x0C, 0x16


@dataclass(frozen=True, slots=True)
class CertificateIdentities:
    """The presented identifiers of one certificate, normalized (lowercase, A-labels)."""

    dns_ids: tuple[str, ...] = ()
    srv_ids: tuple[str, ...] = ()
    xmpp_addrs: tuple[str, ...] = ()

    @classmethod
    def from_der(cls, der: bytes) -> CertificateIdentities:
        """The identifiers in a DER certificate's subjectAltName (none when it has none or cannot
        be read: a certificate we cannot read authenticates nobody)."""
        try:
            certificate = x509.load_der_x509_certificate(der)
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound):
            return cls()
        dns_ids = [_normalize(name) for name in names.get_values_for_type(x509.DNSName)]
        srv_ids: list[str] = []
        xmpp_addrs: list[str] = []
        for other in names.get_values_for_type(x509.OtherName):
            text = _der_string(other.value)
            if text is None:
                continue
            if other.type_id == ID_ON_XMPPADDR:
                xmpp_addrs.append(_normalize(text))
            elif other.type_id == ID_ON_DNSSRV:
                srv_ids.append(_normalize(text))
        return cls(
            tuple(filter(None, dns_ids)), tuple(filter(None, srv_ids)), tuple(filter(None, xmpp_addrs))
        )

    def speaks_for(self, domain: str) -> bool:
        """Whether the certificate may authenticate the XMPP server `domain`."""
        reference = _normalize(domain)
        if not reference:
            return False
        return (
            any(_dns_id_matches(pattern, reference) for pattern in self.dns_ids)
            or f"_xmpp-server.{reference}" in self.srv_ids
            or reference in self.xmpp_addrs
        )


def _dns_id_matches(pattern: str, reference: str) -> bool:
    if pattern == reference:
        return True
    first, _, rest = pattern.partition(".")
    if first != "*" or not rest or "*" in rest:
        return False  # a wildcard only as the whole left-most label (RFC 6125 §6.4.3 rule 1, 2)
    if rest.count(".") < 1:
        return False  # "*.com" would speak for a whole top-level domain
    label, dot, reference_rest = reference.partition(".")
    return bool(label and dot) and reference_rest == rest


def _normalize(name: str) -> str:
    """Lowercase A-labels without a final dot; "" for a name that is not a valid domain."""
    name = name.strip().rstrip(".").lower()
    if not name or name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError:
        return ""


def _der_string(value: bytes) -> str | None:
    """The text of a DER UTF8String or IA5String (the otherName values above), else None."""
    if len(value) < 2 or value[0] not in (_UTF8STRING, _IA5STRING):
        return None
    length, start = value[1], 2
    if length & 0x80:  # long form: the low bits say how many length bytes follow
        count = length & 0x7F
        if count == 0 or count > 4 or len(value) < 2 + count:
            return None
        length, start = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
    if start + length != len(value):
        return None
    try:
        return value[start:].decode("utf-8" if value[0] == _UTF8STRING else "ascii")
    except UnicodeDecodeError:
        return None
