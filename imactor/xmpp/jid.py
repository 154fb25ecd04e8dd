"""XMPP addresses (JIDs) per RFC 7622: parsing, preparation (PRECIS, IDNA2008) and comparison.

A JID is ``[localpart "@"] domainpart ["/" resourcepart]``. Each part is prepared when the JID is made,
so two JIDs are equal exactly when their prepared parts are:

- localpart: the PRECIS UsernameCaseMapped profile (RFC 8265 §3.3: width mapping, lower case, NFC,
  IdentifierClass, bidi rule), then the RFC 7622 §3.3.1 exclusions ``" & ' / : < > @``;
- domainpart: a trailing dot stripped (§3.2); then an IP literal (``127.0.0.1``, ``[::1]``, written
  back in canonical form), or an internationalized domain name: RFC 5895 style mapping (lower case,
  width, NFC, ideographic full stops) and the IDNA2008 rules (RFC 5891) checked per label, with
  A-labels turned into U-labels (§3.2.1). Labels are NR-LDH or U-labels: no ``_``, no empty label,
  at most 63 octets each as A-labels and 253 for the whole name;
- resourcepart: the PRECIS OpaqueString profile (RFC 8265 §4.2);
- every part is 1 to 1023 octets of UTF-8 after preparation.

Preparation is costly (precis_i18n and idna are pure Python), and the same addresses come back on
every stanza, so parsing and part preparation are memoized in bounded LRU caches. Inputs longer than
`_CACHEABLE_LENGTH` characters are prepared every time rather than cached, so that a peer sending
maximal-length addresses cannot make the caches hold hundreds of megabytes.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Final, NoReturn, final

import idna
from precis_i18n import get_profile

_MAX_PART_OCTETS: Final = 1023
_CACHEABLE_LENGTH: Final = 192
_LOCALPART_EXCLUDED: Final = frozenset("\"&'/:<>@")

_USERNAME_CASE_MAPPED: Final = get_profile("UsernameCaseMapped")
_OPAQUE_STRING: Final = get_profile("OpaqueString")

# Fast paths that give the same result as the PRECIS profiles for printable ASCII: IdentifierClass
# allows U+0021..U+007E, FreeformClass also U+0020; neither profile maps ASCII except by case, and the
# bidi rule only concerns right-to-left text.
_ASCII_IDENTIFIER: Final = re.compile(r"[\x21-\x7e]+")
_ASCII_FREEFORM: Final = re.compile(r"[\x20-\x7e]+")
# Dot-separated LDH labels of at most 63 octets; with no "--" (checked apart) they are NR-LDH labels,
# which IDNA2008 would only lower-case.
_ASCII_HOSTNAME: Final = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)
_DOTTED_QUAD: Final = re.compile(r"[0-9]+(?:\.[0-9]+){3}")
_MAX_HOSTNAME_LENGTH: Final = 253


class InvalidJID(ValueError):
    """A string is not a valid JID or JID part (RFC 7622)."""


@final
class JID:
    """An XMPP address whose parts are prepared per RFC 7622. Immutable and hashable.

    ``JID(localpart, domainpart, resourcepart)`` prepares the parts, like `make`.

    Raises:
        InvalidJID: A part cannot be prepared.
    """

    __slots__ = ("_str", "domainpart", "localpart", "resourcepart")

    localpart: str | None
    domainpart: str
    resourcepart: str | None
    _str: str

    def __init__(self, localpart: str | None, domainpart: str, resourcepart: str | None = None) -> None:
        _init(
            self,
            None if localpart is None else prep_localpart(localpart),
            prep_domainpart(domainpart),
            None if resourcepart is None else prep_resource(resourcepart),
        )

    @classmethod
    def parse(cls, text: str) -> JID:
        """Parse and prepare a JID string (RFC 7622 §3.1).

        The resourcepart is everything after the first ``/`` (it may hold ``/`` and ``@``); in what
        comes before, the localpart is everything before the first ``@``.

        Raises:
            InvalidJID: The string is not a valid JID.
        """
        if len(text) <= _CACHEABLE_LENGTH:
            return _parse_cached(text)
        return _parse(text)

    @classmethod
    def make(cls, localpart: str | None, domainpart: str, resourcepart: str | None = None) -> JID:
        """Build a JID from its parts, preparing each one.

        Raises:
            InvalidJID: A part cannot be prepared.
        """
        return cls(localpart, domainpart, resourcepart)

    @property
    def bare(self) -> JID:
        """This JID without its resourcepart."""
        if self.resourcepart is None:
            return self
        return _new(self.localpart, self.domainpart, None)

    @property
    def is_bare(self) -> bool:
        """True when there is no resourcepart."""
        return self.resourcepart is None

    @property
    def is_domain(self) -> bool:
        """True when there is neither localpart nor resourcepart (a server or component address)."""
        return self.localpart is None and self.resourcepart is None

    def with_resource(self, resource: str) -> JID:
        """This JID with its resourcepart replaced by `resource`, prepared.

        Raises:
            InvalidJID: `resource` is not a valid resourcepart.
        """
        return _new(self.localpart, self.domainpart, prep_resource(resource))

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return f"JID({self._str!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JID):
            return NotImplemented
        # Parts cannot contain the separators in a way that makes two part triples print the same
        # (localparts and domainparts hold no "@" or "/"), so the canonical strings compare the parts.
        return self._str == other._str

    def __hash__(self) -> int:
        return hash(self._str)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"JID is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"JID is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_parse, (self._str,))

    def __copy__(self) -> JID:
        return self

    def __deepcopy__(self, memo: object) -> JID:
        return self


def prep_localpart(s: str) -> str:
    """Prepare a localpart (also an account name or SASL username): UsernameCaseMapped + RFC 7622 §3.3.1.

    Raises:
        InvalidJID: `s` is not a valid localpart.
    """
    if len(s) <= _CACHEABLE_LENGTH:
        return _prep_localpart_cached(s)
    return _prep_localpart(s)


def prep_domainpart(s: str) -> str:
    """Prepare a domainpart: IP literal, or IDNA2008 domain name in U-label form (RFC 7622 §3.2).

    Raises:
        InvalidJID: `s` is not a valid domainpart.
    """
    if len(s) <= _CACHEABLE_LENGTH:
        return _prep_domainpart_cached(s)
    return _prep_domainpart(s)


def prep_resource(s: str) -> str:
    """Prepare a resourcepart: PRECIS OpaqueString (RFC 7622 §3.4).

    Raises:
        InvalidJID: `s` is not a valid resourcepart.
    """
    if len(s) <= _CACHEABLE_LENGTH:
        return _prep_resource_cached(s)
    return _prep_resource(s)


def prep_password(s: str) -> str:
    """Prepare a password with the PRECIS OpaqueString profile (RFC 8265 §4.2), as SCRAM needs (RFC 7677).

    Never cached, and the password never appears in the error message.

    Raises:
        ValueError: The password is empty or holds code points the profile disallows (controls, …).
    """
    if _ASCII_FREEFORM.fullmatch(s) is not None:
        return s
    try:
        prepared: str = _OPAQUE_STRING.enforce(s)
    except UnicodeError:
        raise ValueError("the password is empty or contains disallowed characters") from None
    return prepared


def _init(jid: JID, localpart: str | None, domainpart: str, resourcepart: str | None) -> None:
    text = domainpart if localpart is None else f"{localpart}@{domainpart}"
    if resourcepart is not None:
        text = f"{text}/{resourcepart}"
    setter = object.__setattr__
    setter(jid, "localpart", localpart)
    setter(jid, "domainpart", domainpart)
    setter(jid, "resourcepart", resourcepart)
    setter(jid, "_str", text)


def _new(localpart: str | None, domainpart: str, resourcepart: str | None) -> JID:
    """A JID from parts that are already prepared."""
    jid = object.__new__(JID)
    _init(jid, localpart, domainpart, resourcepart)
    return jid


def _parse(text: str) -> JID:
    bare, slash, resource = text.partition("/")
    if slash and not resource:
        raise InvalidJID("empty resourcepart")
    localpart, at, domainpart = bare.partition("@")
    if not at:
        return _new(None, prep_domainpart(bare), prep_resource(resource) if slash else None)
    if not localpart:
        raise InvalidJID("empty localpart")
    return _new(
        prep_localpart(localpart),
        prep_domainpart(domainpart),
        prep_resource(resource) if slash else None,
    )


def _check_length(part: str, what: str) -> str:
    # Up to 255 code points fit in 1023 octets whatever they are, so most parts skip the encoding.
    if len(part) > _MAX_PART_OCTETS // 4 and len(part.encode()) > _MAX_PART_OCTETS:
        raise InvalidJID(f"{what} longer than {_MAX_PART_OCTETS} octets")
    return part


def _prep_localpart(s: str) -> str:
    if _ASCII_IDENTIFIER.fullmatch(s) is not None:
        prepared = s.lower()
    else:
        try:
            prepared = _USERNAME_CASE_MAPPED.enforce(s)
        except UnicodeError as exc:
            raise InvalidJID(f"invalid localpart: {_reason(exc)}") from None
    if not _LOCALPART_EXCLUDED.isdisjoint(prepared):
        raise InvalidJID("localpart contains one of \" & ' / : < > @")
    return _check_length(prepared, "localpart")


def _prep_resource(s: str) -> str:
    if _ASCII_FREEFORM.fullmatch(s) is not None:
        prepared = s
    else:
        try:
            prepared = _OPAQUE_STRING.enforce(s)
        except UnicodeError as exc:
            raise InvalidJID(f"invalid resourcepart: {_reason(exc)}") from None
    return _check_length(prepared, "resourcepart")


def _prep_domainpart(s: str) -> str:
    if s.endswith("."):
        s = s[:-1]  # RFC 7622 §3.2: a final label separator is stripped
    if not s:
        raise InvalidJID("empty domainpart")
    if s.startswith("["):
        return _prep_ipv6_literal(s)
    if _DOTTED_QUAD.fullmatch(s) is not None:
        try:
            return str(ipaddress.IPv4Address(s))
        except ValueError:
            raise InvalidJID("invalid IPv4 address") from None
    if len(s) <= _MAX_HOSTNAME_LENGTH and "--" not in s and _ASCII_HOSTNAME.fullmatch(s) is not None:
        return s.lower()
    try:
        mapped = idna.uts46_remap(s, std3_rules=True, transitional=False)
        if "" in mapped.split("."):
            raise InvalidJID("empty label in domainpart")
        prepared = idna.decode(idna.encode(mapped))
    except UnicodeError as exc:  # idna.IDNAError and its subclasses are UnicodeErrors
        raise InvalidJID(f"invalid domainpart: {exc}") from None
    if _DOTTED_QUAD.fullmatch(prepared) is not None:
        # The mapping made a dotted quad of it ("1.2.3.\u00b2", an ideographic full stop): judged
        # as an IPv4 address, as its prepared form will be when parsed again, or a JID's string
        # would not parse (RFC 7622 §3.2: a domainpart is an IP address or a domain name).
        return _prep_domainpart(prepared)
    return _check_length(prepared, "domainpart")


def _prep_ipv6_literal(s: str) -> str:
    if not s.endswith("]"):
        raise InvalidJID("IPv6 literal without closing bracket")
    try:
        address = ipaddress.IPv6Address(s[1:-1])
    except ValueError:
        raise InvalidJID("invalid IPv6 address") from None
    if address.scope_id is not None:
        raise InvalidJID("IPv6 zone identifiers are not allowed in a domainpart")
    return f"[{address.compressed}]"


def _reason(exc: UnicodeError) -> str:
    # precis_i18n's UnicodeEncodeError.reason is e.g. "DISALLOWED/spaces"; never echo the whole input.
    return str(getattr(exc, "reason", exc))


_parse_cached: Final = functools.lru_cache(maxsize=65536)(_parse)
_prep_localpart_cached: Final = functools.lru_cache(maxsize=16384)(_prep_localpart)
_prep_domainpart_cached: Final = functools.lru_cache(maxsize=4096)(_prep_domainpart)
_prep_resource_cached: Final = functools.lru_cache(maxsize=16384)(_prep_resource)
