"""XEP-0077: In-Band Registration.

Before authentication (only with `[registration] enabled = true`): a get returns the form
(username, password), a set creates the account, throttled per client address by
`[limits] registrations_per_address` per `registration_window`. Once authenticated: a set with
the own username and a new password changes it (§3.3); `<remove/>` deletes the account and ends
its sessions (§3.2). No options.
"""

from __future__ import annotations

from imactor.server.modules import IqContext, Module, Xep
from imactor.storage import AccountExists, AccountNotFound
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID, prep_localpart, prep_password
from imactor.xmpp.namespaces import NS_REGISTER, qname

module = Module(name="register", summary="In-Band Registration", xeps=(Xep("0077", "2.4", "complete"),),
                features=(NS_REGISTER,))  # fmt: skip


@module.iq("get", NS_REGISTER, "query")
async def registration_form(ctx: IqContext) -> st.Element:
    reply = st.iq_result(ctx.stanza)
    query = st.child(reply, NS_REGISTER, "query")
    if ctx.from_jid.localpart is not None:
        st.child(query, NS_REGISTER, "registered")
        st.child(query, NS_REGISTER, "username", ctx.from_jid.localpart)
        st.child(query, NS_REGISTER, "password")
        return reply
    if not ctx.config.registration.enabled:
        raise StanzaError("not-allowed", "registration is disabled")
    st.child(query, NS_REGISTER, "instructions", "Choose a username and password.")
    st.child(query, NS_REGISTER, "username")
    st.child(query, NS_REGISTER, "password")
    return reply


@module.iq("set", NS_REGISTER, "query")
async def register(ctx: IqContext) -> st.Element:
    authenticated = ctx.from_jid.localpart is not None
    if ctx.payload.find(qname(NS_REGISTER, "remove")) is not None:
        if not authenticated:
            raise StanzaError("not-allowed")
        return await _remove(ctx)
    raw_user = ctx.payload.findtext(qname(NS_REGISTER, "username"))
    raw_password = ctx.payload.findtext(qname(NS_REGISTER, "password"))
    if not raw_user or not raw_password:
        raise StanzaError("not-acceptable", "username and password are required")
    try:
        username, password = prep_localpart(raw_user), prep_password(raw_password)
    except InvalidJID as exc:
        raise StanzaError("jid-malformed", "the username or password is not acceptable") from exc
    iterations = ctx.config.auth.scram_iterations
    # The account of the host the client's stream named (its JID's domain, or the `to` of its
    # stream before it logs in): alice@a and alice@b are two accounts ([[hosts]]).
    account = ctx.server.account_of(JID.make(username, ctx.from_jid.domainpart))
    if account is None:
        raise StanzaError("not-allowed", "this domain has no accounts here")
    if authenticated:
        if username != ctx.from_jid.localpart:
            raise StanzaError("not-allowed", "you can only change your own password")
        await ctx.storage.accounts.set_password(account, password, iterations=iterations)
        return st.iq_result(ctx.stanza)
    if not ctx.config.registration.enabled:
        raise StanzaError("not-allowed", "registration is disabled")
    if not ctx.server.registration_allowed(ctx.remote_address or ""):
        raise StanzaError("resource-constraint", "too many registrations from your address; try later")
    try:
        await ctx.storage.accounts.create(account, password, iterations=iterations)
    except AccountExists as exc:
        raise StanzaError("conflict", "that username is taken") from exc
    reply = st.iq_result(ctx.stanza)
    if "to" in reply.attrib:
        del reply.attrib["to"]  # the requester has no JID yet
    return reply


async def _remove(ctx: IqContext) -> st.Element:
    username = ctx.server.account_of(ctx.from_jid)
    assert username is not None
    try:
        await ctx.storage.accounts.delete(username)
    except AccountNotFound as exc:
        raise StanzaError("item-not-found") from exc
    await ctx.server.account_removed(username)
    return st.iq_result(ctx.stanza)
