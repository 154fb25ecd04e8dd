"""XEP-0357: Push Notifications.

A client registers an app server node with ``<iq type='set'><enable xmlns='urn:xmpp:push:0'
jid='…' node='…'>`` (optionally with a ``pubsub#publish-options`` form, e.g. the app server's
secret) and removes it with <disable jid='…' [node='…']/> (no node: every node of that JID).
Registrations are stored per account (table `push_registration`) and kept until disabled or
the account is deleted.

When a message worth a notification (chat or normal, with a body or an end-to-end encrypted
payload) reaches an account that has no available resource (it went to offline storage) or
only sessions detached from their client (XEP-0198, waiting for a resumption), the account's
actor publishes a §7 notification to every registration: an IQ set from the account's bare JID
to the app server, ``<pubsub><publish node=…><item><notification xmlns='urn:xmpp:push:0'>`` with
the ``urn:xmpp:push:summary`` form (`message-count`: messages since a session of the account
last received one; `last-message-sender`; `last-message-body` if enabled) and the stored
publish-options. App server errors are not acted on (a registration stays until disabled).

No components or federation yet: the app server is whatever the JID routes to. A full JID of a
local account reaches that session (that is how the tests read notifications); another
domain's JID is bounced by the router.

Options: `include_body` (default false: app servers are third parties, and the body is the
very thing end-to-end encryption hides), `include_sender` (default true), `max_registrations`
(default 16 per account; more: `resource-constraint`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from imactor.server.modules import (
    AccountApi,
    DeliveredContext,
    IqContext,
    Module,
    ModuleConfigError,
    Scope,
    Xep,
)
from imactor.storage import AccountNotFound, StorageError
from imactor.storage.push import PushTarget
from imactor.xmpp import dataforms
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_CLIENT, NS_PUBSUB, NS_PUSH, NS_PUSH_SUMMARY, qname

PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
#: Payloads that make a message without a body worth a notification (end-to-end encrypted).
ENCRYPTED = frozenset({
    qname("eu.siacs.conversations.axolotl", "encrypted"), qname("urn:xmpp:omemo:2", "encrypted"),
    qname("urn:xmpp:openpgp:0", "openpgp"), qname("jabber:x:encrypted", "x"),
})  # fmt: skip
BODY = qname(NS_CLIENT, "body")
_TARGETS = "push.targets"  #: account state: the registrations, loaded once per actor life
_COUNT = "push.count"  #: account state: messages notified since a session last got one


@dataclass(frozen=True)
class Options:
    include_body: bool = False  #: send `last-message-body` (privacy: off by default)
    include_sender: bool = True  #: send `last-message-sender`
    max_registrations: int = 16  #: app server nodes per account

    def __post_init__(self) -> None:
        if self.max_registrations < 1:
            raise ModuleConfigError("modules.push.max_registrations: expected a positive integer")


module = Module(
    name="push", summary="Push Notifications", xeps=(Xep("0357", "0.4.1", "complete"),),
    features=(NS_PUSH,), account_features=(NS_PUSH,), options=Options,
)  # fmt: skip


@module.iq("set", NS_PUSH, "enable", scope=Scope.ACCOUNT)
async def enable(ctx: IqContext) -> st.Element:
    account = _own(ctx)
    payload = ctx.payload
    service, node = _service(payload), payload.get("node", "")
    if not node:
        raise StanzaError("bad-request", "<enable/> needs a node")
    form = dataforms.find_form(payload)
    options = b""
    if form is not None:
        try:
            submitted = dataforms.parse(form)
        except dataforms.FormError as exc:
            raise StanzaError("bad-request", str(exc)) from exc
        if submitted.type != "submit" or submitted.form_type != PUBLISH_OPTIONS:
            raise StanzaError("bad-request", f"the form must be a submitted {PUBLISH_OPTIONS} form")
        options = st.serialize(form)
    targets = await _targets(ctx, account)
    if len(targets) >= ctx.options.max_registrations and not any(
        t.service == service and t.node == node for t in targets
    ):
        raise StanzaError("resource-constraint", "too many push registrations")
    try:
        await ctx.storage.push.enable(account.username, PushTarget(service, node, options))
    except (StorageError, AccountNotFound) as exc:
        raise StanzaError("internal-server-error", "the registration could not be stored") from exc
    account.account_state().pop(_TARGETS, None)
    return _result(ctx)


@module.iq("set", NS_PUSH, "disable", scope=Scope.ACCOUNT)
async def disable(ctx: IqContext) -> st.Element:
    account = _own(ctx)
    node = ctx.payload.get("node") or None
    try:
        await ctx.storage.push.disable(account.username, _service(ctx.payload), node)
    except StorageError as exc:
        raise StanzaError("internal-server-error", "the registration could not be removed") from exc
    account.account_state().pop(_TARGETS, None)
    return _result(ctx)


@module.on_delivered
async def notify(ctx: DeliveredContext) -> None:
    account = ctx.account
    state = account.account_state()
    reachable = bool(ctx.delivered_to) and not all(account.is_detached(r) for r in ctx.delivered_to)
    if reachable:
        state[_COUNT] = 0
        return
    if not ctx.offline and not ctx.delivered_to:
        return  # dropped (a headline with nobody online): nothing waits for the user
    element = ctx.stanza
    if element.get("type", "normal") not in ("chat", "normal"):
        return
    if element.find(BODY) is None and not any(child.tag in ENCRYPTED for child in element):
        return
    targets = await _targets(ctx, account)
    if not targets:
        return
    count = state[_COUNT] = state.get(_COUNT, 0) + 1
    for target in targets:
        await ctx.server.route(_notification(ctx.options, account, target, element, count))


def _notification(options: Options, account: AccountApi, target: PushTarget, message: st.Element,
                  count: int) -> st.Element:  # fmt: skip
    """§7: the summary of what waits, published to the app server's node."""
    iq = st.make("iq", from_=account.jid, to=target.service, type_="set", id_=secrets.token_hex(8))
    pubsub = st.child(iq, NS_PUBSUB, "pubsub")
    publish = st.child(pubsub, NS_PUBSUB, "publish")
    publish.set("node", target.node)
    notification = st.child(st.child(publish, NS_PUBSUB, "item"), NS_PUSH, "notification")
    fields = [dataforms.Field("message-count", "", values=(str(count),))]
    if options.include_sender:
        fields.append(dataforms.Field("last-message-sender", "", values=(message.get("from", ""),)))
    body = message.findtext(BODY)
    if options.include_body and body is not None:
        fields.append(dataforms.Field("last-message-body", "", values=(body,)))
    dataforms.build(notification, "submit", fields, namespace=NS_PUSH_SUMMARY)
    if target.options:
        st.child(pubsub, NS_PUBSUB, "publish-options").append(st.parse(target.options))
    return iq


async def _targets(ctx: IqContext | DeliveredContext, account: AccountApi) -> list[PushTarget]:
    """The account's registrations, read from storage once per actor life (a cache).

    Raises:
        StanzaError: internal-server-error when storage fails (an after-delivery hook's error
            is logged by the actor; an IQ gets it as its answer).
    """
    state: dict[str, Any] = account.account_state()
    cached = state.get(_TARGETS)
    if cached is None:
        try:
            cached = state[_TARGETS] = await ctx.storage.push.targets(account.username)
        except StorageError as exc:  # never a crash of the account's actor
            raise StanzaError("internal-server-error", "push registrations could not be read") from exc
    return list(cached)


def _own(ctx: IqContext) -> AccountApi:
    if ctx.account is None or not ctx.is_self:
        raise StanzaError("forbidden", "push notifications are switched by the account itself")
    return ctx.account


def _service(payload: st.Element) -> str:
    text = payload.get("jid", "")
    if not text:
        raise StanzaError("bad-request", f"<{payload.tag.split('}')[-1]}/> needs the app server's jid")
    try:
        return str(JID.parse(text))
    except InvalidJID as exc:
        raise StanzaError("jid-malformed", f"invalid app server JID {text!r}") from exc


def _result(ctx: IqContext) -> st.Element:
    reply = st.iq_result(ctx.stanza)
    reply.set("to", str(ctx.from_jid))
    return reply
