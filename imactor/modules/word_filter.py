"""Sensitive-word filter: word lists per scope that mask, refuse, or report what users write.

Lists live in the database (`imactor.storage.word_lists`) and are administered with
``imactor filter ...`` (docs/word-filter.md). Each list has a name, a scope and an action (a
scope may have several lists: profanity masked, secrets refused, competitors reported):

- scopes: ``server`` (everything), ``domain:<domain>`` (the one-to-one traffic and presence of
  that domain's accounts, and the rooms of its chat service), ``room:<room bare JID>`` (that room);
  every list whose scope covers a stanza applies to it;
- ``mask``: each matched span of the original text becomes one ``*`` per character; the
  stanza goes on (and is archived) masked. A XEP-0071 <html/> body in which a word is found is
  removed: clients show the masked <body/> instead;
- ``reject``: the stanza is refused with ``policy-violation`` (RFC 6120 §8.3.3.12, type modify)
  and a <text/> saying a word is not allowed: it is neither delivered, nor stored offline, nor
  archived (the hook runs before the archive, `hook_order`);
- ``alert``: the stanza is delivered as it is, and the compliance admins (``alert_to``, default
  ``[server] admins``) get a message from the server naming sender, recipient, place and words;
  a warning is logged too.

When words of several actions match one stanza, reject wins; otherwise masks apply and alerts go.

What is checked, where:
- one-to-one messages (<body/>, <subject/>, <html/>): in the recipient's actor before delivery,
  offline storage and the archive (`on_message`), and in the sender's actor before its XEP-0280
  <sent/> copies (`on_sent`, masking or refusing the same way, so no carbon shows what the
  recipient did not get); to another server's user, in the sender's session before it leaves
  (`on_outgoing`: no actor of ours is on the recipient's side). Exempt: error messages,
  messages from the server or a service (no localpart: the alerts themselves), and messages
  from the chat service, already checked there;
- chat rooms (XEP-0045), in the room's actor before the room sees the stanza (`on_room_stanza`):
  groupchat bodies and subject changes, private messages between occupants, nicknames (the
  resource of a presence to the room) and presence status texts. A nickname with a masked or
  refused word is refused (``policy-violation``): a masked nick would no longer be the one the
  client chose, and ``***`` nicks would collide. A refused status text refuses the presence
  (the join, the nick change or the status update), except an exit, which is never refused (its
  status is removed instead);
- the presence an account broadcasts to its contacts (`on_presence`, own presence): a masked
  status is masked; a refused one is removed, the presence still goes out (refusing it would show
  the account as offline), and the sending resource gets a presence error ``policy-violation``.

End-to-end encrypted messages (OMEMO XEP-0384, OpenPGP XEP-0373 and XEP-0027, the payloads
`e2e_policy` recognises) cannot be read. Option ``encrypted``: ``"pass"`` (default) lets them through
unchecked (their <body/> is only a fallback text); ``"reject"`` refuses them with
``policy-violation``. With ``[modules.e2e_policy] mode = "off"`` they are refused before this
check anyway; with ``mode = "require"`` every plaintext message is refused there, so ``"reject"``
here would refuse every one-to-one message: do not combine the two.

Reloading without a restart: each worker keeps one matcher (one Aho-Corasick automaton over every
word of every list, `imactor.wordmatch.Matcher`). At most every ``check_interval`` seconds a
stanza reads the lists' change counter (one small read); when it moved, the lists are read and a
new matcher is built in a thread, while the other stanzas go on with the old one; then one
reference swap puts the new one in place. SIGHUP and the status socket's ``reload-modules`` (which
``imactor filter`` sends after each change) make every worker read the lists at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
from lxml import etree

from imactor.modules.e2e_policy import is_encrypted
from imactor.server.modules import (
    AccountApi,
    MessageContext,
    Module,
    ModuleConfigError,
    OutgoingContext,
    PresenceContext,
    ReloadContext,
    RoomStanzaContext,
    ServerApi,
    storage_failure,
)
from imactor.storage.errors import StorageError
from imactor.storage.word_lists import WordLists
from imactor.wordmatch import Hit, Matcher, WordList, mask
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_CLIENT, qname

if TYPE_CHECKING:
    from imactor.config import Config
    from imactor.storage import Storage

log = logging.getLogger("imactor.word_filter")

ENCRYPTED_POLICIES = ("pass", "reject")
BODY = qname(NS_CLIENT, "body")
SUBJECT = qname(NS_CLIENT, "subject")
STATUS = qname(NS_CLIENT, "status")
XHTML_IM = qname("http://jabber.org/protocol/xhtml-im", "html")
#: Characters of a flagged text quoted in an alert (compliance admins see what was said).
ALERT_EXCERPT = 300
KEY = "modules.word_filter"
REFUSED = "contains a word that is not allowed here"


@dataclass(frozen=True)
class Options:
    alert_to: tuple[str, ...] = ()  #: bare JIDs told of "alert" matches; empty: [server] admins
    encrypted: str = "pass"  #: "pass" or "reject" end-to-end encrypted messages (unreadable)
    check_interval: float = 2.0  #: seconds between two reads of the lists' change counter

    def __post_init__(self) -> None:
        if self.encrypted not in ENCRYPTED_POLICIES:
            raise ModuleConfigError(f"{KEY}.encrypted: expected one of {list(ENCRYPTED_POLICIES)}, "
                                    f"got {self.encrypted!r}")  # fmt: skip
        if not (0 < self.check_interval <= 3600):
            raise ModuleConfigError(f"{KEY}.check_interval: expected seconds in (0, 3600], "
                                    f"got {self.check_interval!r}")  # fmt: skip
        jids: object = self.alert_to  # a TOML array arrives as a list
        if not isinstance(jids, list | tuple):
            raise ModuleConfigError(f"{KEY}.alert_to: expected a list of bare JIDs, got {jids!r}")
        for index, jid in enumerate(jids):
            if not _is_account_jid(jid):
                raise ModuleConfigError(f"{KEY}.alert_to[{index}]: expected a bare JID, got {jid!r}")
        object.__setattr__(self, "alert_to", tuple(jids))


def _is_account_jid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        jid = JID.parse(value)
    except InvalidJID:
        return False
    return jid.localpart is not None and jid.resourcepart is None


module = Module(
    name="word_filter", summary="Sensitive-word filter", options=Options,
    hook_order=-150,  # after e2e_policy, before the archive: a refused message is stored nowhere
)  # fmt: skip


# ---- the worker's matcher ----------------------------------------------------------------------


@dataclass
class _Cache:
    """The matcher of this worker process (one per process, like PEP's caps cache)."""

    storage: Storage | None = None
    matcher: Matcher | None = None
    checked_at: float = -math.inf
    lock: trio.Lock = field(default_factory=trio.Lock)


_CACHE = _Cache()


async def current_matcher(storage: Storage, interval: float, *, force: bool = False) -> Matcher:
    """The worker's matcher, re-read first when due (module docstring).

    While one task reads and rebuilds, the others go on with the matcher in place; only before
    the first load do they wait for it.

    Raises:
        StorageError: the lists could not be read and there is no matcher yet.
    """
    global _CACHE
    if _CACHE.storage is not storage:  # another database (a test's second server in one process)
        _CACHE = _Cache(storage=storage)
    cache = _CACHE
    due = force or time.monotonic() - cache.checked_at >= interval
    if cache.matcher is not None and (not due or (cache.lock.locked() and not force)):
        return cache.matcher
    async with cache.lock:
        if cache.matcher is None or force or time.monotonic() - cache.checked_at >= interval:
            await _refresh(cache, storage)
    assert cache.matcher is not None
    return cache.matcher


async def _refresh(cache: _Cache, storage: Storage) -> None:
    try:
        version = await storage.word_lists.version()
        if cache.matcher is None or version != cache.matcher.version:
            lists = await storage.word_lists.load()
            # Built off the event loop (10,000 words take tens of ms); stanzas meanwhile use the
            # old matcher, and the assignment below is the swap.
            cache.matcher = await trio.to_thread.run_sync(_build, lists)
            log.info("word lists loaded: version %d, %d lists, %d words",
                     lists.version, len(lists.lists), cache.matcher.words)  # fmt: skip
    except StorageError as exc:
        if cache.matcher is None:
            raise
        log.warning("word lists not re-read, the previous ones stay in force: %s", exc)
    cache.checked_at = time.monotonic()


def _build(lists: WordLists) -> Matcher:
    return Matcher([WordList(s.name, s.scope, s.action, s.words) for s in lists.lists], lists.version)


@module.on_reload
async def reload_lists(ctx: ReloadContext) -> None:
    """SIGHUP or ``reload-modules`` (after ``imactor filter ...``): read the lists now."""
    try:
        await current_matcher(ctx.storage, ctx.options.check_interval, force=True)
    except StorageError as exc:
        log.error("word lists could not be read: %s", exc)


# ---- what a scan finds -------------------------------------------------------------------------


@dataclass
class _Scan:
    """The hits of one stanza's texts, by the element each text came from."""

    hits: list[tuple[st.Element, Hit]] = field(default_factory=list)

    def add(self, element: st.Element, hits: Sequence[Hit]) -> None:
        self.hits.extend((element, hit) for hit in hits)

    def of(self, action: str) -> list[tuple[st.Element, Hit]]:
        return [(element, hit) for element, hit in self.hits if hit.action == action]

    def words(self, action: str) -> list[str]:
        return sorted({hit.word for _, hit in self.of(action)})


def _scopes(domain: str, room: JID | None = None) -> frozenset[str]:
    scopes = {"server", f"domain:{domain}"}
    if room is not None:
        scopes.add(f"room:{room}")
    return frozenset(scopes)


def _scan_texts(matcher: Matcher, elements: Iterable[st.Element], scopes: frozenset[str]) -> _Scan:
    scan = _Scan()
    for element in elements:
        text = _text(element) if element.tag == XHTML_IM else (element.text or "")
        scan.add(element, matcher.find(text, scopes))
    return scan


def _message_texts(message: st.Element) -> list[st.Element]:
    return [child for child in message if child.tag in (BODY, SUBJECT, XHTML_IM)]


def _apply_masks(scan: _Scan) -> None:
    """Mask the masked words in their elements; drop an <html/> body that had one."""
    by_element: dict[st.Element, list[Hit]] = {}
    for element, hit in scan.of("mask"):
        by_element.setdefault(element, []).append(hit)
    for element, hits in by_element.items():
        if element.tag == XHTML_IM:
            parent = element.getparent()
            if parent is not None:
                parent.remove(element)
        else:
            element.text = mask(element.text or "", hits)


def _refusal(what: str) -> StanzaError:
    return StanzaError("policy-violation", f"{what} {REFUSED}: it was not delivered")


def _encrypted_refusal(whose: str) -> StanzaError:
    return StanzaError("policy-violation", f"end-to-end encrypted messages cannot be checked by {whose} "
                       "word filter: the message was not delivered")  # fmt: skip


def _text(element: st.Element) -> str:
    return "".join(str(part) for part in element.itertext())


async def _alert(server: ServerApi, config: Config, options: Options, scan: _Scan, *,
                 sender: str, target: str, what: str) -> None:  # fmt: skip
    """Tell the compliance admins, and the log, about the alert-list words of `scan`."""
    alerts = scan.of("alert")
    if not alerts:
        return
    words = scan.words("alert")
    scopes = sorted({f"{hit.list} ({hit.scope})" for _, hit in alerts})
    first = alerts[0][0]
    excerpt = (_text(first) or first.get("to", ""))[:ALERT_EXCERPT]
    log.warning("word filter alert: %s -> %s (%s): words %s of lists %s", sender, target, what, words, scopes)
    recipients = options.alert_to or config.server.admins
    body = (f"Word filter alert: {sender} -> {target} ({what})\n"
            f"words: {', '.join(words)} (lists: {', '.join(scopes)})\n"
            f"text: {excerpt}")  # fmt: skip
    for admin in recipients:
        message = st.make("message", to=admin, from_=server.domain, type_="normal")
        st.child(message, NS_CLIENT, "subject", "Word filter alert")
        st.child(message, NS_CLIENT, "body", body)
        await server.route(message)


# ---- one-to-one messages -----------------------------------------------------------------------


def _account_sender(element: st.Element, config: Config) -> JID | None:
    """The sender, when the message is one to check here (module docstring: exemptions)."""
    if element.get("type", "normal") in ("error", "groupchat"):
        return None
    try:
        sender = JID.parse(element.get("from", ""))
    except InvalidJID:
        return None
    if sender.localpart is None:
        return None
    if config.muc.enabled and sender.domainpart == f"{config.muc.subdomain}.{config.server.domain}":
        return None  # from a room: checked there (private messages and the room's own messages)
    return sender


async def _check_message(ctx: MessageContext | OutgoingContext, *, alerts: bool) -> None:
    """`alerts`: the recipient's side, which also reports and logs (the sender's side only masks
    and refuses, for its carbons)."""
    element = ctx.stanza
    sender = _account_sender(element, ctx.config)
    if sender is None:
        return
    options: Options = ctx.options
    if is_encrypted(element):
        if options.encrypted == "reject":
            raise _encrypted_refusal(f"{ctx.server.domain}'s")
        return
    texts = _message_texts(element)
    if not texts:
        return
    matcher = await _matcher_for_stanza(ctx.storage, options, "the message")
    scan = _scan_texts(matcher, texts, _scopes(ctx.server.domain))
    if not scan.hits:
        return
    if scan.of("reject"):
        if alerts:  # logged once, on the recipient's side
            log.info("word filter refused a message %s -> %s: %s", sender, element.get("to"),
                     scan.words("reject"))  # fmt: skip
        raise _refusal("the message")
    _apply_masks(scan)
    if alerts:
        await _alert(ctx.server, ctx.config, options, scan, sender=str(sender), target=element.get("to", ""),
                     what=f"{element.get('type', 'normal')} message")  # fmt: skip


async def _matcher_for_stanza(storage: Storage, options: Options, what: str) -> Matcher:
    try:
        return await current_matcher(storage, options.check_interval)
    except StorageError as exc:
        # No lists were ever read: refuse rather than let unchecked text through (fail closed).
        raise storage_failure(exc, what) from None


@module.on_message
async def filter_message(ctx: MessageContext) -> None:
    """The recipient's side: mask, refuse or report before delivery, offline storage, archive."""
    await _check_message(ctx, alerts=True)


@module.on_sent
async def filter_sent(ctx: MessageContext) -> None:
    """The sender's side, before its XEP-0280 <sent/> copies: the same masks (the copies show
    what was delivered) and refusals (no copy of a refused message; the recipient's side bounces
    the error). Alerts go from the recipient's side only, once."""
    await _check_message(ctx, alerts=False)


@module.on_outgoing
async def filter_outgoing(ctx: OutgoingContext) -> None:
    """A message to another server's user: no actor of ours is on its recipient's side, so the
    sender's session masks, refuses and reports it before it leaves (and before the archive
    keeps the sender's copy)."""
    await _check_message(ctx, alerts=True)


@module.wants_sent
def never_by_itself(account: AccountApi) -> bool:
    """As `e2e_policy`: only other modules' sent hooks (carbons) need this check, so it never
    makes a session hand over its messages by itself."""
    return False


# ---- chat rooms ------------------------------------------------------------------------------


@module.on_room_stanza
async def filter_room_stanza(ctx: RoomStanzaContext) -> None:
    element = ctx.stanza
    try:
        sender = JID.parse(element.get("from", ""))
        to = JID.parse(element.get("to", ""))
    except InvalidJID:
        return
    if sender.localpart is None:
        return
    options: Options = ctx.options
    scopes = _scopes(ctx.server.domain, ctx.room.jid)
    kind = etree.QName(element).localname
    if kind == "message":
        await _room_message(ctx, element, sender, scopes)
    elif kind == "presence" and element.get("type", "") in ("", "unavailable"):
        matcher = await _matcher_for_stanza(ctx.storage, options, "the presence")
        await _room_presence(ctx, matcher, element, sender, to, scopes)


async def _room_message(
    ctx: RoomStanzaContext, element: st.Element, sender: JID, scopes: frozenset[str]
) -> None:
    options: Options = ctx.options
    if is_encrypted(element):
        if options.encrypted == "reject":
            raise _encrypted_refusal("this room's")
        return
    texts = _message_texts(element)
    if not texts:
        return
    matcher = await _matcher_for_stanza(ctx.storage, options, "the message")
    scan = _scan_texts(matcher, texts, scopes)
    if not scan.hits:
        return
    subject_only = element.find(SUBJECT) is not None and element.find(BODY) is None
    what = "the subject" if subject_only else "the message"
    if scan.of("reject"):
        log.info("word filter refused %s %s -> %s: %s", what, sender, element.get("to"), scan.words("reject"))
        raise _refusal(what)
    _apply_masks(scan)
    what = "room subject" if subject_only else f"room {element.get('type', 'normal')} message"
    await _alert(ctx.server, ctx.config, options, scan, sender=str(sender), target=element.get("to", ""),
                 what=what)  # fmt: skip


async def _room_presence(ctx: RoomStanzaContext, matcher: Matcher, element: st.Element, sender: JID, to: JID,
                         scopes: frozenset[str]) -> None:  # fmt: skip
    options: Options = ctx.options
    leaving = element.get("type") == "unavailable"
    nick = to.resourcepart
    if nick and not leaving:
        hits = matcher.find(nick, scopes)
        if any(hit.action in ("mask", "reject") for hit in hits):
            log.info("word filter refused the nick %r of %s in %s", nick, sender, ctx.room.jid)
            raise StanzaError("policy-violation", f"the nickname {REFUSED}: choose another")
        nick_scan = _Scan()
        nick_scan.add(st.make("presence", to=str(to)), hits)  # the excerpt: the occupant JID
        await _alert(ctx.server, ctx.config, options, nick_scan, sender=str(sender), target=str(to),
                     what="room nickname")  # fmt: skip
    scan = _scan_texts(matcher, element.findall(STATUS), scopes)
    if not scan.hits:
        return
    if scan.of("reject"):
        if not leaving:
            raise _refusal("the status text")
        for status in {id(e): e for e, _ in scan.of("reject")}.values():
            element.remove(status)
    _apply_masks(scan)
    await _alert(ctx.server, ctx.config, options, scan, sender=str(sender), target=str(to),
                 what="room status")  # fmt: skip


# ---- presence to contacts ----------------------------------------------------------------------


@module.on_presence
async def filter_status(ctx: PresenceContext) -> None:
    """The account's own presence, before it is broadcast (module docstring)."""
    if not ctx.own:
        return
    element = ctx.stanza
    statuses = element.findall(STATUS)
    if not statuses:
        return
    options: Options = ctx.options
    try:
        matcher = await current_matcher(ctx.storage, options.check_interval)
    except StorageError as exc:  # a presence hook refuses nothing: the status goes out unchecked
        log.error("word lists could not be read; a status text went out unchecked: %s", exc)
        return
    scan = _scan_texts(matcher, statuses, _scopes(ctx.server.domain))
    if not scan.hits:
        return
    sender = element.get("from", str(ctx.account.jid))
    refused = scan.of("reject")
    if refused:
        for status in {id(e): e for e, _ in refused}.values():
            element.remove(status)
        _tell_refused_status(ctx.account, element, ctx.server.domain)
    _apply_masks(scan)
    await _alert(ctx.server, ctx.config, options, scan, sender=sender, target="contacts",
                 what="presence status")  # fmt: skip


def _tell_refused_status(account: AccountApi, presence: st.Element, domain: str) -> None:
    """A presence error to the resource whose status was removed (RFC 6120 §8.3.3.12)."""
    try:
        resource = JID.parse(presence.get("from", "")).resourcepart
    except InvalidJID:
        return
    if resource is None:
        return
    error = st.error_reply(presence, _refusal("the status text"))
    error.set("from", domain)
    error.set("to", str(account.jid.with_resource(resource)))
    account.send_to_resource(resource, error)
