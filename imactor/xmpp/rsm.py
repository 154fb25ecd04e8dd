"""XEP-0059 Result Set Management on a list ordered by the service, sans-IO: the request's
<set/> and the answer's.

The directory search pages a list it holds whole (`imactor.modules.directory.search`); a pubsub
node's items are paged in the database, so here the request is only read (`Request`) and the
store finds the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import qname
from imactor.xmpp.stanza import Element, child

NS_RSM = "http://jabber.org/protocol/rsm"


@dataclass(frozen=True, slots=True)
class Request:
    """What a <set/> asks: at most `max` items after the item `after`, or before `before` (""
    means the last page, §2.5), or from the start."""

    max: int
    after: str | None = None
    before: str | None = None


def read(parent: Element, default_max: int, most: int) -> Request | None:
    """The <set/> child of `parent` (None when there is none); `max` is capped at `most`.

    Raises:
        StanzaError: `bad-request` for a <max/> that is not a non-negative integer, an empty
            <after/>, both <after/> and <before/>, or an <index/> (not offered: §2.6 says a
            responding entity MAY not support it, and answers so).
    """
    rsm = parent.find(qname(NS_RSM, "set"))
    if rsm is None:
        return None
    text = rsm.findtext(qname(NS_RSM, "max"))
    limit = default_max
    if text is not None:
        try:
            limit = int(text.strip())
        except ValueError:
            limit = -1
        if limit < 0:
            raise StanzaError("bad-request", "<max/> must be a non-negative integer")
    if rsm.find(qname(NS_RSM, "index")) is not None:
        raise StanzaError("feature-not-implemented", "paging by <index/> is not offered; use <after/>")
    after, before = rsm.find(qname(NS_RSM, "after")), rsm.find(qname(NS_RSM, "before"))
    if after is not None and before is not None:
        raise StanzaError("bad-request", "<after/> and <before/> together")
    if after is not None and not (after.text or "").strip():
        raise StanzaError("bad-request", "<after/> needs an item id")
    return Request(
        min(limit, most),
        None if after is None else (after.text or "").strip(),
        None if before is None else (before.text or "").strip(),
    )


def answer(parent: Element, ids: Sequence[str], first_index: int, count: int) -> Element:
    """Append the answer's <set/>: <first index=…/> and <last/> of the page's ids, and <count/>."""
    rsm = child(parent, NS_RSM, "set")
    if ids:
        child(rsm, NS_RSM, "first", ids[0]).set("index", str(first_index))
        child(rsm, NS_RSM, "last", ids[-1])
    child(rsm, NS_RSM, "count", str(count))
    return rsm
