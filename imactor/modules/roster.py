"""RFC 6121 §2: roster management with versioning (§2.6).

Runs in the account's `UserActor` (ACCOUNT scope): roster get with `ver` (an unchanged version
gets an empty result, pushes follow), roster set to add or update an item (name, groups),
`subscription='remove'` to delete one (with unsubscribe/unsubscribed sent to the contact per
§2.5.2), and pushes to every interested resource. Contacts shared by a module (the company
directory) are listed with the others; a set on one keeps the user's name and groups, a remove
is refused with not-allowed. Options: `max_items` (default 1000) and
`max_name_length` (default 1023).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from imactor.server.modules import AccountApi, IqContext, Module, Scope, Xep
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_ROSTER, NS_ROSTER_VER, qname
from imactor.xmpp.roster import RosterItem, item_element


@dataclass(frozen=True)
class Options:
    max_items: int = 1000  #: items per roster
    max_name_length: int = 1023  #: characters in an item name or group name


module = Module(
    name="roster", summary="RFC 6121 roster", xeps=(Xep("0237", "1.3", "complete: as RFC 6121 §2.6"),),
    features=(NS_ROSTER, NS_ROSTER_VER), options=Options, depends=("presence",),
)  # fmt: skip


@module.iq("get", NS_ROSTER, "query", scope=Scope.ACCOUNT)
async def roster_get(ctx: IqContext) -> st.Element:
    account = _own_account(ctx)
    version = str(account.roster_version)
    reply = st.iq_result(ctx.stanza)
    reply.set("to", str(ctx.from_jid))
    if ctx.payload.get("ver") == version:
        return reply  # §2.6.3: unchanged; the client keeps its cached roster
    query = st.child(reply, NS_ROSTER, "query")
    query.set("ver", version)
    for item in account.roster_items().values():
        if item.is_visible:
            query.append(item_element(item))
    return reply


@module.iq("set", NS_ROSTER, "query", scope=Scope.ACCOUNT)
async def roster_set(ctx: IqContext) -> st.Element:
    account = _own_account(ctx)
    items = ctx.payload.findall(qname(NS_ROSTER, "item"))
    if len(items) != 1:
        raise StanzaError("bad-request", "a roster set carries exactly one item")  # §2.3.3
    entry = items[0]
    try:
        contact = JID.parse(entry.get("jid", "")).bare
    except InvalidJID as exc:
        raise StanzaError("jid-malformed", "invalid item jid") from exc
    key = str(contact)
    existing = account.roster_items().get(key)
    subscription = entry.get("subscription")
    if subscription == "remove":
        if existing is None:
            raise StanzaError("item-not-found")
        if account.is_shared_contact(key):
            # A colleague shared by the company directory (`Module.shared_roster`) stays; a user
            # can rename it or add groups, not remove it (as with Prosody's mod_groups).
            raise StanzaError("not-allowed", "this contact is shared by the company directory")
        await _cancel_subscriptions(ctx, existing, contact)
        await account.set_roster_item(None, key)
    else:
        if subscription not in (None, "none", "to", "from", "both"):
            raise StanzaError("bad-request", "invalid subscription value")
        name = entry.get("name") or None
        groups = [g.text or "" for g in entry.findall(qname(NS_ROSTER, "group"))]
        _check_names(ctx.options, name, groups)
        if existing is None and _own_items(account) >= ctx.options.max_items:
            raise StanzaError("not-allowed", "roster is full")
        base = existing or RosterItem(jid=key)
        # Clients cannot set subscription or ask (§2.1.2.5): only name and groups change here.
        # The user puts the contact on the roster: it stays listed, even if it only held the
        # contact's request so far and the set gives it no name or group (`RosterItem.listed`).
        await account.set_roster_item(replace(base, name=name, groups=tuple(groups), listed=True), key)
    reply = st.iq_result(ctx.stanza)
    reply.set("to", str(ctx.from_jid))
    return reply


def _own_account(ctx: IqContext):  # type: ignore[no-untyped-def]
    if ctx.account is None or not ctx.is_self:
        raise StanzaError("forbidden", "a roster belongs to its account")  # §2.1.5
    return ctx.account


def _own_items(account: AccountApi) -> int:
    """Items the account added itself: shared contacts do not count against `max_items`."""
    return sum(1 for key in account.roster_items() if not account.is_shared_contact(key))


def _check_names(options: Options, name: str | None, groups: list[str]) -> None:
    if name is not None and len(name) > options.max_name_length:
        raise StanzaError("not-acceptable", "item name too long")
    if len(set(groups)) != len(groups):
        raise StanzaError("bad-request", "duplicate group")  # §2.3.3
    for group in groups:
        if not group:
            raise StanzaError("not-acceptable", "empty group name")
        if len(group) > options.max_name_length:
            raise StanzaError("not-acceptable", "group name too long")


async def _cancel_subscriptions(ctx: IqContext, item: RosterItem, contact: JID) -> None:
    """§2.5.2: removing an item cancels both directions of the subscription."""
    assert ctx.account is not None
    own = ctx.account.jid
    if item.subscription in ("to", "both") or item.ask:
        await ctx.account.route(st.make("presence", from_=own, to=contact, type_="unsubscribe"))
    if item.subscription in ("from", "both") or item.pending_in:
        await ctx.account.route(st.make("presence", from_=own, to=contact, type_="unsubscribed"))
    if item.subscription in ("from", "both"):
        # §3.2.2: the contact loses our presence, so it learns that we are unavailable.
        for resource in ctx.account.available_resources():
            gone = st.make("presence", from_=own.with_resource(resource), to=contact, type_="unavailable")
            await ctx.account.route(gone)
