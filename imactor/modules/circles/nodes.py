"""The names of a circle's nodes on the publish-subscribe service (pure).

- ``circles/dept/<department key>``: the feed of a department (keys are the directory's, such as
  ``Acme/Sales/EMEA``; a key may hold slashes);
- ``circles/room/<room>``: the feed of a chat group, the room ``<room>@conference.<domain>``;
- ``urn:xmpp:microblog:0:comments/<feed>/<post id>``: the comments on one post (XEP-0277 §3.1's
  prefix; the post id percent-encoded, so that the last slash ends the feed's name whatever the
  department key holds);
- ``urn:xmpp:pubsub-attachments:1/xmpp:<service>?;node=<feed>;item=<post id>``: the likes of
  one post (XEP-0470 §3.1's attachment node: the prefix and the post's XMPP URI).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from imactor.xmpp.microblog import ATTACHMENTS_PREFIX, COMMENTS_PREFIX, parse_xmpp_uri, xmpp_uri

DEPARTMENT = "circles/dept/"
ROOM = "circles/room/"
FEED = "feed"
COMMENTS = "comments"
LIKES = "likes"


@dataclass(frozen=True, slots=True)
class Target:
    """What a node name addresses: a circle's feed, or the comments or likes of one post."""

    kind: str  #: FEED, COMMENTS or LIKES
    feed: str  #: the circle's feed node
    post: str | None = None  #: the post's item id (comments and likes)


def is_feed(node: str) -> bool:
    if node.startswith(DEPARTMENT):
        return len(node) > len(DEPARTMENT)
    if node.startswith(ROOM):
        name = node[len(ROOM) :]
        return bool(name) and "/" not in name
    return False


def comments_node(feed: str, post: str) -> str:
    return f"{COMMENTS_PREFIX}{feed}/{quote(post, safe='')}"


def likes_node(service: str, feed: str, post: str) -> str:
    return ATTACHMENTS_PREFIX + xmpp_uri(service, feed, post)


def target(node: str, service: str) -> Target | None:
    """The circle node `node` names, in its one canonical spelling; None for any other node."""
    if is_feed(node):
        return Target(FEED, node)
    if node.startswith(COMMENTS_PREFIX):
        feed, slash, post = node[len(COMMENTS_PREFIX) :].rpartition("/")
        if slash and post and is_feed(feed) and comments_node(feed, unquote(post)) == node:
            return Target(COMMENTS, feed, unquote(post))
    if node.startswith(ATTACHMENTS_PREFIX):
        parsed = parse_xmpp_uri(node[len(ATTACHMENTS_PREFIX) :])
        if parsed is not None:
            jid, liked, item = parsed
            if jid == service and item and is_feed(liked) and likes_node(service, liked, item) == node:
                return Target(LIKES, liked, item)
    return None


def is_reserved(node: str) -> bool:
    """Names nobody may create by hand (XEP-0470 §3.3 for attachment nodes): the service makes
    circle nodes itself, and a look-alike would shadow or confuse them."""
    return node.startswith(("circles/", f"{COMMENTS_PREFIX}circles/")) or (
        node.startswith(ATTACHMENTS_PREFIX) and f";node={quote('circles/', safe='')}" in node
    )
