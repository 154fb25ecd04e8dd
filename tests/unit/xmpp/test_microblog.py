"""Microblog entries, attachment checks, XMPP URIs (imactor.xmpp.microblog) and XEP-0059
requests (imactor.xmpp.rsm): bytes in, elements or errors out."""

from __future__ import annotations

import pytest
from lxml import etree

from imactor.xmpp import microblog, rsm
from imactor.xmpp import pubsub as ps
from imactor.xmpp.errors import StanzaError

ATOM = f"{{{microblog.NS_ATOM}}}"
LIMITS = ps.Limits(max_items=10, max_item_bytes=300)


def item(payload: str) -> etree._Element:
    return etree.fromstring(f"<item xmlns='http://jabber.org/protocol/pubsub' id='1'>{payload}</item>")


def entry(inner: str) -> str:
    return f"<entry xmlns='{microblog.NS_ATOM}'>{inner}</entry>"


def conditions(error: StanzaError) -> tuple[str, str | None]:
    return error.condition, None if error.app_condition is None else error.app_condition[1]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("<note xmlns='urn:test'>hi</note>", ("bad-request", "invalid-payload")),
        (entry(""), ("bad-request", "invalid-payload")),  # RFC 4287: a title is required
        (entry(f"<title>{'x' * 400}</title>"), ("not-acceptable", "payload-too-big")),
        ("", ("bad-request", "invalid-payload")),
    ],
)
def test_check_entry_refuses(payload: str, expected: tuple[str, str]) -> None:
    with pytest.raises(StanzaError) as refused:
        microblog.check_entry(item(payload), LIMITS)
    assert conditions(refused.value) == expected


def test_stamp_replaces_the_author_and_service_links_and_keeps_the_rest() -> None:
    payload = microblog.check_entry(item(entry(
        "<title>hello</title><author><name>Forged</name></author><published>2020-01-01T00:00:00Z</published>"
        "<link rel='replies' href='xmpp:elsewhere'/><link rel='enclosure' href='https://x/y.png'/>"
    )), LIMITS)  # fmt: skip
    stamp = microblog.Stamp(
        "ann@example.com", "Ann", "2026-12-07T10:00:00Z", "xmpp:ps?;node=n;item=1", "xmpp:c"
    )
    microblog.stamp_entry(payload, stamp)
    assert [a.findtext(f"{ATOM}name") for a in payload.iter(f"{ATOM}author")] == ["Ann"]
    assert payload.findtext(f"{ATOM}author/{ATOM}uri") == "xmpp:ann@example.com"
    assert payload.findtext(f"{ATOM}published") == "2020-01-01T00:00:00Z"  # the client's is kept
    assert payload.findtext(f"{ATOM}updated") == "2026-12-07T10:00:00Z"
    assert payload.findtext(f"{ATOM}id") == "xmpp:ps?;node=n;item=1"
    links = {(link.get("rel"), link.get("href")) for link in payload.iter(f"{ATOM}link")}
    assert links == {("enclosure", "https://x/y.png"), ("alternate", "xmpp:ps?;node=n;item=1"),
                     ("replies", "xmpp:c")}  # fmt: skip


def test_a_comment_gets_no_replies_link() -> None:
    payload = microblog.check_entry(item(entry("<title>re</title>")), LIMITS)
    microblog.stamp_entry(payload, microblog.Stamp("b@x", "b@x", "2026-12-07T10:00:00Z", "xmpp:i"))
    assert [link.get("rel") for link in payload.iter(f"{ATOM}link")] == ["alternate"]


def test_attachments_are_the_publishers_own() -> None:
    noticed = etree.fromstring(f"<attachments xmlns='{microblog.NS_ATTACHMENTS}'><noticed/></attachments>")
    microblog.check_attachment("ann@x", "ann@x", noticed)
    with pytest.raises(StanzaError) as other:
        microblog.check_attachment("ben@x", "ann@x", noticed)
    assert other.value.condition == "bad-request"
    with pytest.raises(StanzaError) as wrong:
        microblog.check_attachment("ann@x", "ann@x", etree.fromstring("<like xmlns='urn:test'/>"))
    assert wrong.value.condition == "bad-request"


@pytest.mark.parametrize(("node", "item_id"), [("circles/dept/A & B/x;y=z", "a/b?c"), ("plain", None)])
def test_xmpp_uris_round_trip(node: str, item_id: str | None) -> None:
    uri = microblog.xmpp_uri("pubsub.example.com", node, item_id)
    assert microblog.parse_xmpp_uri(uri) == ("pubsub.example.com", node, item_id)


@pytest.mark.parametrize(
    "uri",
    ["mailto:x", "xmpp:ps", "xmpp:ps?node=a", "xmpp:ps?;node=a;node=b", "xmpp:ps?;item=1",
     "xmpp:ps?;node=a;x=1", "xmpp:?;node=a", "xmpp:ps?;node"],
)  # fmt: skip
def test_other_uris_are_not_parsed(uri: str) -> None:
    assert microblog.parse_xmpp_uri(uri) is None


# ---- XEP-0059 requests ----------------------------------------------------------------------


def pubsub(rsm_xml: str) -> etree._Element:
    return etree.fromstring(f"<pubsub xmlns='http://jabber.org/protocol/pubsub'>{rsm_xml}</pubsub>")


def test_rsm_requests() -> None:
    set_ = f"<set xmlns='{rsm.NS_RSM}'>"
    assert rsm.read(pubsub(""), 20, 100) is None
    assert rsm.read(pubsub(f"{set_}<max>5</max></set>"), 20, 100) == rsm.Request(5)
    assert rsm.read(pubsub(f"{set_}<max>500</max><after> p9 </after></set>"), 20, 100) == rsm.Request(
        100, "p9"
    )
    assert rsm.read(pubsub(f"{set_}<before/></set>"), 20, 100) == rsm.Request(20, None, "")
    for bad in ("<max>x</max>", "<max>-1</max>", "<after/>", "<after>a</after><before>b</before>"):
        with pytest.raises(StanzaError) as refused:
            rsm.read(pubsub(f"{set_}{bad}</set>"), 20, 100)
        assert refused.value.condition == "bad-request", bad
    with pytest.raises(StanzaError) as index:
        rsm.read(pubsub(f"{set_}<index>3</index></set>"), 20, 100)
    assert index.value.condition == "feature-not-implemented"


def test_rsm_answer() -> None:
    parent = pubsub("")
    answer = rsm.answer(parent, ["p9", "p8"], 3, 12)
    assert answer.findtext(f"{{{rsm.NS_RSM}}}first") == "p9"
    assert answer.find(f"{{{rsm.NS_RSM}}}first").get("index") == "3"  # type: ignore[union-attr]
    assert (answer.findtext(f"{{{rsm.NS_RSM}}}last"), answer.findtext(f"{{{rsm.NS_RSM}}}count")) == (
        "p8",
        "12",
    )
    empty = rsm.answer(pubsub(""), [], 0, 12)
    assert [child.tag.split("}")[1] for child in empty] == ["count"]
