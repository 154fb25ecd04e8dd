"""XEP-0227 (1.1): the Portable Import/Export format of user data, read and written (sans-IO).

`decode_host` turns one parsed ``<host/>`` (XIncludes already resolved by the caller) into
`Account` values; `imactor.xmpp.pie_write.encode` writes them back in a canonical order.

What a file holds, and where it goes (§4.2 to §4.10 of the XEP):

- ``<user name/>``: the account; its ``password`` attribute (§4.2) or its
  ``<scram-credentials/>`` (§4.3: SCRAM-SHA-1 and SCRAM-SHA-256 are kept as they are, with their
  own salt and iteration count; other mechanisms are reported and skipped);
- ``<query xmlns='jabber:iq:roster'/>`` (§4.4, RFC 6121 §2.1 items with ``ask`` and
  ``approved``) and ``<presence type='subscribe'/>`` children (§4.9: pending inbound requests);
- ``<vCard xmlns='vcard-temp'/>`` (§4.7), ``<query xmlns='jabber:iq:private'/>`` (§4.6),
  ``<offline-messages/>`` (§4.5);
- ``<archive xmlns='urn:xmpp:pie:0#mam'/>`` of XEP-0313 ``<result/>`` elements (§4.11);
- ``<pubsub xmlns='…#owner'/>`` node configurations and ``<pubsub/>`` items (§4.10, PEP).

Anything else (privacy lists, §4.8, or unknown namespaces) is reported, not imported (§4).
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lxml import etree

from imactor.xmpp.jid import JID, InvalidJID, prep_localpart, prep_password
from imactor.xmpp.namespaces import (
    NS_CLIENT,
    NS_DATA_FORMS,
    NS_DELAY,
    NS_FORWARD,
    NS_PRIVATE,
    NS_PUBSUB,
    NS_PUBSUB_OWNER,
    NS_ROSTER,
    NS_SID,
    NS_VCARD,
)
from imactor.xmpp.roster import RosterItem
from imactor.xmpp.scram import SCRAM_HASHES, ScramCredentials, hash_digest
from imactor.xmpp.stanza import default_ns

NS_PIE = "urn:xmpp:pie:0"
NS_PIE_OLD = "http://www.xmpp.org/extensions/xep-0227.html#ns"  # before 1.0 (Openfire's exports)
NS_PIE_SCRAM = "urn:xmpp:pie:0#scram"
NS_PIE_MAM = "urn:xmpp:pie:0#mam"
NS_MAM2 = "urn:xmpp:mam:2"
NS_XINCLUDE = "http://www.w3.org/2001/XInclude"
SUBSCRIPTIONS = ("none", "to", "from", "both")
#: PBKDF2 rounds a login may cost: servers use 4,096 to 100,000; a count far beyond is a mistake
#: (or an attack) that would cost seconds of CPU at every login of the account.
MAX_ITERATIONS = 1_000_000

Element = etree._Element


class PieError(ValueError):
    """Malformed input; the message names the file, the line and the element."""


@dataclass(frozen=True, slots=True)
class Archived:
    """One XEP-0313 result: the archive's id for it, when (unix time), and the message."""

    stanza_id: str
    timestamp: float
    message: bytes


@dataclass(frozen=True, slots=True)
class PepNode:
    """A PEP node: its configuration form's values and its items (id, payload), oldest first."""

    node: str
    config: dict[str, tuple[str, ...]]
    items: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class Account:
    """Everything a XEP-0227 file holds about one user."""

    name: str
    password: str | None = None
    credentials: list[ScramCredentials] = field(default_factory=list)
    roster: list[RosterItem] = field(default_factory=list)
    vcard: bytes | None = None
    private: dict[str, bytes] = field(default_factory=dict)  #: "{ns}name" → the element
    offline: list[bytes] = field(default_factory=list)
    archive: list[Archived] = field(default_factory=list)
    pep: list[PepNode] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  #: what was not understood, for the operator


# ---- reading -----------------------------------------------------------------------------------


def where(element: Element) -> str:
    """``file:line: <name>`` of an element, for messages (the file an XInclude brought it from)."""
    base: object = getattr(element, "base", None)  # None for a tree built in memory
    if not isinstance(base, str) or not base:
        base = "<input>"
    if base.startswith("file://"):
        base = base[len("file://") :]
    line: object = element.sourceline  # None for an element built in memory
    return f"{base}:{line or '?'}: <{etree.QName(element).localname}>"


def fail(element: Element, problem: str) -> PieError:
    return PieError(f"{where(element)}: {problem}")


def is_pie(element: Element, name: str) -> bool:
    """Whether `element` is XEP-0227's `name`: current or draft namespace, or none at all
    (COMPAT Openfire: its export plugin builds elements with dom4j's namespace-less addElement)."""
    return element.tag in (f"{{{NS_PIE}}}{name}", f"{{{NS_PIE_OLD}}}{name}", name)


def hosts(root: Element) -> list[Element]:
    """The ``<host/>`` elements of a ``<server-data/>`` root (or the root itself, a host file)."""
    if is_pie(root, "host"):
        return [root]
    if not is_pie(root, "server-data"):
        raise fail(root, f"expected <server-data xmlns='{NS_PIE}'>, found {root.tag}")
    return [child for child in _elements(root) if is_pie(child, "host")]


def host_jid(host: Element) -> str:
    domain = host.get("jid")
    try:
        return str(JID.parse(domain or ""))
    except InvalidJID as exc:
        raise fail(host, f"jid {domain!r} is not a JID: {exc}") from None


def decode_host(host: Element) -> Iterator[Account]:
    """The accounts of one ``<host/>``, in file order."""
    for child in _elements(host):
        if is_pie(child, "user"):
            yield decode_user(child, host_jid(host))


def decode_user(user: Element, domain: str) -> Account:
    raw_name = user.get("name")
    if not raw_name:
        raise fail(user, "no name attribute (§4.2: it is required)")
    try:
        name = prep_localpart(raw_name)
    except ValueError as exc:
        raise fail(user, f"name {raw_name!r} is not a valid username: {exc}") from None
    account = Account(name, password=user.get("password") or None)
    if account.password is not None:
        try:
            prep_password(account.password)  # RFC 8265 §4.2, as `imactor user passwd` checks it
        except ValueError as exc:
            raise fail(user, f"the password is not a valid password: {exc}") from None
    self_jid = f"{name}@{domain}"
    roster: dict[str, RosterItem] = {}
    pending: list[str] = []
    for child in _elements(user):
        tag = child.tag
        if tag == f"{{{NS_PIE_SCRAM}}}scram-credentials":
            _scram(child, account)
        elif tag == f"{{{NS_ROSTER}}}query":
            for item in _roster(child, self_jid):
                roster[item.jid] = item
        elif tag in (f"{{{NS_CLIENT}}}presence", f"{{{NS_PIE}}}presence"):  # COMPAT Prosody: no xmlns
            if child.get("type") == "subscribe":
                pending.append(_jid_attr(child, "from", bare=True))
            else:
                account.skipped.append(f"{where(child)}: a presence that is no subscription request")
        elif tag == f"{{{NS_VCARD}}}vCard":
            account.vcard = detach(_adopted(child, NS_VCARD))
        elif tag == f"{{{NS_PRIVATE}}}query":
            for fragment in _elements(child):
                account.private[str(fragment.tag)] = detach(fragment)
        elif is_pie(child, "offline-messages"):
            messages = [m for m in _elements(child) if m.tag == f"{{{NS_CLIENT}}}message"]
            ours = (self_jid, domain)
            account.offline.extend(detach(_without_old_ids(_adopted(m, NS_CLIENT), ours)) for m in messages)
        elif tag == f"{{{NS_PIE_MAM}}}archive":
            account.archive.extend(_archived(result) for result in _elements(child))
        elif tag == f"{{{NS_PUBSUB_OWNER}}}pubsub":
            _pep_configs(child, account)
        elif tag == f"{{{NS_PUBSUB}}}pubsub":
            _pep_items(child, account)
        else:
            account.skipped.append(f"{where(child)}: {child.tag} is not imported")
    for contact in pending:
        item = roster.get(contact, RosterItem(contact))
        roster[contact] = RosterItem(item.jid, item.name, item.subscription, item.ask, True, item.approved,
                                     item.groups, item.listed)  # fmt: skip
    roster.pop(self_jid, None)
    account.roster = [roster[jid] for jid in sorted(roster)]
    return account


def _adopted(element: Element, namespace: str) -> Element:
    """`element` with its namespace-less descendants in `namespace`, as the element's own are.
    COMPAT Openfire: its export plugin writes a vCard's fields, a message's body and roster
    items without a namespace (dom4j's addElement with a name only)."""
    if all(not isinstance(e.tag, str) or e.tag.startswith("{") for e in element.iter()):
        return element
    return _rebuilt(element, namespace, None)


def _rebuilt(element: Element, namespace: str, parent: Element | None) -> Element:
    tag = element.tag if element.tag.startswith("{") else f"{{{namespace}}}{element.tag}"
    own = etree.QName(tag).namespace
    attributes = {str(k): str(v) for k, v in element.attrib.items()}
    if parent is not None and etree.QName(parent).namespace == own:
        copied = etree.SubElement(parent, tag, attributes)
    elif parent is not None:
        copied = etree.SubElement(parent, tag, attributes, nsmap=default_ns(own))
    else:
        copied = etree.Element(tag, attributes, nsmap=default_ns(own))
    copied.text, copied.tail = element.text, element.tail
    for child in element:
        if isinstance(child.tag, str):
            _rebuilt(child, namespace, copied)
    return copied


def _without_old_ids(message: Element, ours: tuple[str, ...]) -> Element:
    """The message without the ids the exporting server stamped on it for this account
    (XEP-0359 <stanza-id/>, ejabberd's <archived/>): they name entries of the old server's
    archive, which a client would look for in ours in vain."""
    message = copy.deepcopy(message)
    for old in (f"{{{NS_SID}}}stanza-id", "{urn:xmpp:mam:tmp}archived"):
        for stamp in list(message.iterchildren(old)):
            if stamp.get("by") in ours:
                message.remove(stamp)
    return message


def _elements(parent: Element) -> Iterator[Element]:
    """Child elements, without comments and processing instructions."""
    for child in parent:
        if isinstance(child.tag, str):
            yield child


def detach(element: Element) -> bytes:
    """The element alone, serialized: no tail, no namespace declarations it does not use."""
    alone = copy.deepcopy(element)
    alone.tail = None
    etree.cleanup_namespaces(alone)
    return etree.tostring(alone)


def _jid_attr(element: Element, attribute: str, *, bare: bool) -> str:
    value = element.get(attribute)
    if not value:
        raise fail(element, f"no {attribute} attribute")
    try:
        jid = JID.parse(value)
    except InvalidJID as exc:
        raise fail(element, f"{attribute} {value!r} is not a JID: {exc}") from None
    return str(jid.bare if bare else jid)


def _base64(element: Element, name: str, size: int | None) -> bytes:
    child = element.find(f"{{{NS_PIE_SCRAM}}}{name}")
    if child is None or not (child.text or "").strip():
        raise fail(element, f"no <{name}/> (§4.3: iter-count, salt, server-key and stored-key are required)")
    try:
        value = base64.b64decode((child.text or "").strip(), validate=True)
    except binascii.Error:
        raise fail(child, "not base64") from None
    if size is not None and len(value) != size:
        raise fail(child, f"{len(value)} bytes where the hash gives {size}")
    return value


def _scram(element: Element, account: Account) -> None:
    mechanism = element.get("mechanism", "")
    hash_name = mechanism.removeprefix("SCRAM-")
    if not mechanism.startswith("SCRAM-") or hash_name not in SCRAM_HASHES:
        account.skipped.append(f"{where(element)}: {mechanism or 'no mechanism'}: imactor keeps "
                               f"SCRAM-SHA-1 and SCRAM-SHA-256 verifiers only")  # fmt: skip
        return
    size = len(hash_digest(hash_name, b""))
    count = element.findtext(f"{{{NS_PIE_SCRAM}}}iter-count", "").strip()
    if not count.isdigit() or int(count) < 1:
        raise fail(element, f"iter-count {count!r} is not a positive integer")
    if int(count) > MAX_ITERATIONS:
        raise fail(element, f"iter-count {count}: every login would spend that many rounds (at most "
                            f"{MAX_ITERATIONS})")  # fmt: skip
    try:
        keys = [_base64(element, name, size) for name in ("stored-key", "server-key")]
        salt = _base64(element, "salt", None)
    except PieError:
        # COMPAT ejabberd (23.01 at least): its export base64-encodes the base64 text it stores.
        keys = [_twice_base64(element, name, size) for name in ("stored-key", "server-key")]
        salt = _twice_base64(element, "salt", None)
    account.credentials = [c for c in account.credentials if c.hash_name != hash_name]
    account.credentials.append(ScramCredentials(hash_name, salt, int(count), keys[0], keys[1]))


def _twice_base64(element: Element, name: str, size: int | None) -> bytes:
    outer = _base64(element, name, None)
    try:
        value = base64.b64decode(outer, validate=True)
    except binascii.Error:
        raise fail(element, f"<{name}/> is neither the key in base64 nor base64 of that") from None
    if size is not None and len(value) != size:
        raise fail(element, f"<{name}/>: {len(value)} bytes where the hash gives {size}")
    return value


def _roster(query: Element, self_jid: str) -> Iterator[RosterItem]:
    for item in _elements(query):
        if item.tag == "item":  # COMPAT Openfire (`_adopted`); a copy: keep the original for messages
            item = _adopted(item, NS_ROSTER)
        if item.tag != f"{{{NS_ROSTER}}}item":
            continue
        jid = _jid_attr(item, "jid", bare=False)
        subscription = item.get("subscription", "none")
        if subscription not in SUBSCRIPTIONS:
            raise fail(item, f"subscription {subscription!r} is not one of {', '.join(SUBSCRIPTIONS)}")
        groups = sorted({(g.text or "").strip() for g in item.iterchildren(f"{{{NS_ROSTER}}}group")} - {""})
        yield RosterItem(jid=jid, name=item.get("name") or None, subscription=subscription,
                         ask=item.get("ask") == "subscribe", approved=item.get("approved") in ("true", "1"),
                         groups=tuple(groups), listed=True)  # fmt: skip


def parse_stamp(element: Element, stamp: str | None) -> float:
    """A XEP-0082 date-time as unix time, to the microsecond."""
    try:
        moment = datetime.fromisoformat((stamp or "").strip())
    except ValueError:
        raise fail(element, f"stamp {stamp!r} is not a XEP-0082 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1) / 1_000_000


def format_stamp(timestamp: float) -> str:
    """Unix time as a XEP-0082 date-time in UTC; microseconds only when there are some."""
    moment = _EPOCH + timedelta(microseconds=round(timestamp * 1_000_000))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{moment.microsecond:06d}Z" if moment.microsecond else f"{text}Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _archived(result: Element) -> Archived:
    if result.tag != f"{{{NS_MAM2}}}result":
        raise fail(result, f"expected <result xmlns='{NS_MAM2}'/> (§4.11)")
    stanza_id = result.get("id")
    if not stanza_id:
        raise fail(result, "no id attribute")
    forwarded = result.find(f"{{{NS_FORWARD}}}forwarded")
    message = None if forwarded is None else forwarded.find(f"{{{NS_CLIENT}}}message")
    delay = None if forwarded is None else forwarded.find(f"{{{NS_DELAY}}}delay")
    if message is None or delay is None:
        raise fail(result, "expected <forwarded/> with a <delay/> and a <message/> (XEP-0297)")
    return Archived(stanza_id, parse_stamp(delay, delay.get("stamp")), detach(message))


def _pep_configs(pubsub: Element, account: Account) -> None:
    for configure in _elements(pubsub):
        node = configure.get("node")
        if configure.tag != f"{{{NS_PUBSUB_OWNER}}}configure" or not node:
            account.skipped.append(f"{where(configure)}: not imported (node affiliations and subscriptions)")
            continue
        form = configure.find(f"{{{NS_DATA_FORMS}}}x")
        values: dict[str, tuple[str, ...]] = {}
        for field_element in () if form is None else form.iterchildren(f"{{{NS_DATA_FORMS}}}field"):
            found = tuple(v.text or "" for v in field_element.iterchildren(f"{{{NS_DATA_FORMS}}}value"))
            if field_element.get("var") and found:  # Prosody lists every field, most without a value
                values[field_element.get("var", "")] = found
        _set_node(account, PepNode(node, values, _node(account, node).items))


def _pep_items(pubsub: Element, account: Account) -> None:
    for items in _elements(pubsub):
        node = items.get("node")
        if items.tag != f"{{{NS_PUBSUB}}}items" or not node:
            raise fail(items, "expected <items node='…'/> (§4.10)")
        found = []
        for item in _elements(items):
            payload = list(_elements(item))
            if len(payload) != 1 or not item.get("id"):
                raise fail(item, "expected an id and exactly one payload element")
            found.append((item.get("id", ""), detach(payload[0])))
        existing = _node(account, node)
        _set_node(account, PepNode(node, existing.config, (*existing.items, *found)))


def _node(account: Account, node: str) -> PepNode:
    return next((n for n in account.pep if n.node == node), PepNode(node, {}))


def _set_node(account: Account, node: PepNode) -> None:
    account.pep = sorted([n for n in account.pep if n.node != node.node] + [node], key=lambda n: n.node)
