"""XEP-0227 documents written in canonical order (the reading half and the values: `pie`).

Users by name, verifiers by hash, roster items, pending requests and private elements by JID or
key, offline and archived messages oldest first, PEP nodes by name: so exporting what was
imported gives the same bytes again. Structure is indented one element per line; the stored user
data (a vCard, a message, a private element) is written as it is, without added whitespace.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence

from lxml import etree

from imactor.xmpp.namespaces import (
    NS_CLIENT,
    NS_DATA_FORMS,
    NS_DELAY,
    NS_FORWARD,
    NS_PRIVATE,
    NS_PUBSUB,
    NS_PUBSUB_OWNER,
    NS_ROSTER,
)
from imactor.xmpp.pie import (
    NS_MAM2,
    NS_PIE,
    NS_PIE_MAM,
    NS_PIE_SCRAM,
    Account,
    Archived,
    Element,
    PepNode,
    format_stamp,
)
from imactor.xmpp.roster import RosterItem, item_element
from imactor.xmpp.stanza import default_ns, parse


def encode(domain: str, accounts: Iterable[Account], *, scram_base64_twice: bool = False) -> bytes:
    """A XEP-0227 document of `accounts` on host `domain`, in canonical order.

    `scram_base64_twice`: COMPAT ejabberd (23.01 at least), whose import expects the base64 of
    the base64 text it keeps, as its export writes (`_scram` reads both)."""
    return encode_hosts({domain: accounts}, scram_base64_twice=scram_base64_twice)


def encode_hosts(hosts: Mapping[str, Iterable[Account]], *, scram_base64_twice: bool = False) -> bytes:
    """`encode` with a <host/> per domain of `hosts`, in the mapping's order."""
    root = etree.Element(f"{{{NS_PIE}}}server-data", nsmap=default_ns(NS_PIE))
    for domain, accounts in hosts.items():
        host = etree.SubElement(root, f"{{{NS_PIE}}}host", jid=domain)
        for account in sorted(accounts, key=lambda a: a.name):
            host.append(encode_user(account, scram_base64_twice=scram_base64_twice))
    _indent(root, 0)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8") + b"\n"


def encode_user(account: Account, *, scram_base64_twice: bool = False) -> Element:
    user = etree.Element(f"{{{NS_PIE}}}user", nsmap=default_ns(NS_PIE), name=account.name)
    if account.password is not None:
        user.set("password", account.password)
    for creds in sorted(account.credentials, key=lambda c: c.hash_name):
        scram = _sub(user, NS_PIE_SCRAM, "scram-credentials", mechanism=f"SCRAM-{creds.hash_name}")
        _sub(scram, NS_PIE_SCRAM, "iter-count").text = str(creds.iterations)
        for name, value in (("salt", creds.salt), ("server-key", creds.server_key),
                            ("stored-key", creds.stored_key)):  # fmt: skip
            text = base64.b64encode(value)
            _sub(scram, NS_PIE_SCRAM, name).text = (
                base64.b64encode(text) if scram_base64_twice else text
            ).decode()
    visible = [item for item in account.roster if item.is_visible]
    if visible:
        query = _sub(user, NS_ROSTER, "query")
        for item in sorted(visible, key=lambda i: i.jid):
            query.append(item_element(RosterItem(item.jid, item.name, item.subscription, item.ask, False,
                                                 item.approved, tuple(sorted(item.groups)))))  # fmt: skip
    for item in sorted(account.roster, key=lambda i: i.jid):
        if item.pending_in:
            _sub(user, NS_CLIENT, "presence", type="subscribe", **{"from": item.jid})
    if account.vcard is not None:
        user.append(parse(account.vcard))
    if account.private:
        query = _sub(user, NS_PRIVATE, "query")
        for key in sorted(account.private):
            query.append(parse(account.private[key]))
    if account.offline:
        offline = _sub(user, NS_PIE, "offline-messages")
        for message in account.offline:
            offline.append(parse(message))
    if account.archive:
        _archive(_sub(user, NS_PIE_MAM, "archive"), account.archive)
    if account.pep:
        _pep(user, account.pep)
    return user


def _archive(archive: Element, messages: Sequence[Archived]) -> None:
    for message in messages:
        result = _sub(archive, NS_MAM2, "result", id=message.stanza_id)
        forwarded = _sub(result, NS_FORWARD, "forwarded")
        _sub(forwarded, NS_DELAY, "delay", stamp=format_stamp(message.timestamp))
        forwarded.append(parse(message.message))


def _pep(user: Element, nodes: Sequence[PepNode]) -> None:
    owner = _sub(user, NS_PUBSUB_OWNER, "pubsub")
    for node in sorted(nodes, key=lambda n: n.node):
        configure = _sub(owner, NS_PUBSUB_OWNER, "configure", node=node.node)
        form = _sub(configure, NS_DATA_FORMS, "x", type="submit")
        for var in sorted(node.config):
            field_element = _sub(form, NS_DATA_FORMS, "field", var=var)
            for value in node.config[var]:
                _sub(field_element, NS_DATA_FORMS, "value").text = value
    if any(node.items for node in nodes):
        pubsub = _sub(user, NS_PUBSUB, "pubsub")
        for node in sorted(nodes, key=lambda n: n.node):
            items = _sub(pubsub, NS_PUBSUB, "items", node=node.node)
            for item_id, payload in node.items:
                _sub(items, NS_PUBSUB, "item", id=item_id).append(parse(payload))


def _sub(parent: Element, namespace: str, name: str, **attributes: str) -> Element:
    nsmap = None if etree.QName(parent).namespace == namespace else default_ns(namespace)
    return etree.SubElement(parent, f"{{{namespace}}}{name}", attributes, nsmap=nsmap)


#: Containers whose children are indented; every other element is user data, written as it is.
_STRUCTURE = {
    f"{{{NS_PIE}}}server-data", f"{{{NS_PIE}}}host", f"{{{NS_PIE}}}user", f"{{{NS_PIE}}}offline-messages",
    f"{{{NS_ROSTER}}}query", f"{{{NS_PRIVATE}}}query", f"{{{NS_PIE_MAM}}}archive",
    f"{{{NS_PUBSUB_OWNER}}}pubsub", f"{{{NS_PUBSUB}}}pubsub", f"{{{NS_PUBSUB}}}items",
}  # fmt: skip


def _indent(element: Element, level: int) -> None:
    """One element per line down to the user data: an administrator can read and diff the file,
    and no whitespace is added inside a vCard, a message or any other stored element."""
    children = list(element)
    if element.tag not in _STRUCTURE or not children:
        return
    element.text = "\n" + "  " * (level + 1)
    for child in children:
        child.tail = "\n" + "  " * (level + 1)
        _indent(child, level + 1)
    children[-1].tail = "\n" + "  " * level
