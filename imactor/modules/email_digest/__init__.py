"""Offline-message email digests: one mail per quiet period to an account that missed messages.

When a chat or normal message with a body (or an end-to-end encrypted payload) is stored offline
for an account (`on_delivered` with `offline`), the account's actor notes its sender (and its
text, only with ``include_text``) in the account's pending digest, a table of the database
(`imactor.storage.email`): the first such message opens a digest due ``quiet_period`` seconds
later, and the later ones join it. When one of the account's resources sends available presence
before then (it logged in and got its offline messages), the digest is dropped: the user saw
them. When it comes due, one mail goes to the account's address: the company directory's email
of the person (the ``directory`` module's table), else the first address of the account's vCard
(EMAIL/USERID); no address, an account that turned digests off or that an administrator
disabled (XEP-0133), and nothing is sent.

The mail lists the senders (the directory's display names where known, else the bare JIDs) and
how many messages each sent; the text of the messages only with ``include_text = true`` (default
false: a mailbox is not the chat's end-to-end encrypted channel, and many relays are third
parties).

Who sends: a background task on the first worker of every node (`Module.background`, worker 0).
A task *claims* a due digest in the database before sending it (an UPDATE only one caller can
win, of any process or node) for a lease of ``10 × timeout + 60`` seconds, sends it through the
relay in a thread, then deletes it. So a restart or a failover loses nothing (the digest is in
the database, the next task finds it due) and sends nothing twice, except in one window: a
sender that dies after the relay accepted the mail and before it deleted the digest. The digest
is then sent again once the lease ends, with the same Message-ID. A relay that is down or answers
with a 4yz reply is tried again after ``retry_base`` seconds, doubled each time up to
``retry_max``, at most ``max_attempts`` times in all; a 5yz reply (a refused address) ends the
digest at once. Each failure is logged; message delivery never waits for the relay.

Turning it off and on: ``imactor user notify USER on|off`` (the administrator), or from the
account's client, an IQ to its own bare JID in the namespace ``urn:imactor:email-notify:0``::

    <iq type='set'><notify xmlns='urn:imactor:email-notify:0' enabled='false'/></iq>
    <iq type='get'><notify xmlns='urn:imactor:email-notify:0'/></iq>
      → <notify enabled='true|false' address='where digests go, if known'/>

docs/email.md describes the options (the relay: host, port, STARTTLS, implicit TLS, login).
The parts: `address.py` (where a digest goes, senders' names), `compose.py` (the mail),
`relay.py` (SMTP in a thread, the retry schedule); the table: `imactor.storage.email`.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from imactor.modules.email_digest import relay as smtp
from imactor.modules.email_digest.address import ADDRESS, names, recipient
from imactor.modules.email_digest.compose import DigestMail, Entry, compose
from imactor.server.modules import (
    DeliveredContext,
    IqContext,
    Module,
    ModuleConfigError,
    PresenceContext,
    Scope,
    TaskContext,
)
from imactor.storage import StorageError
from imactor.storage.email import Digest
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_CLIENT, qname

log = logging.getLogger("imactor.modules.email_digest")

NS_NOTIFY = "urn:imactor:email-notify:0"
BODY = qname(NS_CLIENT, "body")
ENCRYPTED = frozenset({
    qname("eu.siacs.conversations.axolotl", "encrypted"), qname("urn:xmpp:omemo:2", "encrypted"),
    qname("urn:xmpp:openpgp:0", "openpgp"), qname("jabber:x:encrypted", "x"),
})  # fmt: skip
_PENDING = "email_digest.pending"  #: account state: a digest may be pending (unknown: True)


@dataclass(frozen=True)
class Options:
    quiet_period: float = 600.0  #: seconds from the first unseen message to the mail
    include_text: bool = False  #: put the messages' text in the mail (confidentiality: off)
    from_address: str = ""  #: the mails' From (required)
    smtp_host: str = "localhost"
    smtp_port: int = 0  #: 0: 465 with ``smtp_tls``, else 587
    smtp_starttls: str = "required"  #: "required", "optional" or "off"
    smtp_tls: bool = False  #: implicit TLS (SMTPS) instead of STARTTLS
    smtp_username: str = ""  #: log in when set
    smtp_password: str = ""
    smtp_password_file: str = ""  #: read at each send, instead of ``smtp_password``
    smtp_ca_file: str = ""  #: CA certificates for the relay's (default: the system's)
    smtp_verify: bool = True  #: check the relay's certificate (off: only for a test relay)
    timeout: float = 30.0  #: seconds for each step of a conversation with the relay
    max_attempts: int = 8  #: sends of one digest before it is given up
    retry_base: float = 60.0  #: seconds before the second attempt, doubled after each failure
    retry_max: float = 3600.0  #: longest wait between attempts
    poll_interval: float = 5.0  #: how often the sender looks for due digests

    def __post_init__(self) -> None:
        def bad(key: str, what: str) -> ModuleConfigError:
            return ModuleConfigError(f"modules.email_digest.{key}: {what}")

        if not ADDRESS.fullmatch(self.from_address):
            raise bad("from_address", f"expected an email address, got {self.from_address!r}")
        if self.smtp_starttls not in smtp.STARTTLS_MODES:
            raise bad("smtp_starttls", f"expected one of {', '.join(smtp.STARTTLS_MODES)}")
        if not 0 <= self.smtp_port <= 65535:
            raise bad("smtp_port", "expected a port number (0: the default)")
        if self.smtp_password and self.smtp_password_file:
            raise bad("smtp_password_file", "set smtp_password or smtp_password_file, not both")
        if self.smtp_password_file and not Path(self.smtp_password_file).is_file():
            raise bad("smtp_password_file", f"no such file: {self.smtp_password_file}")
        for key in ("quiet_period", "timeout", "retry_base", "retry_max", "poll_interval"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise bad(key, "expected a positive number of seconds")
        if self.max_attempts < 1:
            raise bad("max_attempts", "expected a positive integer")

    @property
    def relay(self) -> smtp.Relay:
        port = self.smtp_port or (465 if self.smtp_tls else 587)
        return smtp.Relay(self.smtp_host, port, self.smtp_starttls, self.smtp_tls, self.smtp_username,
                          self.smtp_password, self.smtp_password_file, self.timeout, self.smtp_ca_file,
                          self.smtp_verify)  # fmt: skip

    @property
    def lease(self) -> float:
        """How long a sender holds a digest: longer than any one conversation with the relay."""
        return 10 * self.timeout + 60


# The digest counts what the offline module stores: without it nothing is ever stored offline.
module = Module(name="email_digest", summary="Offline-message email digests", options=Options,
                depends=("offline",), account_features=(NS_NOTIFY,))  # fmt: skip


# ---- noting messages and logins (in the account's actor) ------------------------------------------


@module.on_delivered
async def note_offline(ctx: DeliveredContext) -> None:
    if not ctx.offline:
        return
    element = ctx.stanza
    if element.get("type", "normal") not in ("chat", "normal"):
        return
    body = element.find(BODY)
    if body is None and not any(child.tag in ENCRYPTED for child in element):
        return
    try:
        sender = JID.parse(element.get("from", "")).bare
    except ValueError:
        return
    options: Options = ctx.options
    text = ""
    if options.include_text:
        text = (body.text or "") if body is not None else "(an encrypted message)"
    try:
        await ctx.storage.email.add(ctx.account.username, str(sender), text,
                                    quiet_period=options.quiet_period)  # fmt: skip
    except StorageError as exc:
        # The message itself is stored; only its mention in a mail is lost.
        log.warning("email digest: could not note a message for %s: %s", ctx.account.username, exc)
        return
    ctx.account.account_state()[_PENDING] = True


@module.on_presence
async def note_login(ctx: PresenceContext) -> None:
    if not ctx.own or ctx.stanza.get("type", "") != "":
        return
    state = ctx.account.account_state()
    if not state.get(_PENDING, True):
        return
    try:
        await ctx.storage.email.seen(ctx.account.username)
    except StorageError as exc:
        log.warning("email digest: could not drop the digest of %s: %s", ctx.account.username, exc)
        return
    state[_PENDING] = False


# ---- turning it on and off from a client -----------------------------------------------------------


@module.iq("get", NS_NOTIFY, "notify", scope=Scope.ACCOUNT)
async def get_notify(ctx: IqContext) -> st.Element:
    username = _own(ctx)
    try:
        enabled = await ctx.storage.email.enabled(username)
        address, _ = await recipient(ctx.storage, username)
    except StorageError as exc:
        raise StanzaError("internal-server-error", "the setting could not be read") from exc
    reply = st.iq_result(ctx.stanza)
    notify = st.child(reply, NS_NOTIFY, "notify")
    notify.set("enabled", "true" if enabled else "false")
    if address:
        notify.set("address", address)
    return reply


@module.iq("set", NS_NOTIFY, "notify", scope=Scope.ACCOUNT)
async def set_notify(ctx: IqContext) -> st.Element:
    username = _own(ctx)
    value = ctx.payload.get("enabled")
    if value not in ("true", "false", "1", "0"):
        raise StanzaError("bad-request", "enabled must be true or false")
    try:
        await ctx.storage.email.set_enabled(username, value in ("true", "1"))
    except StorageError as exc:
        raise StanzaError("internal-server-error", "the setting could not be stored") from exc
    return st.iq_result(ctx.stanza)


def _own(ctx: IqContext) -> str:
    if ctx.account is None or not ctx.is_self:
        raise StanzaError("forbidden", "only the account itself may see or change this")
    return ctx.account.username


# ---- sending (a background task on each node's first worker) ---------------------------------------


@module.background
async def send_digests(ctx: TaskContext) -> None:
    if ctx.worker != 0:
        return  # one sender per node; the claims keep the nodes of a cluster apart
    options: Options = ctx.options
    while True:
        try:
            for username in await ctx.storage.email.due(time.time()):
                digest = await ctx.storage.email.claim(username, time.time(), options.lease)
                if digest is not None:
                    await _send(ctx, options, digest)
        except StorageError as exc:
            log.warning("email digest: the database failed, trying again later: %s", exc)
        await trio.sleep(options.poll_interval)


async def _send(ctx: TaskContext, options: Options, digest: Digest) -> None:
    storage, username = ctx.storage, digest.username
    address, name = await recipient(storage, username)
    if (not digest.entries or not address or not await storage.email.enabled(username)
            or await storage.accounts.is_disabled(username)):  # fmt: skip
        log.debug("email digest: nothing to send for %s (no address, turned off, or disabled)", username)
        await storage.email.finish(digest, quiet_period=options.quiet_period)
        return
    domain = ctx.config.server.domain
    mail = DigestMail(digest.digest_id, address, name, str(ctx.server.account_jid(username)),
                      [Entry(e.sender, e.text, e.stored_at) for e in digest.entries])  # fmt: skip
    message = compose(mail, from_address=options.from_address, names=await names(storage, domain),
                      include_text=options.include_text, domain=domain, now=time.time())  # fmt: skip
    attempt = digest.attempts + 1
    try:
        # Abandoned on cancellation (the worker stops): the claim's lease then runs out and
        # the digest is sent again later, with the same Message-ID.
        await trio.to_thread.run_sync(
            functools.partial(smtp.send, options.relay, message, options.from_address, address),
            abandon_on_cancel=True,
        )
    except smtp.RelayError as exc:
        if exc.permanent or attempt >= options.max_attempts:
            log.error("email digest for %s to %s given up after %d attempts: %s", username, address,
                      attempt, exc)  # fmt: skip
            await storage.email.finish(digest, quiet_period=options.quiet_period)
            return
        delay = smtp.retry_delay(attempt, base=options.retry_base, cap=options.retry_max)
        log.warning("email digest for %s to %s failed (attempt %d of %d), next in %.0f s: %s",
                    username, address, attempt, options.max_attempts, delay, exc)  # fmt: skip
        await storage.email.retry(username, time.time() + delay)
        return
    await storage.email.finish(digest, quiet_period=options.quiet_period)
    log.info("email digest for %s sent to %s (%d messages)", username, address, len(digest.entries))
