"""The names of a circle's nodes (imactor.modules.circles.nodes) and the module's options."""

from __future__ import annotations

import pytest

from imactor.modules.circles import Options, nodes
from imactor.server.modules import ModuleConfigError

SERVICE = "pubsub.example.com"


@pytest.mark.parametrize(
    "feed", ["circles/dept/Acme/Sales/EMEA", "circles/dept/comments/x", "circles/room/team"]
)
@pytest.mark.parametrize("post", ["p1", "a/b", "comments/1", "x;item=y", "é"])
def test_comments_and_likes_name_their_feed_and_post(feed: str, post: str) -> None:
    assert nodes.target(feed, SERVICE) == nodes.Target(nodes.FEED, feed)
    comments = nodes.comments_node(feed, post)
    assert comments.startswith("urn:xmpp:microblog:0:comments/")
    assert nodes.target(comments, SERVICE) == nodes.Target(nodes.COMMENTS, feed, post)
    likes = nodes.likes_node(SERVICE, feed, post)
    assert likes.startswith("urn:xmpp:pubsub-attachments:1/xmpp:pubsub.example.com?;node=")
    assert nodes.target(likes, SERVICE) == nodes.Target(nodes.LIKES, feed, post)
    assert nodes.target(likes, "pubsub.other.example") is None  # another service's post
    assert all(nodes.is_reserved(name) for name in (feed, comments, likes))


@pytest.mark.parametrize(
    "node",
    ["news", "circles/dept/", "circles/room/", "circles/room/a/b", "circles/other/x",
     "urn:xmpp:microblog:0:comments/news/1", "urn:xmpp:microblog:0:comments/circles/dept/A",
     "urn:xmpp:microblog:0:comments/circles/dept/A/a%2fb",  # not the canonical spelling (%2F)
     "urn:xmpp:pubsub-attachments:1/xmpp:pubsub.example.com?;node=circles%2Fdept%2FA",  # no item
     "urn:xmpp:pubsub-attachments:1/xmpp:pubsub.example.com?;node=news;item=1"],
)  # fmt: skip
def test_other_nodes_are_not_circle_nodes(node: str) -> None:
    assert nodes.target(node, SERVICE) is None


def test_ordinary_names_are_not_reserved() -> None:
    assert not nodes.is_reserved("news")
    assert not nodes.is_reserved("urn:xmpp:microblog:0:comments/abc")
    assert not nodes.is_reserved("urn:xmpp:pubsub-attachments:1/xmpp:x?;node=news;item=1")


def test_options_are_checked() -> None:
    assert Options().max_posts == 1000
    for bad in ({"max_posts": 0}, {"max_entry_bytes": True}, {"max_posts": "10"}):
        with pytest.raises(ModuleConfigError, match=r"modules\.circles"):
            Options(**bad)  # type: ignore[arg-type]
