"""Microblog payloads (XEP-0277, XEP-0472) and pubsub attachments (XEP-0470), sans-IO.

A post or a comment is an Atom entry (RFC 4287) in a pubsub item. The service checks it (an
``atom:entry`` with its required ``atom:title``) and stamps what a client cannot be trusted to say
or cannot compute itself (XEP-0472 §3.3's "SHOULD be inserted at server side"): the author (name
and ``xmpp:`` URI of the publisher, replacing any the client sent: XEP-0277 §8.1's forged comment
author), the ``atom:id``, ``published`` and ``updated`` when absent, the ``alternate`` link to the
item and, on a post, the ``replies`` link to its comments node (XEP-0277 §3).

A like is a XEP-0470 attachment: an item whose id is the liker's bare JID, holding
``<attachments xmlns='urn:xmpp:pubsub-attachments:1'><noticed/></attachments>``, in the
attachment node of the post (``urn:xmpp:pubsub-attachments:1/`` + the post's XMPP URI).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from imactor.xmpp import pubsub as ps
from imactor.xmpp.namespaces import qname
from imactor.xmpp.stanza import Element, child

NS_ATOM = "http://www.w3.org/2005/Atom"
NS_MICROBLOG = "urn:xmpp:microblog:0"
NS_SOCIAL_FEED = "urn:xmpp:pubsub-social-feed:1"
NS_ATTACHMENTS = "urn:xmpp:pubsub-attachments:1"
#: XEP-0277 §3.1: comments nodes are named after this prefix.
COMMENTS_PREFIX = f"{NS_MICROBLOG}:comments/"
#: XEP-0470 §3.1: an attachment node is this prefix and the target item's XMPP URI.
ATTACHMENTS_PREFIX = f"{NS_ATTACHMENTS}/"
#: XEP-0472 §5: the pubsub#type values of a social feed a client may state in publish-options.
FEED_TYPES = (NS_MICROBLOG, NS_SOCIAL_FEED)

_ENTRY = qname(NS_ATOM, "entry")
_TITLE = qname(NS_ATOM, "title")
_AUTHOR = qname(NS_ATOM, "author")
_LINK = qname(NS_ATOM, "link")
_ATTACHMENTS = qname(NS_ATTACHMENTS, "attachments")
#: links the service writes itself: a client's would point elsewhere
_SERVICE_LINKS = ("replies", "alternate")


def xmpp_uri(service: str, node: str, item: str | None = None) -> str:
    """XEP-0060 §12.21 / RFC 5122: ``xmpp:service?;node=N;item=I``, N and I percent-encoded."""
    uri = f"xmpp:{service}?;node={quote(node, safe='')}"
    return uri if item is None else f"{uri};item={quote(item, safe='')}"


def parse_xmpp_uri(uri: str) -> tuple[str, str, str | None] | None:
    """(service, node, item) of what `xmpp_uri` writes; None for anything else."""
    if not uri.startswith("xmpp:"):
        return None
    service, mark, query = uri[len("xmpp:") :].partition("?")
    if not mark or not query.startswith(";"):
        return None
    params: dict[str, str] = {}
    for part in query[1:].split(";"):
        key, equals, value = part.partition("=")
        if not equals or key in params:
            return None
        params[key] = unquote(value)
    node = params.pop("node", None)
    item = params.pop("item", None)
    if not service or not node or params:
        return None
    return service, node, item


def check_entry(item: Element, limits: ps.Limits) -> Element:
    """The Atom entry of a published item (XEP-0277 §2.3, RFC 4287 §4.1.2: a title is required).

    Raises:
        StanzaError: `bad-request` + `invalid-payload` for anything but one ``atom:entry`` with
            a title; `not-acceptable` + `payload-too-big` over the limit.
    """
    payload = ps.check_payload(item, limits)
    if payload.tag != _ENTRY:
        raise ps.pubsub_error("bad-request", "invalid-payload", "a circle takes Atom entries (XEP-0277)")
    if payload.find(_TITLE) is None:
        raise ps.pubsub_error("bad-request", "invalid-payload", "an Atom entry needs a title (RFC 4287)")
    return payload


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the service writes into an entry (module docstring)."""

    author_jid: str  #: the publisher's bare JID
    author_name: str  #: shown by clients; the JID when the directory has no name
    now: str  #: XEP-0082 date-time
    item_uri: str  #: `xmpp_uri` of the item itself
    replies_uri: str | None = None  #: `xmpp_uri` of the comments node (posts only)


def stamp_entry(entry: Element, stamp: Stamp) -> Element:
    """Write `stamp` into `entry` (changed in place, and returned)."""
    for old in entry.findall(_AUTHOR):
        entry.remove(old)
    for link in entry.findall(_LINK):
        if link.get("rel") in _SERVICE_LINKS:
            entry.remove(link)
    author = child(entry, NS_ATOM, "author")
    child(author, NS_ATOM, "name", stamp.author_name)
    child(author, NS_ATOM, "uri", f"xmpp:{stamp.author_jid}")
    if entry.find(qname(NS_ATOM, "id")) is None:
        child(entry, NS_ATOM, "id", stamp.item_uri)
    for tag in ("published", "updated"):
        if entry.find(qname(NS_ATOM, tag)) is None:
            child(entry, NS_ATOM, tag, stamp.now)
    alternate = child(entry, NS_ATOM, "link")
    alternate.set("rel", "alternate")
    alternate.set("href", stamp.item_uri)
    if stamp.replies_uri is not None:
        replies = child(entry, NS_ATOM, "link")
        replies.set("rel", "replies")
        replies.set("title", "comments")
        replies.set("href", stamp.replies_uri)
    return entry


def check_attachment(item_id: str, publisher: str, payload: Element) -> None:
    """XEP-0470 §3.4: the item's id is the publisher's bare JID and its payload <attachments/>.

    Raises:
        StanzaError: `bad-request` otherwise.
    """
    if item_id != publisher:
        raise ps.pubsub_error("bad-request", "invalid-payload", "an attachment's item id is your bare JID")
    if payload.tag != _ATTACHMENTS:
        raise ps.pubsub_error(
            "bad-request", "invalid-payload", f"expected <attachments xmlns='{NS_ATTACHMENTS}'/>"
        )
