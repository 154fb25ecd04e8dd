"""Company directory: departments as shared roster groups, XEP-0055 search, vCards from the directory.

The directory (departments in a tree, people with title, phone and e-mail: `imactor.directory.org`)
lives in the database and is replaced by ``imactor org import FILE`` (docs/directory.md).

- Shared roster groups (as Prosody's mod_groups and ejabberd's mod_shared_roster): every member's
  roster lists their colleagues (``share``: ``"department"``, ``"parents"``, ``"company"`` or
  ``"none"``, `imactor.directory.org`) with subscription ``both``, the colleague's display name
  and their department's name as the group. Nothing is stored per pair: each account's actor asks
  this module when it starts (`Module.shared_roster`), and presence flows between colleagues as
  between subscribed contacts (broadcast, probes at login). A user may rename a colleague or add
  groups; removing one or cancelling its subscription is refused or ignored.
- After an import the command tells the running server (``reload-modules``, as SIGHUP does): each
  worker re-reads the directory, and each account's actor pushes what changed in its roster
  (RFC 6121 §2.1.6) and sends its presence to new colleagues, or unavailable to former ones.
- XEP-0055 search at ``search.<domain>`` (``subdomain``), for the server's own accounts, by name,
  department, title and e-mail, with XEP-0004 forms and XEP-0059 paging (`search.py`).
- vCards (XEP-0054): a member's vCard shows the directory's FN, ORG, TITLE, EMAIL and TEL where
  the member has not set their own (`vcards.py`, called by the ``vcard`` module).

Each worker keeps one copy of the directory in memory, read again when the change counter moved
(one small read at most every ``check_interval`` seconds, and at once on reload).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from imactor.directory.org import SHARE_POLICIES, Directory
from imactor.modules.directory import search, vcards
from imactor.server.modules import (
    EnabledModule,
    IqContext,
    Module,
    ModuleConfigError,
    ReloadContext,
    Scope,
    ServiceSpec,
    SharedRoster,
    SharedRosterContext,
    Xep,
)
from imactor.storage.errors import StorageError
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.roster import RosterItem

if TYPE_CHECKING:
    from imactor.storage import Storage

log = logging.getLogger("imactor.directory")

KEY = "modules.directory"
DEFAULT_INTERVAL = 5.0


@dataclass(frozen=True)
class Options:
    share: str = "department"  #: whom a member's roster lists: "department", "parents", "company", "none"
    subdomain: str = "search"  #: the XEP-0055 service: search.<domain>
    max_results: int = 50  #: people per search answer (and per XEP-0059 page)
    check_interval: float = DEFAULT_INTERVAL  #: seconds between two reads of the change counter

    def __post_init__(self) -> None:
        if self.share not in SHARE_POLICIES:
            raise ModuleConfigError(f"{KEY}.share: expected one of {list(SHARE_POLICIES)}, "
                                    f"got {self.share!r}")  # fmt: skip
        if not self.subdomain or "." in self.subdomain or "@" in self.subdomain or "/" in self.subdomain:
            raise ModuleConfigError(f"{KEY}.subdomain: expected one DNS label, got {self.subdomain!r}")
        if not (1 <= self.max_results <= 1000):
            raise ModuleConfigError(f"{KEY}.max_results: expected 1 to 1000, got {self.max_results!r}")
        if not (0 < self.check_interval <= 3600):
            raise ModuleConfigError(f"{KEY}.check_interval: expected seconds in (0, 3600], "
                                    f"got {self.check_interval!r}")  # fmt: skip


module = Module(
    name="directory", summary="Company directory",
    xeps=(Xep("0055", "1.3", "complete: the company directory at search.<domain>, with forms and paging"),
          Xep("0059", "1.0", "complete: paging of directory searches (max, after, before, index)")),
    options=Options,
    service=ServiceSpec(
        subdomain=lambda options: options.subdomain,
        identities=(("directory", "user", "Company directory"),),
        features=(search.NS_SEARCH, search.NS_RSM),
    ),
)  # fmt: skip


# ---- the worker's copy of the directory --------------------------------------------------------


@dataclass
class _Cache:
    """The directory of this worker process (one per process, like the word filter's matcher)."""

    storage: Storage | None = None
    directory: Directory | None = None
    checked_at: float = -math.inf
    lock: trio.Lock = field(default_factory=trio.Lock)


_CACHE = _Cache()


async def current_directory(storage: Storage, interval: float, *, force: bool = False) -> Directory:
    """The worker's copy, re-read first when due (module docstring).

    Raises:
        StorageError: the directory could not be read and there is no copy yet.
    """
    global _CACHE
    if _CACHE.storage is not storage:  # another database (a test's second server in one process)
        _CACHE = _Cache(storage=storage)
    cache = _CACHE
    due = force or time.monotonic() - cache.checked_at >= interval
    if cache.directory is not None and (not due or (cache.lock.locked() and not force)):
        return cache.directory
    async with cache.lock:
        if cache.directory is None or force or time.monotonic() - cache.checked_at >= interval:
            await _refresh(cache, storage)
    assert cache.directory is not None
    return cache.directory


async def _refresh(cache: _Cache, storage: Storage) -> None:
    try:
        version = await storage.org.version()
        if cache.directory is None or version != cache.directory.version:
            version, org = await storage.org.load()
            cache.directory = Directory(org, version)
            log.info("directory loaded: version %d, %d departments, %d people",
                     version, len(org.departments), len(org.people))  # fmt: skip
    except StorageError as exc:
        if cache.directory is None:
            raise
        log.warning("directory not re-read, the previous copy stays: %s", exc)
    cache.checked_at = time.monotonic()


@module.on_reload
async def reload_directory(ctx: ReloadContext) -> None:
    """SIGHUP or ``reload-modules`` (after ``imactor org import``): read the directory now; the
    accounts' actors then read their shared contacts again (`m.SharedRosterChanged`)."""
    try:
        await current_directory(ctx.storage, ctx.options.check_interval, force=True)
    except StorageError as exc:
        log.error("directory could not be read: %s", exc)


# ---- shared roster groups ----------------------------------------------------------------------


@module.shared_roster
async def colleagues(ctx: SharedRosterContext) -> SharedRoster:
    """The colleagues `ctx.username` sees (``share``), as roster items that are never stored."""
    options: Options = ctx.options
    directory = await current_directory(ctx.storage, options.check_interval)
    domain = ctx.server.domain
    items = {}
    for person in directory.colleagues(ctx.username, options.share):
        jid = f"{person.username}@{domain}"
        group = directory.departments[person.department].name
        items[jid] = RosterItem(jid=jid, name=person.name, subscription="both", groups=(group,))
    return SharedRoster(directory.version, items)


# ---- XEP-0055 search ---------------------------------------------------------------------------


def _check_searcher(ctx: IqContext) -> None:
    """The directory is the company's: only its accounts may read it (RFC 6120 §8.3.3.5)."""
    if ctx.from_jid.localpart is None or ctx.from_jid.domainpart != ctx.server.domain:
        raise StanzaError("forbidden", "the company directory is for the server's own accounts")


@module.iq("get", search.NS_SEARCH, "query", scope=Scope.SERVICE)
async def search_fields(ctx: IqContext) -> st.Element:
    _check_searcher(ctx)
    reply = st.iq_result(ctx.stanza)
    search.search_form(reply)
    return reply


@module.iq("set", search.NS_SEARCH, "query", scope=Scope.SERVICE)
async def search_directory(ctx: IqContext) -> st.Element:
    _check_searcher(ctx)
    options: Options = ctx.options
    request = search.read_request(ctx.payload)
    directory = await current_directory(ctx.storage, options.check_interval)
    domain = ctx.server.domain
    found = search.page(directory.search(request.criteria), ctx.payload, domain, options.max_results)
    reply = st.iq_result(ctx.stanza)
    search.results(reply, request, found, directory, domain)
    return reply


# ---- vCards (called by the vcard module) -------------------------------------------------------


def enabled(modules: Sequence[EnabledModule]) -> bool:
    return any(loaded.name == module.name for loaded in modules)


async def fill_vcard(storage: Storage, username: str, vcard: st.Element) -> None:
    """Add the directory's fields that `username`'s vCard lacks (`vcards.fill`); a directory that
    cannot be read adds nothing (the stored vCard is still answered)."""
    try:
        directory = await current_directory(storage, DEFAULT_INTERVAL)
    except StorageError as exc:
        log.warning("directory not read for a vCard: %s", exc)
        return
    person = directory.people.get(username)
    if person is not None:
        vcards.fill(vcard, person, directory)
