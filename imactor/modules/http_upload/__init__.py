"""XEP-0363: HTTP File Upload, on the server's own HTTP listeners.

The upload service answers at ``upload.<domain>`` (``subdomain``), listed in the server's
disco#items (§3). Its disco#info has the identity store/file, the feature
``urn:xmpp:http:upload:0`` and the ``max-file-size`` form (XEP-0128). A client asks it for a
slot (§4) and gets a PUT and a GET URL on the HTTPS listener (``[listen.https]``, or ``url``
behind a proxy)::

    PUT https://<domain>:5443/upload/<slot id>/<file name>?e=<expiry>&t=<token>
    GET https://<domain>:5443/upload/<slot id>/<file name>

Errors of a slot request (§5): a file over ``max_file_size`` gets not-acceptable with
<file-too-large><max-file-size/>; a bad file name (empty, a path separator, a control character,
"." or "..", over 255 bytes) not-acceptable; a size or content type that is not one,
bad-request; an account not in ``users`` (when that list is set) not-allowed; an account whose
files and open slots would exceed ``quota`` resource-constraint with <retry stamp/> (when
its first file expires or slot closes).

The PUT (§6) must come before the URL's expiry (``slot_ttl`` seconds after the request) with the
URL's token (403 otherwise), a Content-Length equal to the slot's size (411 without one, 413
when larger, 400 when smaller or when the body ends early), and the slot's Content-Type (400);
a slot takes one upload (409 after). 201 answers a stored file. A GET or HEAD of the URL is
open to whoever has it (§2: the XEP's access model), with the slot's Content-Type, the file's
Content-Length, ``X-Content-Type-Options: nosniff``, a sandboxing Content-Security-Policy, and
``Content-Disposition: attachment`` for every type a browser could run as a page (only images,
audio, video and plain text are ``inline``). Any other path under the prefix, a directory
included, is 404: nothing is ever listed. Files are removed ``expire_days`` after their slot
was given (a GET after that is 404 at once; the clean-up task deletes them every
``cleanup_interval`` seconds), as are slots never used. Storage: `store.py`; the URL tokens:
`tokens.py`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from lxml import etree

from imactor.modules.http_upload import tokens
from imactor.modules.http_upload.store import SLOT_ID, Slot, UploadStore, new_slot_id
from imactor.server.modules import (
    HttpBodyError,
    HttpContext,
    HttpReply,
    IqContext,
    Module,
    ModuleConfigError,
    Scope,
    ServiceSpec,
    TaskContext,
    Xep,
)
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import qname

if TYPE_CHECKING:
    from imactor.config import Config

log = logging.getLogger("imactor.modules.http_upload")

NS_UPLOAD = "urn:xmpp:http:upload:0"
NS_DATA = "jabber:x:data"
DEFAULT_TYPE = "application/octet-stream"
#: Types shown in the page that opens them; every other one is downloaded (a type that a browser
#: would run, text/html or image/svg+xml, must never execute on the server's origin).
INLINE_TYPES = re.compile(
    r"(image/(png|jpeg|gif|webp|avif|heic|bmp)|audio/[\w.+-]+|video/[\w.+-]+|text/plain)"
)
#: RFC 9110 §8.3.1: type "/" subtype, each a token, then parameters.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
CONTENT_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=({_TOKEN}|\"[^\"\\\x00-\x1f]*\"))*")
#: Unused slots are removed this long after their PUT URL expired (an upload still running on it).
ABANDONED_AFTER = 86400.0
READ_CHUNK = 65536
WRITE_BATCH = 262144  #: bytes buffered between two writes of an upload (each write: a thread hop)
MAX_NAME_BYTES = 255
_JID = re.compile(r"[^\s@/]+@[^\s@/]+")


def _where(key: str) -> str:
    return f"modules.http_upload.{key}"


@dataclass(frozen=True)
class Options:
    subdomain: str = "upload"  #: the service's JID is <subdomain>.<domain>
    path: str = ""  #: the file store; "": <data_dir>/uploads; relative: to the config file's directory
    url: str = ""  #: base of the slot URLs; "": https://<domain>:<HTTPS port><http_path>
    http_path: str = "/upload/"  #: the path prefix served on the web listeners
    max_file_size: int = 104857600  #: bytes (100 MiB)
    quota: int = 1073741824  #: bytes per account (1 GiB); 0: none
    expire_days: float = 30.0  #: days a file is kept; 0: for ever
    slot_ttl: int = 300  #: seconds a PUT URL stays valid (XEP-0363 §7 suggests about 60)
    cleanup_interval: float = 3600.0  #: seconds between two clean-ups
    users: Collection[str] = field(default_factory=tuple)  #: bare JIDs that may upload; empty: every account
    secret: str = ""  #: the key of the PUT URLs; "": generated into <path>/secret

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", self.subdomain):
            raise ModuleConfigError(f"{_where('subdomain')}: expected a DNS label, got {self.subdomain!r}")
        if not re.fullmatch(r"/([^\s?#]*/)?", self.http_path):
            raise ModuleConfigError(f"{_where('http_path')}: expected a path that starts and ends with /, "
                                    f"got {self.http_path!r}")  # fmt: skip
        if self.url and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?/", self.url):
            raise ModuleConfigError(f"{_where('url')}: expected an http(s) URL ending with /, "
                                    f"got {self.url!r}")  # fmt: skip
        for key in ("max_file_size", "slot_ttl"):
            if getattr(self, key) <= 0:
                raise ModuleConfigError(f"{_where(key)}: expected a positive integer, "
                                        f"got {getattr(self, key)!r}")  # fmt: skip
        for key in ("quota", "expire_days"):
            if getattr(self, key) < 0 or not math.isfinite(getattr(self, key)):
                raise ModuleConfigError(f"{_where(key)}: expected 0 (none) or a positive number, "
                                        f"got {getattr(self, key)!r}")  # fmt: skip
        if not (0 < self.cleanup_interval < math.inf):
            raise ModuleConfigError(f"{_where('cleanup_interval')}: expected a positive number of seconds, "
                                    f"got {self.cleanup_interval!r}")  # fmt: skip
        users = self.users
        if not isinstance(users, list | tuple | frozenset) or not all(
            isinstance(user, str) and _JID.fullmatch(user) for user in users
        ):
            raise ModuleConfigError(f"{_where('users')}: expected a list of bare JIDs (user@domain)")
        object.__setattr__(self, "users", frozenset(user.lower() for user in users))

    @property
    def max_age(self) -> float | None:
        return self.expire_days * 86400 if self.expire_days else None


def upload_root(options: Options, config: Config) -> Path:
    """The store's directory: ``path``, relative to the config file, or <data_dir>/uploads."""
    if not options.path:
        return config.server.data_dir / "uploads"
    path = Path(options.path).expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(config.source.absolute().parent / path))


def store_of(options: Options, config: Config) -> UploadStore:
    return UploadStore(upload_root(options, config), max_age=options.max_age)


@functools.cache
def _stored_key(directory: Path) -> bytes:
    return tokens.load_or_create_key(directory)


async def signing_key(options: Options, config: Config) -> bytes:
    if options.secret:
        return options.secret.encode()
    return await trio.to_thread.run_sync(_stored_key, upload_root(options, config))


def _element(namespace: str, tag: str) -> st.Element:
    return etree.Element(qname(namespace, tag), nsmap=st.default_ns(namespace))


def _form(options: Any) -> list[st.Element]:
    """§3: the maximum file size as XEP-0128 extended information of the service's disco#info."""
    form = _element(NS_DATA, "x")
    form.set("type", "result")
    fields = (("FORM_TYPE", NS_UPLOAD, "hidden"), ("max-file-size", str(options.max_file_size), None))
    for var, value, kind in fields:
        entry = st.child(form, NS_DATA, "field")
        entry.set("var", var)
        if kind:
            entry.set("type", kind)
        st.child(entry, NS_DATA, "value", value)
    return [form]


module = Module(
    name="http_upload", summary="HTTP File Upload",
    xeps=(Xep("0363", "1.1.0", "complete: upload.<domain>, signed expiring PUT URLs, quota, expiry"),),
    options=Options,
    service=ServiceSpec(
        subdomain=lambda options: options.subdomain,
        identities=(("store", "file", "HTTP File Upload"),),
        features=(NS_UPLOAD,),
        forms=_form,
    ),
)  # fmt: skip


# ---- the slot request (§4, §5) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotRequest:
    filename: str
    size: int
    content_type: str


def parse_request(payload: st.Element) -> SlotRequest:
    """The <request/>'s attributes, checked (§4: filename and size required, content-type optional)."""
    filename, size = payload.get("filename"), payload.get("size", "")
    if filename is None or not size:
        raise StanzaError("bad-request", "a slot request needs a filename and a size")
    if not size.isdecimal() or int(size) <= 0:
        raise StanzaError("bad-request", "the size is a positive number of bytes")
    content_type = (payload.get("content-type") or DEFAULT_TYPE).strip()
    if len(content_type) > 255 or not CONTENT_TYPE.fullmatch(content_type):
        raise StanzaError("bad-request", "the content-type is not a media type")
    if not acceptable_name(filename):
        raise StanzaError("not-acceptable", "the file name is empty, too long, or has a path "
                          "separator or a control character")  # fmt: skip
    return SlotRequest(filename, int(size), content_type)


def acceptable_name(filename: str) -> bool:
    """A file name that ends up in a URL and a Content-Disposition, never on the file system:
    one path segment of printable characters."""
    if filename in ("", ".", "..") or len(filename.encode()) > MAX_NAME_BYTES:
        return False
    return not any(c in "/\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in filename)


def file_too_large(limit: int) -> StanzaError:
    """§5, example: not-acceptable with <file-too-large><max-file-size/></file-too-large>."""
    detail = _element(NS_UPLOAD, "file-too-large")
    st.child(detail, NS_UPLOAD, "max-file-size", str(limit))
    return StanzaError("not-acceptable", f"File too large. The maximum file size is {limit} bytes",
                       app_element=detail)  # fmt: skip


def quota_exceeded(quota: int, frees_at: float | None) -> StanzaError:
    """§5: a temporary error (resource-constraint, wait) with when to retry, if it is known."""
    retry = None
    if frees_at is not None:
        retry = _element(NS_UPLOAD, "retry")
        retry.set("stamp", datetime.fromtimestamp(math.ceil(frees_at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return StanzaError("resource-constraint", f"Quota reached: your files may take {quota} bytes",
                       app_element=retry)  # fmt: skip


@module.iq("get", NS_UPLOAD, "request", scope=Scope.SERVICE)
async def request_slot(ctx: IqContext) -> st.Element:
    options: Options = ctx.options
    owner = str(ctx.from_jid.bare)
    if options.users and owner.lower() not in options.users:
        raise StanzaError("not-allowed", "this account may not upload files")  # §5, permanent error
    wanted = parse_request(ctx.payload)
    if wanted.size > options.max_file_size:
        raise file_too_large(options.max_file_size)
    base = options.url or _listener_base(ctx, options)
    store = store_of(options, ctx.config)
    key = await signing_key(options, ctx.config)
    now = time.time()
    slot = Slot(new_slot_id(), owner, wanted.filename, wanted.size, wanted.content_type, now,
                int(now) + options.slot_ttl)  # fmt: skip
    try:
        usage = await trio.to_thread.run_sync(store.usage, owner, now)
        if options.quota and usage.used + wanted.size > options.quota:
            raise quota_exceeded(options.quota, usage.frees_at)
        await trio.to_thread.run_sync(store.reserve, slot)
    except OSError as exc:
        log.error("http upload: cannot record a slot in %s: %s", store.root, exc)
        raise StanzaError("resource-constraint", "the upload service cannot store files now") from None
    return _slot_reply(ctx, slot, base, key)


def _listener_base(ctx: IqContext, options: Options) -> str:
    https = ctx.server.https_url()
    if https is None:
        raise StanzaError("service-unavailable", "no HTTPS listener: set modules.http_upload.url")
    return https + options.http_path


def _slot_reply(ctx: IqContext, slot: Slot, base: str, key: bytes) -> st.Element:
    get_url = f"{base}{slot.slot_id}/{urllib.parse.quote(slot.filename, safe='')}"
    token = tokens.sign(key, slot.slot_id, slot.filename, slot.size, slot.content_type, slot.put_expires)
    reply = st.iq_result(ctx.stanza)
    element = st.child(reply, NS_UPLOAD, "slot")
    st.child(element, NS_UPLOAD, "put").set("url", f"{get_url}?e={slot.put_expires}&t={token}")
    st.child(element, NS_UPLOAD, "get").set("url", get_url)
    return reply


# ---- HTTP: PUT, GET, HEAD (§6) -----------------------------------------------------------------

CORS = [
    ("Access-Control-Allow-Origin", "*"),  # web clients (Converse.js) upload and fetch cross-origin
    ("Access-Control-Allow-Methods", "GET, HEAD, PUT, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type"),
]


def _text(status: int, text: str, *extra: tuple[str, str]) -> HttpReply:
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"), *CORS, *extra]
    return HttpReply(status, headers, (text + "\n").encode())


def parse_path(path: str, prefix: str) -> tuple[str, str] | None:
    """(slot id, file name) of ``<prefix><slot id>/<name>``; None for any other path."""
    parts = path[len(prefix):].split("/")
    if len(parts) != 2 or not SLOT_ID.fullmatch(parts[0]) or not parts[1]:
        return None
    try:
        name = urllib.parse.unquote(parts[1], errors="strict")
    except UnicodeDecodeError:
        return None
    return parts[0], name


@module.http(lambda options: options.http_path)
async def serve(ctx: HttpContext) -> HttpReply:
    options: Options = ctx.options
    method = ctx.request.method
    target = parse_path(ctx.request.path, options.http_path)
    if method == "OPTIONS":
        return HttpReply(204, [*CORS, ("Access-Control-Max-Age", "86400")])
    if method not in ("GET", "HEAD", "PUT"):
        return _text(405, "GET, HEAD or PUT", ("Allow", "GET, HEAD, PUT, OPTIONS"))
    store = store_of(options, ctx.config)
    slot = None if target is None else await trio.to_thread.run_sync(store.slot, target[0])
    if target is None or slot is None or slot.filename != target[1]:
        return _text(404, "not found")  # also every directory: nothing is ever listed
    if method == "PUT":
        return await _put(ctx, store, slot)
    return await _get(store, slot)


async def _get(store: UploadStore, slot: Slot) -> HttpReply:
    path = store.data_path(slot.slot_id)
    try:
        size = (await trio.to_thread.run_sync(path.stat)).st_size
    except FileNotFoundError:
        return _text(404, "not found")  # not uploaded (yet)
    if store.expired(slot, time.time()):
        return _text(404, "not found")

    async def chunks() -> AsyncIterator[bytes]:
        async with await trio.open_file(path, "rb") as f:
            while chunk := await f.read(READ_CHUNK):
                yield chunk

    media_type = slot.content_type.split(";")[0].strip().lower()
    disposition = "inline" if INLINE_TYPES.fullmatch(media_type) else "attachment"
    quoted = urllib.parse.quote(slot.filename, safe="")
    headers = [
        ("Content-Type", slot.content_type),
        ("Content-Disposition", f"{disposition}; filename*=UTF-8''{quoted}"),
        ("X-Content-Type-Options", "nosniff"),  # the browser takes the type as given, never guesses
        ("Content-Security-Policy", "default-src 'none'; sandbox"),  # a page that slips through runs nothing
        ("Cache-Control", "private, max-age=86400"),
        *CORS,
    ]
    return HttpReply(200, headers, stream=chunks, length=size)


async def _put(ctx: HttpContext, store: UploadStore, slot: Slot) -> HttpReply:
    refused = await _put_refused(ctx, slot)
    if refused is not None:
        return refused
    try:
        fd = await trio.to_thread.run_sync(store.open_part, slot.slot_id)
    except FileExistsError:
        return _text(409, "an upload to this slot is in progress")
    committed = False
    try:
        with os.fdopen(fd, "wb") as f:
            received = await _receive_into(ctx, f)
            if received != slot.size:
                return _text(400, f"the body ended after {received} of {slot.size} bytes")
            await trio.to_thread.run_sync(os.fsync, f.fileno())
        committed = await trio.to_thread.run_sync(store.commit, slot.slot_id)
    except HttpBodyError:
        return _text(400, "the body did not arrive whole")
    except OSError as exc:
        log.error("http upload: cannot store %s: %s", store.root / slot.slot_id, exc)
        return _text(507, "the file cannot be stored")
    finally:
        if not committed:
            with trio.CancelScope(shield=True), contextlib.suppress(OSError):
                await trio.to_thread.run_sync(store.discard_part, slot.slot_id)
    if not committed:
        return _text(409, "this slot has its file already")
    return HttpReply(201, [("Cache-Control", "no-store"), *CORS])


async def _put_refused(ctx: HttpContext, slot: Slot) -> HttpReply | None:
    """§6: the token, then the headers against the slot; None when the PUT may proceed."""
    options: Options = ctx.options
    query = urllib.parse.parse_qs(ctx.request.query, strict_parsing=False)
    expires, token = query.get("e", [""])[0], query.get("t", [""])[0]
    key = await signing_key(options, ctx.config)
    if not expires.isdecimal() or not tokens.valid(key, token, slot.slot_id, slot.filename, slot.size,
                                                   slot.content_type, int(expires)):  # fmt: skip
        return _text(403, "this URL does not allow an upload")
    if int(expires) < time.time():
        return _text(403, "this upload URL has expired: request a new slot")
    headers = ctx.request.headers
    length = headers.get("content-length")
    if length is None or not length.isdecimal():
        return _text(411, f"send a Content-Length of {slot.size}")
    if int(length) > slot.size:
        return _text(413, f"the slot is for {slot.size} bytes")
    if int(length) < slot.size:
        return _text(400, f"the slot is for {slot.size} bytes")
    if _media_type(headers.get("content-type", DEFAULT_TYPE)) != _media_type(slot.content_type):
        return _text(400, f"the slot is for Content-Type {slot.content_type}")
    if await trio.to_thread.run_sync(store_of(options, ctx.config).is_stored, slot.slot_id):
        return _text(409, "this slot has its file already")
    return None


def _media_type(value: str) -> str:
    """For comparing Content-Types: case and spaces around parameters do not matter (RFC 9110 §8.3.1)."""
    return ";".join(part.strip() for part in value.lower().split(";"))


async def _receive_into(ctx: HttpContext, f: Any) -> int:
    """Write the body to `f` as it arrives; the number of bytes received."""
    received, pending = 0, bytearray()
    while chunk := await ctx.request.body.receive():
        received += len(chunk)
        pending += chunk
        if len(pending) >= WRITE_BATCH:
            await trio.to_thread.run_sync(f.write, bytes(pending))
            pending.clear()
    if pending:
        await trio.to_thread.run_sync(f.write, bytes(pending))
    return received


# ---- clean-up ----------------------------------------------------------------------------------


@module.background
async def clean_up(ctx: TaskContext) -> None:
    """Remove expired files and abandoned slots every ``cleanup_interval`` seconds, from the
    node's first worker (one sweep per node; another would only find less to do)."""
    if ctx.worker != 0:
        return
    options: Options = ctx.options
    store = store_of(options, ctx.config)
    while True:
        try:
            removed = await trio.to_thread.run_sync(
                functools.partial(store.sweep, time.time(), abandoned_after=ABANDONED_AFTER)
            )
        except OSError as exc:
            log.error("http upload: clean-up of %s failed: %s", store.root, exc)
        else:
            if removed:
                log.info("http upload: removed %d expired files and unused slots", removed)
        await trio.sleep(options.cleanup_interval)
