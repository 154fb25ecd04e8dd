"""XEP-0313: Message Archive Management, for one-to-one chat, with XEP-0359 stanza ids.

(The archives of chat rooms are the `muc_mam` module's, which answers their queries with
`answer_query` below.)

What is archived (XEP-0313 §6): chat and normal messages with a <body/> between accounts of this
server, and between them and users of other servers (or components), unless they carry a
XEP-0334 <no-store/> or <no-permanent-store/> hint; never groupchat, headline or error messages.
Each such message goes to BOTH archives of ours: the recipient's (direction "in") and, when the
sender is another local account, the sender's own copy (direction "out").

Where both copies are written: in the recipient's `UserActor`, by a message hook that runs when
that actor has accepted the message for delivery or offline storage (after the block list and
RFC 6121 checks), *before* the message is delivered (durability first). One `append_wanted`
write, group-committed by the storage writer, appends both rows in one transaction and applies
each account's preferences there, so no actor ever waits on another's mailbox, the two archives
cannot disagree, and a bounced message (unknown account, blocked, offline storage full) is in
neither. The storage is shared by every worker, so this holds when sender and recipient live in
different workers. A failed archive write refuses the message with `internal-server-error`.
A message to another server's user reaches no actor of ours: the sender's copy is written in
the sender's session before the message leaves (`archive_sent`, an `on_outgoing` hook), with an
id of its own; one from such a user is archived by its recipient's actor as above ("in" only).

Both copies share one stanza id, unique within each archive: the recipient's copy gets
``<stanza-id xmlns='urn:xmpp:sid:0' by='<recipient bare JID>' id='…'/>`` (the sender finds the
same id in its own archive). Stanza-ids a client put in the message with a `by` of this domain or
one of its accounts are removed first (XEP-0359 §5); the client's <origin-id/> is kept.

Queries (urn:xmpp:mam:2, only on one's own archive): form fields `with` (bare JID, or full JID
for one resource), `start`, `end`, `after-id`, `before-id` (exclusive); XEP-0059 paging with
`max` (capped by `max_page_size`), `after`, `before` (empty: the last page; `index` is refused
with feature-not-implemented); results go to the querying resource, then the IQ result with
<fin complete?><set first/last/count/></fin> (complete: the page reaches the end of the result set
in its reading direction; <first index> only on pages read forwards).
Preferences (§6): default always/roster/never with always/never lists, applied when archiving;
`default_mode` is the default of accounts that never set theirs.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from imactor.ids import random_id
from imactor.server.modules import (
    AccountApi,
    IqContext,
    MessageContext,
    Module,
    ModuleConfigError,
    OutgoingContext,
    Scope,
    Xep,
    storage_failure,
)
from imactor.storage import (
    ARCHIVE_MODES,
    ArchiveEntry,
    ArchiveFilter,
    ArchiveItemNotFound,
    ArchivePage,
    ArchivePrefs,
    StorageError,
)
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_CLIENT, NS_DATA_FORMS, NS_DELAY, NS_SID, qname

NS_MAM = "urn:xmpp:mam:2"
NS_MAM_EXTENDED = "urn:xmpp:mam:2#extended"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
NS_HINTS = "urn:xmpp:hints"

#: The form fields a query may use (XEP-0313 §4.1, with the #extended ids).
FIELDS = ("with", "start", "end", "after-id", "before-id")


@dataclass(frozen=True)
class Options:
    max_page_size: int = 250  #: most results per page (and the page size when a query sets none)
    default_mode: str = "always"  #: archiving default of accounts without preferences

    def __post_init__(self) -> None:
        if self.default_mode not in ARCHIVE_MODES:
            raise ModuleConfigError(f"modules.mam.default_mode: expected one of {sorted(ARCHIVE_MODES)}")
        if self.max_page_size < 1:
            raise ModuleConfigError("modules.mam.max_page_size: expected a positive integer")


module = Module(
    name="mam", summary="Message Archive Management",
    xeps=(Xep("0313", "1.1.3", "partial: chat archives, no pubsub archives, no 'ids' field"),
          Xep("0359", "0.7.0", "complete"), Xep("0059", "1.0", "partial: MAM paging, no <index/> requests")),
    features=(NS_SID, NS_RSM), account_features=(NS_MAM, NS_MAM_EXTENDED), options=Options,
)  # fmt: skip


# ---- archiving ---------------------------------------------------------------------------------


@module.on_message
async def archive(ctx: MessageContext) -> None:
    """Archive an inbound message in the recipient's and the sender's archives (docstring)."""
    element = ctx.stanza
    if not archivable(element):
        return
    domain = ctx.server.domain
    _strip_our_stanza_ids(element, domain)
    account = ctx.account
    sender = JID.parse(element.get("from", ""))
    recipient = JID.parse(element.get("to", ""))
    # One id per message, also when its sender routed it again (the archive keeps one row).
    stanza_id = stable_id(ctx.message_key) if ctx.message_key else random_id(12)
    data = st.serialize(element)
    sender_resource = sender.resourcepart or ""
    entries = [ArchiveEntry(account.username, stanza_id, str(sender.bare), "in", data, sender_resource)]
    sender_account = ctx.server.account_of(sender)  # a local sender: its own copy too
    if sender_account is not None and sender.bare != account.jid:
        to_resource = recipient.resourcepart or ""
        entries.append(ArchiveEntry(sender_account, stanza_id, str(account.jid), "out", data, to_resource))
    try:
        kept = await ctx.storage.archive.append_wanted(entries, ctx.options.default_mode)
    except StorageError as exc:
        # Refused rather than delivered unarchived: the sender learns it was not kept (a full
        # disk: resource-constraint, wait), and no stanza-id names a row that does not exist.
        raise storage_failure(exc, "the message") from exc
    if any(entry.username == account.username for entry in kept):
        sid = st.child(element, NS_SID, "stanza-id")
        sid.set("by", str(account.jid))
        sid.set("id", stanza_id)


@module.on_outgoing
async def archive_sent(ctx: OutgoingContext) -> None:
    """Archive a message to another server's user (or a component's) in the sender's archive.

    No actor of ours sees it again (the recipient's archive, if any, is that server's), so the
    sender's copy ("out") is written here, in its session, before the message leaves: as for
    local chats, a message the archive cannot keep is refused, not sent unarchived."""
    element = ctx.stanza
    if not archivable(element):
        return
    recipient = JID.parse(element.get("to", ""))
    sender_account = ctx.server.account_of(ctx.sender)
    if sender_account is None:
        return
    kept = copy.deepcopy(element)  # the archived copy: without stanza-ids claiming to be ours
    _strip_our_stanza_ids(kept, ctx.server.domain)
    entry = ArchiveEntry(sender_account, random_id(12), str(recipient.bare), "out", st.serialize(kept),
                         recipient.resourcepart or "")  # fmt: skip
    try:
        await ctx.storage.archive.append_wanted([entry], ctx.options.default_mode)
    except StorageError as exc:
        raise storage_failure(exc, "the message") from exc


def stable_id(key: str) -> str:
    """A stanza-id for the message `key` names: the same for every route of it, and as hard to
    guess as the key (which starts with the sending session's random id)."""
    digest = hashlib.blake2b(key.encode(), digest_size=9, person=b"imactor-sid").digest()
    return base64.urlsafe_b64encode(digest).decode()


def archivable(element: st.Element) -> bool:
    """XEP-0313 §6 / XEP-0334: chat or normal, with a body, and no storage-refusing hint."""
    if element.get("type", "normal") not in ("chat", "normal"):
        return False
    if element.find(qname(NS_CLIENT, "body")) is None:
        return False
    hints = (qname(NS_HINTS, "no-store"), qname(NS_HINTS, "no-permanent-store"))
    return not any(child.tag in hints for child in element)


def _strip_our_stanza_ids(element: st.Element, domain: str) -> None:
    for sid in element.findall(qname(NS_SID, "stanza-id")):
        try:
            by = JID.parse(sid.get("by", ""))
        except InvalidJID:
            continue
        if by.domainpart == domain:
            element.remove(sid)


# ---- queries ---------------------------------------------------------------------------------


@module.iq("get", NS_MAM, "query", scope=Scope.ACCOUNT)
async def query_form(ctx: IqContext) -> st.Element:
    """§4.1.5: the form fields a query may use."""
    _own(ctx)
    return query_form_reply(ctx.stanza, ctx.from_jid)


def query_form_reply(request: st.Element, requester: JID) -> st.Element:
    """§4.1.5: the form fields a query of an archive (an account's or a room's) may use."""
    reply = st.iq_result(request)
    reply.set("to", str(requester))
    form = st.child(st.child(reply, NS_MAM, "query"), NS_DATA_FORMS, "x")
    form.set("type", "form")
    form_type = _field(form, "FORM_TYPE", "hidden")
    st.child(form_type, NS_DATA_FORMS, "value", NS_MAM)
    _field(form, "with", "jid-single")
    _field(form, "start", "text-single")
    _field(form, "end", "text-single")
    _field(form, "after-id", "text-single")
    _field(form, "before-id", "text-single")
    return reply


@module.iq("set", NS_MAM, "query", scope=Scope.ACCOUNT)
async def query(ctx: IqContext) -> st.Element:
    account = _own(ctx)
    resource = ctx.from_jid.resourcepart or ""

    async def fetch(where: ArchiveFilter, after: str | None, before: str | None, backwards: bool,
                    limit: int) -> ArchivePage:  # fmt: skip
        return await ctx.storage.archive.query(
            account.username, where, after=after, before=before, backwards=backwards, limit=limit
        )

    async def send(message: st.Element) -> None:
        account.send_to_resource(resource, message)

    return await answer_query(ctx.stanza, ctx.from_jid, account.jid, fetch, send, ctx.options.max_page_size)


#: Reads one page: (filter, after, before, backwards, limit) → the page.
PageFetch = Callable[[ArchiveFilter, str | None, str | None, bool, int], Awaitable[ArchivePage]]


async def answer_query(
    request: st.Element, requester: JID, archive: JID, fetch: PageFetch,
    send: Callable[[st.Element], Awaitable[None]], max_page_size: int,
) -> st.Element:  # fmt: skip
    """XEP-0313 §4: one query of the archive of `archive` (an account's or a room's bare JID):
    each result is `send` as a message to `requester`; the returned IQ result ends the query.

    Raises:
        StanzaError: a malformed query (`bad-request`), or an unknown id (`item-not-found`).
    """
    payload = request[0]
    where = _filter(payload)
    after, before, backwards, limit = _paging(payload, max_page_size)
    try:
        page = await fetch(where, after, before, backwards, limit)
    except ArchiveItemNotFound as exc:
        raise StanzaError("item-not-found", f"no archived message {exc.args[0]!r}") from exc
    query_id = payload.get("queryid")
    for item in page.items:
        message = st.make("message", to=requester, from_=archive, id_=secrets.token_hex(8))
        result = st.child(message, NS_MAM, "result")
        if query_id is not None:
            result.set("queryid", query_id)
        result.set("id", item.stanza_id)
        forwarded = st.child(result, NS_FORWARD, "forwarded")
        st.child(forwarded, NS_DELAY, "delay").set("stamp", _stamp(item.timestamp))
        forwarded.append(st.parse(item.stanza))
        await send(message)
    reply = st.iq_result(request)
    reply.set("to", str(requester))
    # XEP-0313 §4.3.2: 'complete' once the page reaches the end of the result set in its reading
    # direction: the newest message forwards, the oldest one backwards (<before/>); the client needs
    # no further page that way. <first index> is optional there and clients MUST NOT depend on it:
    # it is left out of pages read backwards. Its XEP-0059 §2.2 value on the newest page
    # (count - items) reads as "the end of the set" to iterators that assume forward paging
    # (slixmpp's ResultIterator stops on index + items == count in either direction), which
    # ended a backward walk after its first page.
    fin = st.child(reply, NS_MAM, "fin")
    if page.complete:
        fin.set("complete", "true")
    rsm = st.child(fin, NS_RSM, "set")
    if page.items:
        first = st.child(rsm, NS_RSM, "first", page.items[0].stanza_id)
        if not backwards:
            first.set("index", str(page.first_index or 0))
        st.child(rsm, NS_RSM, "last", page.items[-1].stanza_id)
    st.child(rsm, NS_RSM, "count", str(page.count))
    return reply


def _filter(payload: st.Element) -> ArchiveFilter:
    form = payload.find(qname(NS_DATA_FORMS, "x"))
    if form is None:
        return ArchiveFilter()
    if form.get("type", "submit") != "submit":
        raise StanzaError("bad-request", "the query form must be submitted (type='submit')")
    values: dict[str, str] = {}
    for field in form.findall(qname(NS_DATA_FORMS, "field")):
        var = field.get("var", "")
        value = (field.findtext(qname(NS_DATA_FORMS, "value")) or "").strip()
        if var == "FORM_TYPE":
            if value != NS_MAM:
                raise StanzaError("bad-request", f"FORM_TYPE must be {NS_MAM}")
            continue
        if var not in FIELDS:
            raise StanzaError("bad-request", f"unsupported field {var!r}")
        if value:
            values[var] = value
    with_jid = with_resource = None
    if "with" in values:
        try:
            jid = JID.parse(values["with"])
        except InvalidJID as exc:
            raise StanzaError("bad-request", f"invalid JID in 'with': {values['with']!r}") from exc
        with_jid, with_resource = str(jid.bare), jid.resourcepart
    # Stamps have microsecond precision: widen by half of one so that the bounds are inclusive.
    start = _time(values, "start")
    end = _time(values, "end")
    start = None if start is None else start - 5e-7
    end = None if end is None else end + 5e-7
    return ArchiveFilter(with_jid, with_resource, start, end, values.get("after-id"), values.get("before-id"))


def _paging(payload: st.Element, max_page_size: int) -> tuple[str | None, str | None, bool, int]:
    """XEP-0059: (after, before, backwards, limit)."""
    rsm = payload.find(qname(NS_RSM, "set"))
    if rsm is None:
        return None, None, False, max_page_size
    if rsm.find(qname(NS_RSM, "index")) is not None:
        # XEP-0059 §2.6: a page by position is not served (the storage pages by id only); the
        # error says so rather than answering with the first page, whose <first index='0'> would
        # contradict the index asked for (which §2.6 says it MUST equal).
        raise StanzaError("feature-not-implemented", "<index/> is not supported: use <after/> or <before/>")
    limit = max_page_size
    max_text = rsm.findtext(qname(NS_RSM, "max"))
    if max_text is not None:
        try:
            requested = int(max_text.strip())
        except ValueError as exc:
            raise StanzaError("bad-request", "<max/> must be a non-negative integer") from exc
        if requested < 0:
            raise StanzaError("bad-request", "<max/> must be a non-negative integer")
        limit = min(requested, max_page_size)
    after = before = None
    after_element = rsm.find(qname(NS_RSM, "after"))
    if after_element is not None:
        after = (after_element.text or "").strip()
        if not after:
            raise StanzaError("bad-request", "<after/> needs a result id")
    before_element = rsm.find(qname(NS_RSM, "before"))
    backwards = before_element is not None
    if before_element is not None:
        before = (before_element.text or "").strip() or None  # empty: the last page
    return after, before, backwards, limit


def _time(values: dict[str, str], name: str) -> float | None:
    """A XEP-0082 DateTime field as unix time; one without a zone is taken as UTC."""
    text = values.get(name)
    if text is None:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise StanzaError("bad-request", f"{name!r} is not a XEP-0082 DateTime: {text!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _stamp(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _field(form: st.Element, var: str, type_: str) -> st.Element:
    field = st.child(form, NS_DATA_FORMS, "field")
    field.set("var", var)
    field.set("type", type_)
    return field


# ---- preferences -----------------------------------------------------------------------------


@module.iq("get", NS_MAM, "prefs", scope=Scope.ACCOUNT)
async def prefs_get(ctx: IqContext) -> st.Element:
    account = _own(ctx)
    prefs = await ctx.storage.archive.get_prefs(account.username) or ArchivePrefs(ctx.options.default_mode)
    return _prefs_reply(ctx, prefs)


@module.iq("set", NS_MAM, "prefs", scope=Scope.ACCOUNT)
async def prefs_set(ctx: IqContext) -> st.Element:
    account = _own(ctx)
    payload = ctx.payload
    default = payload.get("default", ctx.options.default_mode)
    if default not in ARCHIVE_MODES:
        raise StanzaError("bad-request", f"default must be one of {sorted(ARCHIVE_MODES)}")
    prefs = ArchivePrefs(default, _jids(payload, "always"), _jids(payload, "never"))
    await ctx.storage.archive.set_prefs(account.username, prefs)
    return _prefs_reply(ctx, prefs)


def _jids(payload: st.Element, list_name: str) -> tuple[str, ...]:
    found: list[str] = []
    container = payload.find(qname(NS_MAM, list_name))
    if container is None:
        return ()
    for element in container.findall(qname(NS_MAM, "jid")):
        try:
            jid = str(JID.parse((element.text or "").strip()).bare)
        except InvalidJID as exc:
            raise StanzaError("bad-request", f"invalid JID {element.text!r} in <{list_name}/>") from exc
        if jid not in found:
            found.append(jid)
    return tuple(found)


def _prefs_reply(ctx: IqContext, prefs: ArchivePrefs) -> st.Element:
    reply = st.iq_result(ctx.stanza)
    reply.set("to", str(ctx.from_jid))
    element = st.child(reply, NS_MAM, "prefs")
    element.set("default", prefs.default)
    for list_name, jids in (("always", prefs.always), ("never", prefs.never)):
        container = st.child(element, NS_MAM, list_name)
        for jid in jids:
            st.child(container, NS_MAM, "jid", jid)
    return reply


def _own(ctx: IqContext) -> AccountApi:
    if ctx.account is None or not ctx.is_self:
        raise StanzaError("forbidden", "an archive belongs to its account")
    return ctx.account
