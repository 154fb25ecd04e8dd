"""End-to-end encryption policy for one-to-one messages (the paper's first promise).

Option `mode` (``[modules.e2e_policy]``, one server is one domain, so this is the domain's policy):

- ``"allow"`` (default): plaintext and end-to-end encrypted messages both pass;
- ``"require"``: a one-to-one chat or normal message with a <body/> and no end-to-end encrypted
  payload is refused with `policy-violation` and a text that says why; the archive and offline
  storage never see it;
- ``"off"``: end-to-end encryption is not permitted (deployments whose compliance rules need
  readable archives): a message carrying an encrypted payload is refused the same way.

Encrypted payloads recognised: OMEMO (``eu.siacs.conversations.axolotl`` and ``urn:xmpp:omemo:2``
<encrypted/>), OpenPGP for XMPP (XEP-0373 <openpgp/>) and legacy OpenPGP (XEP-0027
``jabber:x:encrypted``). Exempt: messages from the server itself or a service (no localpart),
headline, groupchat (not one-to-one), error messages, and messages without a body (chat states,
receipts, markers). The check runs in the recipient's actor before every other message hook,
and in the sender's actor before the XEP-0280 sent copies are made (a refused message has none);
a message to another server's user is checked by the sender's session before it leaves (and
before the archive keeps the sender's copy), one from such a user by its recipient's actor.
"""

from __future__ import annotations

from dataclasses import dataclass

from imactor.server.modules import AccountApi, MessageContext, Module, ModuleConfigError, OutgoingContext
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_CLIENT, qname

MODES = ("off", "allow", "require")

#: (namespace, element) of the end-to-end encrypted payloads recognised.
ENCRYPTED = frozenset({
    qname("eu.siacs.conversations.axolotl", "encrypted"),  # OMEMO 0.3 (XEP-0384 legacy)
    qname("urn:xmpp:omemo:2", "encrypted"),  # OMEMO 2 (XEP-0384)
    qname("urn:xmpp:openpgp:0", "openpgp"),  # XEP-0373
    qname("jabber:x:encrypted", "x"),  # XEP-0027
})  # fmt: skip
BODY = qname(NS_CLIENT, "body")


@dataclass(frozen=True)
class Options:
    mode: str = "allow"  #: "off" (no E2E), "allow" (either), "require" (refuse plaintext)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ModuleConfigError(f"modules.e2e_policy.mode: expected one of {list(MODES)}")


module = Module(
    name="e2e_policy", summary="End-to-end encryption policy", options=Options,
    hook_order=-200,  # before the archive: a refused message is stored nowhere
)  # fmt: skip


def is_encrypted(element: st.Element) -> bool:
    return any(child.tag in ENCRYPTED for child in element)


def is_subject(element: st.Element) -> bool:
    """A one-to-one chat or normal message with a body, from an account (not a service)."""
    if element.get("type", "normal") not in ("chat", "normal"):
        return False
    if element.find(BODY) is None:
        return False
    try:
        sender = JID.parse(element.get("from", ""))
    except InvalidJID:
        return False
    return sender.localpart is not None


@module.on_sent
async def enforce_sent(ctx: MessageContext) -> None:
    """The sender's side: a refused message gets no XEP-0280 <sent/> copies either (the
    recipient's actor refuses it and bounces the error)."""
    await enforce(ctx)


@module.wants_sent
def never_by_itself(account: AccountApi) -> bool:
    """This check only keeps other modules' sent hooks (carbons) from acting on a refused
    message, so it never asks for the sent messages itself: a session hands its messages to the
    account only when another module wants them, and every chat message would otherwise cost a
    second trip to the sender's account."""
    return False


@module.on_outgoing
async def enforce_outgoing(ctx: OutgoingContext) -> None:
    """A message to another server's user: no actor of ours sees it on the recipient's side, so
    the sender's session checks it (before the archive keeps its copy)."""
    check(ctx.stanza, ctx.options.mode, ctx.server.domain)


@module.on_message
async def enforce(ctx: MessageContext) -> None:
    check(ctx.stanza, ctx.options.mode, ctx.server.domain)


def check(element: st.Element, mode: str, domain: str) -> None:
    """Refuse (`StanzaError`) a message the domain's policy `mode` does not let through."""
    if mode == "allow" or not is_subject(element):
        return
    encrypted = is_encrypted(element)
    if mode == "require" and not encrypted:
        raise StanzaError(
            "policy-violation",
            f"{domain} requires end-to-end encryption (OMEMO or OpenPGP): "
            "the message was not delivered",
        )
    if mode == "off" and encrypted:
        raise StanzaError(
            "policy-violation",
            f"{domain} does not permit end-to-end encrypted messages: "
            "the message was not delivered",
        )
