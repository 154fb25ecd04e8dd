"""A logged-in raw client with an inbox, for RFC 6121 tests about exact stanzas (trio).

`Peer` wraps `RawClient` so that waiting for one stanza never throws others away: everything
received while waiting for something else stays in `inbox`, in arrival order. To prove that a
stanza did NOT arrive, a test makes the server send a marker that travels the same path after
it (e.g. a message through the same user actor) and checks what came before the marker:
`await peer.before(marker)` returns the stanzas that arrived first.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import trio
from lxml import etree

from tests.support.raw import RawClient
from tests.support.timeouts import TIMEOUT

C = "{jabber:client}"
NS_ROSTER = "jabber:iq:roster"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
ROSTER_QUERY = f"{{{NS_ROSTER}}}query"
ROSTER_ITEM = f"{{{NS_ROSTER}}}item"

Element = etree._Element
Match = Callable[[Element], bool]

_ids = itertools.count()


def new_id(prefix: str = "t") -> str:
    return f"{prefix}{next(_ids)}"


def bare(username: str) -> str:
    """The bare JID of an account of the test server."""
    return f"{username}@localhost"


def show(element: Element) -> str:
    return etree.tostring(element).decode()


def kind(element: Element) -> str:
    return etree.QName(element).localname


def error_condition(element: Element) -> str | None:
    """The RFC 6120 defined condition of a stanza error, None if `element` is not an error."""
    if element.get("type") != "error":
        return None
    error = element.find(f"{C}error")
    assert error is not None, show(element)
    for child in error:
        qname = etree.QName(child)
        if qname.namespace == NS_STANZAS and qname.localname != "text":
            return qname.localname
    raise AssertionError(f"no defined condition: {show(element)}")


def stanza_error(element: Element) -> tuple[str, str]:
    """(type, condition) of a stanza error: the first child of <error/> in the stanzas namespace."""
    assert element.get("type") == "error", show(element)
    error = element.find(f"{C}error")
    assert error is not None, show(element)
    condition = next(etree.QName(c).localname for c in error if etree.QName(c).namespace == NS_STANZAS)
    return error.get("type", ""), condition


def presence(*, from_: str | None = None, type_: str | None = None) -> Match:
    """Matches a presence stanza (type None: available) with that 'from' (bare or full)."""

    def match(e: Element) -> bool:
        return (
            e.tag == f"{C}presence" and (from_ is None or e.get("from") == from_) and e.get("type") == type_
        )

    return match


def any_presence(e: Element) -> bool:
    return e.tag == f"{C}presence"


def any_message(e: Element) -> bool:
    return e.tag == f"{C}message"


def message(*, from_: str | None = None, id_: str | None = None, type_: str | None = None) -> Match:
    def match(e: Element) -> bool:
        return (
            e.tag == f"{C}message"
            and (from_ is None or e.get("from") == from_)
            and (id_ is None or e.get("id") == id_)
            and (type_ is None or e.get("type") == type_)
        )

    return match


def roster_push(e: Element) -> bool:
    return e.tag == f"{C}iq" and e.get("type") == "set" and e.find(ROSTER_QUERY) is not None


def pushed_item(push: Element) -> Element:
    items = push.findall(f"{ROSTER_QUERY}/{ROSTER_ITEM}")
    assert len(items) == 1, show(push)
    return items[0]


def item_state(item: Element | None) -> tuple[str, str | None] | None:
    """(subscription, ask) of a roster item element; None when absent."""
    if item is None:
        return None
    return item.get("subscription", "none"), item.get("ask")


class Peer:
    """One bound resource of an account, talking raw XML."""

    def __init__(self, raw: RawClient, jid: str) -> None:
        self.raw = raw
        self.jid = jid
        self.bare = jid.split("/", 1)[0]
        self.username = self.bare.split("@", 1)[0]
        self.resource = jid.split("/", 1)[1]
        self.inbox: list[Element] = []

    @classmethod
    async def login(cls, port: int, username: str, password: str, resource: str = "r", *,
                    domain: str = "localhost", host: str = "127.0.0.1") -> Peer:  # fmt: skip
        raw = await RawClient.connect(port, domain, host=host)
        jid = await raw.login(username, password, resource)
        return cls(raw, jid)

    @classmethod
    async def online(cls, port: int, username: str, password: str, resource: str = "r",
                     presence_xml: str = "", *, domain: str = "localhost",
                     host: str = "127.0.0.1") -> Peer:  # fmt: skip
        """Logged in, roster requested (so it gets pushes), initial presence sent and echoed."""
        peer = await cls.login(port, username, password, resource, domain=domain, host=host)
        await peer.roster()
        await peer.available(presence_xml)
        return peer

    async def send(self, data: str) -> None:
        await self.raw.send(data)

    async def _receive(self) -> Element:
        return await self.raw.next_element()

    async def expect(self, match: Match) -> Element:
        """The first stanza (queued or still to come) that matches; the others stay queued."""
        for index, element in enumerate(self.inbox):
            if match(element):
                del self.inbox[index]
                return element
        while True:
            element = await self._receive()
            if match(element):
                return element
            self.inbox.append(element)

    async def before(self, match: Match) -> list[Element]:
        """Wait for the marker `match`; return (and consume) every stanza that came before it."""
        for index, element in enumerate(self.inbox):
            if match(element):
                earlier, self.inbox = self.inbox[:index], self.inbox[index + 1 :]
                return earlier
        while True:
            element = await self._receive()
            if match(element):
                earlier, self.inbox = self.inbox, []
                return earlier
            self.inbox.append(element)

    async def iq(self, payload: str, *, type_: str = "get", to: str | None = None) -> Element:
        """Send an IQ and return the result or error with the same id."""
        request_id = new_id("iq")
        to_attr = "" if to is None else f" to='{to}'"
        await self.send(f"<iq type='{type_}' id='{request_id}'{to_attr}>{payload}</iq>")
        return await self.expect(
            lambda e: e.tag == f"{C}iq" and e.get("id") == request_id and e.get("type") in ("result", "error")
        )

    # ---- roster ------------------------------------------------------------------------------

    async def roster(self, ver: str | None = None) -> tuple[str | None, dict[str, Element]] | None:
        """Roster get; (ver, items by JID), or None for the empty result of an unchanged version."""
        ver_attr = "" if ver is None else f" ver='{ver}'"
        reply = await self.iq(f"<query xmlns='{NS_ROSTER}'{ver_attr}/>")
        assert reply.get("type") == "result", show(reply)
        query = reply.find(ROSTER_QUERY)
        if query is None:
            return None
        return query.get("ver"), {item.get("jid", ""): item for item in query.findall(ROSTER_ITEM)}

    async def roster_items(self) -> dict[str, Element]:
        got = await self.roster()
        assert got is not None
        return got[1]

    async def roster_set(self, item_xml: str) -> Element:
        return await self.iq(f"<query xmlns='{NS_ROSTER}'>{item_xml}</query>", type_="set")

    async def push_for(self, jid: str) -> Element:
        """The next roster push about `jid` (earlier pushes about other JIDs stay queued)."""
        push = await self.expect(lambda e: roster_push(e) and pushed_item(e).get("jid") == jid)
        return pushed_item(push)

    # ---- presence ----------------------------------------------------------------------------

    async def available(self, extra: str = "") -> Element:
        """Send (initial) presence and wait for the server's echo of it (RFC 6121 §4.2.2)."""
        await self.send(f"<presence>{extra}</presence>")
        return await self.expect(presence(from_=self.jid))

    async def sync(self) -> None:
        """A round trip through the account's user actor (a roster get): whatever that actor
        was asked to do before has been done, and what it sent to other actors is queued there."""
        await self.roster()

    async def aclose(self) -> None:
        await self.raw.aclose()

    async def drop(self) -> None:
        """Close the TCP connection abruptly: no </stream:stream>, no TLS close_notify."""
        stream = self.raw.stream
        transport = getattr(stream, "transport_stream", stream)
        with trio.move_on_after(2):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await transport.aclose()


class Peers:
    """Logs accounts of one server in as `Peer`s and closes every one of them in `aclose`.

    The `peers` fixture (tests/integration/conftest.py) gives a test one, closed after the test,
    that also draws fresh accounts from its module's stock: what most tests start from is one
    call (`online_users`, `friends`, `devices`; a room: `tests.support.muc.room_with`).
    """

    def __init__(self, port: int, password: str,
                 new_accounts: Callable[[int], list[str]] | None = None) -> None:  # fmt: skip
        self.port = port
        self.password = password
        self._new_accounts = new_accounts
        self.opened: list[Peer] = []

    async def login(self, username: str, resource: str = "r") -> Peer:
        """`Peer.login`: bound, nothing else sent."""
        peer = await Peer.login(self.port, username, self.password, resource)
        self.opened.append(peer)
        return peer

    async def online(self, username: str, resource: str = "r", presence_xml: str = "") -> Peer:
        """`Peer.online`: logged in, roster requested, initial presence sent and echoed."""
        peer = await Peer.online(self.port, username, self.password, resource, presence_xml)
        self.opened.append(peer)
        return peer

    def accounts(self, count: int) -> list[str]:
        """`count` fresh accounts (never logged in before), by username."""
        if self._new_accounts is None:
            raise RuntimeError("these Peers were made without a stock of fresh accounts")
        return self._new_accounts(count)

    async def online_users(self, count: int = 2, resource: str = "r") -> list[Peer]:
        """`count` fresh accounts, each `online` at `resource`, in order: users who have never
        met (empty rosters, no subscriptions)."""
        return [await self.online(username, resource) for username in self.accounts(count)]

    async def online_user(self, resource: str = "r") -> Peer:
        """One fresh account `online` at `resource`."""
        (username,) = self.accounts(1)
        return await self.online(username, resource)

    async def friends(self, resource: str = "r") -> tuple[Peer, Peer]:
        """Two fresh accounts online, each subscribed to the other's presence (RFC 6121
        'both'), everything settled and both inboxes empty."""
        user, contact = await self.online_users(2, resource)
        await subscribe(user, contact)
        await subscribe(contact, user)
        return user, contact

    async def devices(self, *resources: str) -> list[Peer]:
        """One fresh account `online` at each of `resources`, in order: one user's devices."""
        (username,) = self.accounts(1)
        return [await self.online(username, resource) for resource in resources]

    async def aclose(self) -> None:
        for peer in self.opened:
            await peer.aclose()
        self.opened.clear()


# ---- scenarios ---------------------------------------------------------------------------------


async def push_until(peer: Peer, jid: str, state: tuple[str, str | None]) -> Element:
    """Skip roster pushes about `jid` until one shows `state` (subscription, ask); return it."""
    while True:
        item = await peer.push_for(jid)
        if item_state(item) == state:
            return item


async def subscribe(user: Peer, contact: Peer) -> None:
    """`user` subscribes to the presence of (available) `contact`, who approves; all settled.

    Both must have requested the roster (to get pushes); the inboxes are emptied at the end.
    """
    await user.send(f"<presence to='{contact.bare}' type='subscribe'/>")
    await contact.expect(presence(from_=user.bare, type_="subscribe"))
    await contact.send(f"<presence to='{user.bare}' type='subscribed'/>")
    await user.expect(presence(from_=contact.bare, type_="subscribed"))
    await user.expect(presence(from_=contact.jid))
    mutual = item_state((await contact.roster_items()).get(user.bare)) == ("both", None)
    await push_until(user, contact.bare, ("both" if mutual else "to", None))
    await push_until(contact, user.bare, ("both" if mutual else "from", None))
    user.inbox.clear()
    contact.inbox.clear()


async def marker(sender: Peer, recipient: Peer) -> list[Element]:
    """Send a message to `recipient`'s full JID; return what reached it before the message.

    The message goes from `sender`'s session straight to `recipient`'s user actor, so it proves
    nothing about stanzas still on their way there: `sync()` the actor that would have sent them.
    """
    marker_id = new_id("marker")
    await sender.send(f"<message to='{recipient.jid}' id='{marker_id}'><body>marker</body></message>")
    return await recipient.before(message(id_=marker_id))


async def nothing_before_marker(sender: Peer, recipient: Peer, match: Match) -> None:
    """Nothing that satisfies `match` reached `recipient` before a `marker` message from `sender`."""
    earlier = await marker(sender, recipient)
    assert not [e for e in earlier if match(e)], [show(e) for e in earlier]


async def make_contacts(port: int, pairs: list[tuple[str, str, str]], password: str) -> None:
    """Set up subscriptions between accounts with raw clients that log out again afterwards.

    `pairs`: (user, contact, kind): kind "to" (user subscribed to contact) or "both".
    """
    for user, contact, kind in pairs:
        u = await Peer.online(port, user, password, "setup-" + new_id())
        c = await Peer.online(port, contact, password, "setup-" + new_id())
        await subscribe(u, c)
        if kind == "both":
            await subscribe(c, u)
        await u.aclose()
        await c.aclose()


def befriend(port: int, pairs: list[tuple[str, str, str]], password: str) -> None:
    """`make_contacts` from a sync test (before an asyncio scenario)."""

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            await make_contacts(port, pairs, password)

    trio.run(main)
