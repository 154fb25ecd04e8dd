"""Virtual hosts: the domains one server serves ([server] domain and [[hosts]]) and account keys.

Every account, its actor and its rows are named by one string, its *account key*: the localpart
alone for an account of the primary domain (``alice``, as before virtual hosts existed), and the
bare JID for an account of any other served domain (``alice@other.example``). A localpart never
contains ``@`` (RFC 7622 §3.3.1), so the two forms cannot collide, and the key serves unchanged as
the database's ``account.username``, the actors' registry and placement key and the mesh's
address. ARCHITECTURE.md ("Virtual hosts") argues the choice against a domain column.
"""

from __future__ import annotations

from dataclasses import dataclass

from imactor.config import Config
from imactor.xmpp.jid import JID, InvalidJID, prep_domainpart, prep_localpart


def account_key(localpart: str, domain: str, primary: str) -> str:
    """The key of the account `localpart`@`domain` (both prepared) on a server whose primary
    domain is `primary`."""
    return localpart if domain == primary else f"{localpart}@{domain}"


def split_account_key(key: str, primary: str) -> tuple[str, str]:
    """(localpart, domain) of an account key."""
    localpart, at, domain = key.partition("@")
    return (localpart, domain) if at else (key, primary)


def prep_account_key(raw: str) -> str:
    """A user-given ``name`` or ``name@domain`` prepared (PRECIS localpart, IDNA domain) into the
    form of an account key; whether the domain is served is for the caller to check.

    Raises:
        InvalidJID: Either part does not prepare.
    """
    localpart, at, domain = raw.partition("@")
    if not at:
        return prep_localpart(raw)
    return f"{prep_localpart(localpart)}@{prep_domainpart(domain)}"


@dataclass(frozen=True, slots=True)
class Hosts:
    """The served domains of one configuration, and the account keys of their JIDs."""

    primary: str
    domains: frozenset[str]

    @classmethod
    def of(cls, config: Config) -> Hosts:
        return cls(config.server.domain, frozenset(config.domains))

    def is_local(self, domain: str) -> bool:
        """Whether `domain` is one whose accounts live here."""
        return domain in self.domains

    def key(self, jid: JID) -> str | None:
        """The account key of `jid`'s account, or None when it names no account of ours."""
        if jid.localpart is None or jid.domainpart not in self.domains:
            return None
        return account_key(jid.localpart, jid.domainpart, self.primary)

    def jid(self, key: str) -> JID:
        """The bare JID of the account `key`."""
        return JID.make(*split_account_key(key, self.primary))

    def parse_account(self, raw: str) -> str:
        """The key of a user-given account, ``name`` (on the primary domain) or a bare JID.

        Raises:
            InvalidJID: It does not prepare, or its domain is not served here.
        """
        key = prep_account_key(raw)
        localpart, domain = split_account_key(key, self.primary)
        if domain not in self.domains:
            raise InvalidJID(f"{domain!r} is not a domain of this server ({', '.join(sorted(self.domains))})")
        return account_key(localpart, domain, self.primary)
