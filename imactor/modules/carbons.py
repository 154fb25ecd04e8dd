"""XEP-0280: Message Carbons, with the XEP-0334 hints about copies.

A resource enables carbons with ``<iq type='set'><enable xmlns='urn:xmpp:carbons:2'/></iq>``
(and disables them with <disable/>); the flag lives with the resource in the account's
`UserActor` and ends with it. Then:

- received copies (§6): when a message eligible for carbons (`imactor.xmpp.carbons.eligible`)
  has been delivered to some of the account's resources, or stored offline, every other
  carbons-enabled resource gets it wrapped in <received/>;
- sent copies (§7): when one of the account's resources sends such a message, every other
  carbons-enabled resource of the account gets it wrapped in <sent/>, whether or not the
  sending resource enabled carbons.

Copies come from the account's bare JID and are written to the sessions directly, never
routed. A message with <private xmlns='urn:xmpp:carbons:2'/> or the XEP-0334 <no-copy/> hint is
not copied (the <private/> element is left in the delivered message). §11: a client cannot
forge a copy: a routed message that wraps <sent/> or <received/> and does not come from the
recipient's own bare JID (only the server speaks for that) is refused with `not-acceptable`.

No options. The flag is kept with the resource in the account's actor and, through the
session, across a move of that actor to another worker or a resumption on another worker.
"""

from __future__ import annotations

from imactor.server.modules import (
    AccountApi,
    DeliveredContext,
    IqContext,
    MessageContext,
    Module,
    Scope,
    Xep,
)
from imactor.xmpp import carbons
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_CARBONS, NS_FORWARD, NS_HINTS

#: Key of the flag in a resource's module state ("1" when enabled).
ENABLED = "carbons.enabled"

module = Module(
    name="carbons", summary="Message Carbons",
    xeps=(Xep("0280", "1.0.1", "complete"),
          Xep("0297", "1.0", "complete: carbons and archive results"),
          Xep("0334", "0.3.0", "partial: no-copy (carbons), no-store and no-permanent-store (archive)")),
    features=(NS_CARBONS, NS_FORWARD, NS_HINTS),
    hook_order=-100,  # refuse a forged copy before anything (the archive) keeps it
)  # fmt: skip


@module.iq("set", NS_CARBONS, "enable", scope=Scope.ACCOUNT)
async def enable(ctx: IqContext) -> st.Element:
    return _set(ctx, True)


@module.iq("set", NS_CARBONS, "disable", scope=Scope.ACCOUNT)
async def disable(ctx: IqContext) -> st.Element:
    return _set(ctx, False)


def _set(ctx: IqContext, enabled: bool) -> st.Element:
    """§4 / §5: only the account's own resource switches its own carbons; repeating is fine."""
    if ctx.account is None or not ctx.is_self:
        raise StanzaError("not-allowed", "carbons are switched by the account's own resources")
    if not ctx.account.set_resource_state(ctx.from_jid.resourcepart or "", ENABLED, "1" if enabled else None):
        raise StanzaError("not-allowed", "the resource is not bound")
    reply = st.iq_result(ctx.stanza)
    reply.set("to", str(ctx.from_jid))
    return reply


@module.on_message
async def refuse_forged(ctx: MessageContext) -> None:
    """§11: copies come only from the account's bare JID, and only the server sends those."""
    if not carbons.is_carbon(ctx.stanza):
        return
    try:
        sender = JID.parse(ctx.stanza.get("from", ""))
    except InvalidJID:
        sender = None
    if sender != ctx.account.jid:
        raise StanzaError("not-acceptable", "carbon copies come only from the account's server")


@module.on_delivered
async def received_copies(ctx: DeliveredContext) -> None:
    account = ctx.account
    targets = _targets(account, exclude=ctx.delivered_to)  # cheap: checked before the rest
    if not targets:
        return
    element = ctx.stanza
    if not carbons.eligible(element):
        return
    try:
        sender = JID.parse(element.get("from", ""))
    except InvalidJID:
        return
    if sender.bare == account.jid:
        return  # a note to self: the sending resource's <sent/> copies cover it
    _copy("received", element, account, targets)


@module.on_sent
async def sent_copies(ctx: MessageContext) -> None:
    element = ctx.stanza
    account = ctx.account
    try:
        sender = JID.parse(element.get("from", ""))
    except InvalidJID:
        return
    targets = _targets(account, exclude=(sender.resourcepart or "",))
    if targets and carbons.eligible(element):
        _copy("sent", element, account, targets)


@module.wants_sent
def sent_copies_wanted(account: AccountApi) -> bool:
    """Sent copies go to the account's carbons-enabled resources: needed only if there are two
    resources of which one has carbons on (the sender's own copy is never made)."""
    return len(account.bound_resources()) > 1 and bool(_targets(account, exclude=()))


def _targets(account: AccountApi, exclude: tuple[str, ...]) -> list[str]:
    """The account's carbons-enabled resources, but those in `exclude`."""
    found: list[str] = []
    for name in account.bound_resources():
        state = account.resource_state(name)
        if name not in exclude and state is not None and state.get(ENABLED):
            found.append(name)
    return found


def _copy(direction: carbons.Direction, element: st.Element, account: AccountApi, targets: list[str]) -> None:
    for name in targets:
        copy = carbons.wrap(direction, element, account.jid, account.jid.with_resource(name))
        account.send_to_resource(name, copy)
