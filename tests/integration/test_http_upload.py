"""XEP-0363 HTTP File Upload over the wire, on a node of two workers (the slot request, the PUT and
the GET may each land on either worker: they share the web listeners and the file store).

slixmpp's XEP-0363 plugin finds the service, asks for a slot and PUTs a file over HTTPS (aiohttp,
verifying the server's generated certificate and host name); a second client gets the URL in a
message and downloads the same bytes. Then the service's errors (XEP-0363 §5) with raw XML, and
the HTTP side's refusals (§6) with raw HTTP/1.1 requests over TLS.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import ssl
import stat
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import slixmpp.plugins.xep_0363.http_upload as slixmpp_upload
import trio
from lxml import etree

from imactor.config import DEFAULT_MODULES
from imactor.modules.http_upload import tokens
from tests.integration.conftest import PASSWORD
from tests.support.clients import event_queue, run, slixmpp_client
from tests.support.peer import Peers, error_condition, show
from tests.support.raw import client_context
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT
from tests.support.web_clients import http_request

pytestmark = pytest.mark.usefixtures("server_alive")

NS = "urn:xmpp:http:upload:0"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
SERVICE = "upload.localhost"
MAX_FILE_SIZE = 100_000
QUOTA = 250_000
SLOT_TTL = 300
ALLOWED = [f"up{i}" for i in range(32)]
RECEIVER = ALLOWED[-1]  #: the downloading client of the slixmpp test; the others go to `user`
MODULES = ", ".join(f'"{name}"' for name in DEFAULT_MODULES)
assert '"http_upload"' in MODULES
UPLOAD_CONFIG = f"""
[modules.http_upload]
max_file_size = {MAX_FILE_SIZE}
quota = {QUOTA}
slot_ttl = {SLOT_TTL}
expire_days = 30
cleanup_interval = 3600  # the first sweep at start, then none while the tests run
users = [{", ".join(f'"{name}@localhost"' for name in ALLOWED)}]

[http]
header_timeout = 2.0  # a PUT whose body stops short is cut off after this
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    users = [(name, PASSWORD) for name in (*ALLOWED, "outsider")]
    with running_server(tmp_path_factory.mktemp("upload"), users=users, workers=2,
                        server_options=f"modules = [{MODULES}]", extra=UPLOAD_CONFIG) as process:  # fmt: skip
        yield process


@pytest.fixture(scope="module")
def pool() -> Iterator[str]:
    return iter(ALLOWED[:-1])


def uploads(server: ServerProcess) -> Path:
    return server.data_dir / "uploads"


# ---- helpers: the slot request and raw HTTP ------------------------------------------------------


def slot_request(filename: str, size: int, content_type: str | None = "application/octet-stream") -> str:
    ctype = "" if content_type is None else f" content-type={quoteattr(content_type)}"
    return f"<request xmlns='{NS}' filename={quoteattr(filename)} size='{size}'{ctype}/>"


def quoteattr(value: str) -> str:
    from xml.sax.saxutils import quoteattr as quote

    return quote(value, {"\t": "&#9;", "\n": "&#10;"})


async def slot(peers: Peers, user: str, filename: str, size: int,
               content_type: str = "text/plain") -> tuple[str, str]:  # fmt: skip
    """Log `user` in and get a slot: its (PUT URL, GET URL)."""
    peer = await peers.login(user)
    reply = await peer.iq(slot_request(filename, size, content_type), to=SERVICE)
    assert reply.get("type") == "result", show(reply)
    assert reply.get("from") == SERVICE
    put = reply.find(f"{{{NS}}}slot/{{{NS}}}put")
    get = reply.find(f"{{{NS}}}slot/{{{NS}}}get")
    assert put is not None, show(reply)
    assert get is not None, show(reply)
    return put.get("url", ""), get.get("url", "")


class HttpAnswer:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ", 2)[1])
        fields = (line.partition(":") for line in lines[1:])
        self.headers = {name.strip().lower(): value.strip() for name, _, value in fields}

    def __repr__(self) -> str:
        return f"<{self.status} {self.headers} {self.body[:200]!r}>"


async def https(server: ServerProcess, method: str, target: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> HttpAnswer:  # fmt: skip
    """One raw HTTP/1.1 request over TLS to the HTTPS listener (`target`: a URL or a path)."""
    split = urllib.parse.urlsplit(target)
    if split.scheme:
        assert (split.hostname, split.port) == ("localhost", server.https_port), target
        target = split.path + (f"?{split.query}" if split.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: localhost:{server.https_port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    with trio.fail_after(TIMEOUT):
        return HttpAnswer(await http_request(server.https_port, raw, tls=True))


async def put(server: ServerProcess, url: str, body: bytes, content_type: str = "text/plain",
              length: int | None = None) -> HttpAnswer:  # fmt: skip
    headers = {"Content-Type": content_type, "Content-Length": str(len(body) if length is None else length)}
    return await https(server, "PUT", url, body, headers)


def error_of(reply: etree._Element) -> etree._Element:
    error = reply.find("{jabber:client}error")
    assert reply.get("type") == "error", show(reply)
    assert error is not None, show(reply)
    return error


# ---- the upload with slixmpp, the download by another client ------------------------------------


def trusting_the_server(server: ServerProcess) -> ssl.SSLContext:
    """Verifies the HTTPS listener with the server's generated certificate as the only trust
    anchor, host name included (the slot URLs name the domain, localhost)."""
    return ssl.create_default_context(cafile=str(server.data_dir / "tls" / "localhost.crt"))


def test_slixmpp_uploads_a_file_that_another_client_downloads(
    server: ServerProcess, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = user, RECEIVER
    data = os.urandom(MAX_FILE_SIZE - 17)
    context = trusting_the_server(server)

    def session(**kwargs: Any) -> aiohttp.ClientSession:  # the plugin's aiohttp, told to trust the server
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), **kwargs)

    monkeypatch.setattr(slixmpp_upload, "ClientSession", session)

    async def scenario() -> None:
        plugins = ("xep_0030", "xep_0128", "xep_0363")
        async with (
            slixmpp_client(f"{alice}@localhost/pc", PASSWORD, server.c2s_port, plugins=plugins) as a,
            slixmpp_client(f"{bob}@localhost/phone", PASSWORD, server.c2s_port, send_presence=True) as b,
        ):
            messages = event_queue(b, "message")
            url = await a.plugin["xep_0363"].upload_file(
                "holiday photo.jpg", size=len(data), content_type="image/jpeg", input_file=io.BytesIO(data),
                timeout=TIMEOUT,
            )
            assert a.plugin["xep_0363"].upload_service == SERVICE
            assert a.plugin["xep_0363"].max_file_size == MAX_FILE_SIZE  # the §3 form, as the plugin read it
            assert url.startswith(f"https://localhost:{server.https_port}/upload/"), url
            assert url.endswith("/holiday%20photo.jpg"), url
            a.send_message(mto=f"{bob}@localhost/phone", mbody=url, mtype="chat")
            received = await asyncio.wait_for(messages.get(), TIMEOUT)
            assert received["body"] == url
            async with session() as http, http.get(received["body"]) as response:
                assert response.status == 200
                assert await response.read() == data
                assert response.headers["Content-Type"] == "image/jpeg"
                assert response.headers["Content-Length"] == str(len(data))
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert response.headers["Content-Disposition"].startswith("inline;")
            async with session() as http, http.head(url) as response:
                assert response.status == 200
                assert response.headers["Content-Length"] == str(len(data))

    run(scenario())
    stored = list(uploads(server).rglob("data"))
    assert any(path.read_bytes() == data for path in stored)
    for path in stored:  # under the random slot id, never the client's name; private
        assert path.parent.name != "holiday photo.jpg"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(uploads(server).stat().st_mode) == 0o700
    assert stat.S_IMODE((uploads(server) / "secret").stat().st_mode) == 0o600


# ---- discovery and the slot request's errors (§3, §5) -------------------------------------------


async def test_the_service_is_listed_with_its_identity_and_size_limit(server: ServerProcess, peers: Peers,
                                                                      user: str) -> None:  # fmt: skip
    with trio.fail_after(TIMEOUT):
        peer = await peers.login(user)
        items = await peer.iq(f"<query xmlns='{DISCO_ITEMS}'/>", to="localhost")
        assert SERVICE in {item.get("jid") for item in items.iter(f"{{{DISCO_ITEMS}}}item")}
        info = await peer.iq(f"<query xmlns='{DISCO_INFO}'/>", to=SERVICE)
    assert info.get("type") == "result", show(info)
    identities = [(i.get("category"), i.get("type")) for i in info.iter(f"{{{DISCO_INFO}}}identity")]
    assert identities == [("store", "file")]
    assert NS in {f.get("var") for f in info.iter(f"{{{DISCO_INFO}}}feature")}
    fields = {f.get("var"): f.findtext("{jabber:x:data}value") for f in info.iter("{jabber:x:data}field")}
    assert fields == {"FORM_TYPE": NS, "max-file-size": str(MAX_FILE_SIZE)}


async def test_a_file_over_the_limit_gets_file_too_large(peers: Peers, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        peer = await peers.login(user)
        reply = await peer.iq(slot_request("big.iso", MAX_FILE_SIZE + 1), to=SERVICE)
    error = error_of(reply)
    assert error.get("type") == "modify"
    assert error_condition(reply) == "not-acceptable"
    assert error.findtext(f"{{{NS}}}file-too-large/{{{NS}}}max-file-size") == str(MAX_FILE_SIZE)


BAD_NAMES = ["../../etc/passwd", "a/b.txt", "a\\b.txt", "..", ".", "", "tab\there.txt", "x" * 256]
MALFORMED = [
    f"<request xmlns='{NS}' filename='a.txt'/>",  # no size
    f"<request xmlns='{NS}' filename='a.txt' size='-5'/>",
    f"<request xmlns='{NS}' filename='a.txt' size='12kB'/>",
    f"<request xmlns='{NS}' size='10'/>",  # no filename
    f"<request xmlns='{NS}' filename='a.txt' size='10' content-type='not a type'/>",
]


async def test_a_bad_file_name_is_not_acceptable(peers: Peers, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        peer = await peers.login(user)
        for name in BAD_NAMES:
            reply = await peer.iq(slot_request(name, 10), to=SERVICE)
            assert error_condition(reply) == "not-acceptable", (name, show(reply))
            assert error_of(reply).find(f"{{{NS}}}file-too-large") is None
        good = await peer.iq(slot_request("Ünïcode name (1).tar.gz", 10), to=SERVICE)
        assert good.get("type") == "result", show(good)


async def test_a_malformed_request_is_a_bad_request(peers: Peers, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        peer = await peers.login(user)
        for request_xml in MALFORMED:
            reply = await peer.iq(request_xml, to=SERVICE)
            assert error_condition(reply) == "bad-request", (request_xml, show(reply))


async def test_an_account_not_allowed_to_upload_is_refused(peers: Peers) -> None:
    with trio.fail_after(TIMEOUT):
        peer = await peers.login("outsider")
        reply = await peer.iq(slot_request("a.txt", 10), to=SERVICE)
    assert error_condition(reply) == "not-allowed", show(reply)  # §5: a permanent error
    assert error_of(reply).get("type") == "cancel"


async def test_the_quota_counts_open_slots_and_says_when_to_retry(peers: Peers, user: str) -> None:
    with trio.fail_after(TIMEOUT):
        peer = await peers.login(user)
        asked_at = time.time()
        for _ in range(QUOTA // MAX_FILE_SIZE):
            granted = await peer.iq(slot_request("part.bin", MAX_FILE_SIZE), to=SERVICE)
            assert granted.get("type") == "result", show(granted)
        reply = await peer.iq(slot_request("part.bin", MAX_FILE_SIZE), to=SERVICE)
        small = await peer.iq(slot_request("note.txt", QUOTA % MAX_FILE_SIZE), to=SERVICE)
    error = error_of(reply)
    assert error_condition(reply) == "resource-constraint", show(reply)
    assert error.get("type") == "wait"
    retry = error.find(f"{{{NS}}}retry")
    assert retry is not None, show(reply)
    stamp = time.mktime(time.strptime(retry.get("stamp", ""), "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert asked_at + SLOT_TTL - 2 <= stamp <= time.time() + SLOT_TTL + 2  # when the first slot closes
    assert small.get("type") == "result", show(small)  # what still fits is granted


# ---- the PUT (§6) ------------------------------------------------------------------------------


async def test_a_put_with_a_wrong_or_missing_token_is_forbidden(server: ServerProcess, peers: Peers,
                                                                user: str) -> None:  # fmt: skip
    body = b"0123456789"
    put_url, get_url = await slot(peers, user, "a.txt", len(body))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(put_url).query)
    forged = put_url.replace(query["t"][0], query["t"][0][::-1])
    later = put_url.replace(f"e={query['e'][0]}", f"e={int(query['e'][0]) + 3600}")  # a longer life, unsigned
    for url in (forged, get_url, later, put_url.replace(f"&t={query['t'][0]}", "")):
        answer = await put(server, url, body)
        assert answer.status == 403, (url, answer)
    assert (await https(server, "GET", get_url)).status == 404  # nothing was stored
    assert (await put(server, put_url, body)).status == 201  # the real URL still works


async def test_a_put_after_the_url_expired_is_forbidden(server: ServerProcess, peers: Peers,
                                                        user: str) -> None:  # fmt: skip
    body = b"late"
    _, get_url = await slot(peers, user, "late.txt", len(body))
    slot_id = urllib.parse.urlsplit(get_url).path.split("/")[2]
    # The same slot with an expiry in the past, signed with the server's own key: only the clock refuses it.
    key = tokens.load_or_create_key(uploads(server))
    expired = int(time.time()) - 1
    token = tokens.sign(key, slot_id, "late.txt", len(body), "text/plain", expired)
    answer = await put(server, f"{get_url}?e={expired}&t={token}", body)
    assert answer.status == 403, answer
    assert b"expired" in answer.body
    assert (await https(server, "GET", get_url)).status == 404


async def test_a_put_must_match_the_slot_length_and_type(server: ServerProcess, peers: Peers,
                                                         user: str) -> None:  # fmt: skip
    body = b"x" * 100
    put_url, get_url = await slot(peers, user, "exact.txt", len(body))
    too_large = await put(server, put_url, body + b"y")
    assert too_large.status == 413, too_large
    too_small = await put(server, put_url, body[:-1])
    assert too_small.status == 400, too_small
    wrong_type = await put(server, put_url, body, content_type="text/html")
    assert wrong_type.status == 400, wrong_type
    chunked = await https(server, "PUT", put_url, b"64\r\n" + body + b"\r\n0\r\n\r\n",
                          {"Content-Type": "text/plain", "Transfer-Encoding": "chunked"})  # fmt: skip
    assert chunked.status == 411, chunked
    short_body = await put(server, put_url, body[:50], length=len(body))  # declares 100, sends 50, closes
    assert short_body.status in (400, 408), short_body
    assert (await https(server, "GET", get_url)).status == 404  # none of them stored anything
    assert (await put(server, put_url, body, content_type="Text/Plain")).status == 201  # case does not matter
    assert (await https(server, "GET", get_url)).body == body


async def test_a_slot_takes_one_upload(server: ServerProcess, peers: Peers, user: str) -> None:
    put_url, get_url = await slot(peers, user, "once.txt", 4)
    assert (await put(server, put_url, b"one!")).status == 201
    second = await put(server, put_url, b"two!")
    assert second.status == 409, second
    assert (await https(server, "GET", get_url)).body == b"one!"


async def test_a_client_that_waits_for_100_continue_gets_it_or_its_refusal(
    server: ServerProcess, peers: Peers, user: str
) -> None:
    """RFC 9110 §10.1.1 (curl asks so for bodies over 1 MiB): the body follows a 100 once the
    headers are accepted; a refused PUT gets its answer without the client sending the body."""
    body = b"z" * 2000
    put_url, get_url = await slot(peers, user, "big.txt", len(body))
    split = urllib.parse.urlsplit(put_url)

    def head(target: str) -> bytes:
        return (f"PUT {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n").encode()  # fmt: skip

    with trio.fail_after(TIMEOUT):
        stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", server.https_port), client_context(),
                                server_hostname="localhost")  # fmt: skip
        async with stream:
            await stream.send_all(head(f"{split.path}?e=1&t=forged"))  # refused: no 100, the answer
            refused = await stream.receive_some(65536)
            assert refused.startswith(b"HTTP/1.1 403 "), refused
        stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", server.https_port), client_context(),
                                server_hostname="localhost")  # fmt: skip
        async with stream:
            await stream.send_all(head(f"{split.path}?{split.query}"))
            go_on = await stream.receive_some(65536)
            assert go_on.startswith(b"HTTP/1.1 100 "), go_on
            await stream.send_all(body)
            created = await stream.receive_some(65536)
            assert created.startswith(b"HTTP/1.1 201 "), created
    assert (await https(server, "GET", get_url)).body == body


# ---- the GET: open, never a listing, never outside the store -----------------------------------


async def test_a_download_has_safe_headers(server: ServerProcess, peers: Peers, user: str) -> None:
    page = b"<script>alert(document.cookie)</script>"
    put_url, get_url = await slot(peers, user, "page.html", len(page), "text/html")
    assert (await put(server, put_url, page, content_type="text/html")).status == 201
    answer = await https(server, "GET", get_url)
    assert (answer.status, answer.body) == (200, page)
    assert answer.headers["content-type"] == "text/html"
    assert answer.headers["content-length"] == str(len(page))
    assert answer.headers["x-content-type-options"] == "nosniff"
    # Never shown as a page: a browser that opened it would run it on the server's origin.
    assert answer.headers["content-disposition"] == "attachment; filename*=UTF-8''page.html"
    assert "sandbox" in answer.headers["content-security-policy"]
    head = await https(server, "HEAD", get_url)
    assert (head.status, head.body) == (200, b"")
    assert head.headers["content-length"] == str(len(page))


async def test_a_web_page_of_another_origin_may_upload_and_download(
    server: ServerProcess, peers: Peers, user: str
) -> None:
    """CORS as a browser does it (the Fetch standard's checks) for a web client such as Converse.js,
    whose page is on another origin than the HTTPS listener: its PUT, with a Content-Type that is
    not a "simple" one, is preceded by a preflight OPTIONS, without the token's check or a body."""
    data = b"\x89PNG not really"
    put_url, get_url = await slot(peers, user, "shot.png", len(data), "image/png")
    origin = {"Origin": "http://127.0.0.1:8080"}
    preflight = await https(server, "OPTIONS", put_url, headers={
        **origin, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "content-type",
        "Accept": "*/*", "Sec-Fetch-Mode": "cors",
    })  # fmt: skip
    assert 200 <= preflight.status < 300, preflight  # a "ok status"
    assert preflight.headers["access-control-allow-origin"] in ("*", origin["Origin"]), preflight
    methods = {m.strip() for m in preflight.headers["access-control-allow-methods"].split(",")}
    assert "PUT" in methods, preflight  # matched case-sensitively
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert "content-type" in allowed, preflight
    assert preflight.body == b""
    # The PUT and the GET themselves: the page reads their status and bytes only if they allow it.
    uploaded = await https(server, "PUT", put_url, data, headers={
        **origin, "Content-Type": "image/png", "Content-Length": str(len(data)),
    })  # fmt: skip
    assert uploaded.status == 201, uploaded
    assert uploaded.headers["access-control-allow-origin"] == "*", uploaded
    downloaded = await https(server, "GET", get_url, headers=origin)
    assert (downloaded.status, downloaded.body) == (200, data)
    assert downloaded.headers["access-control-allow-origin"] == "*", downloaded
    # A refusal too, so that the page can show the server's reason rather than a network error.
    again = await put(server, put_url, data, content_type="image/png")
    assert again.status == 409
    assert again.headers["access-control-allow-origin"] == "*", again


async def test_paths_outside_a_file_are_not_found(server: ServerProcess, peers: Peers, user: str) -> None:
    put_url, get_url = await slot(peers, user, "real.txt", 4)
    assert (await put(server, put_url, b"real")).status == 201
    slot_path = urllib.parse.urlsplit(get_url).path
    slot_id = slot_path.split("/")[2]
    secret = (uploads(server) / "secret").read_bytes().strip()
    for path in (
        "/upload/", "/upload", f"/upload/{slot_id}", f"/upload/{slot_id}/",  # directories: no listing
        "/upload/secret", "/upload/../secret", "/upload/%2e%2e/secret", "/upload/%2E%2E%2Fsecret/x",
        f"/upload/{slot_id}/..%2Fsecret", f"/upload/{slot_id}/../secret",
        f"/upload/{slot_id}/%2e%2e%2f%2e%2e%2fsecret",
        f"/upload/{slot_id}%2Fmeta.json/real.txt", f"/upload/{slot_id}/meta.json", f"/upload/{slot_id}/data",
        f"/upload/owners/{slot_id}", f"/upload/{slot_id}/real.txt/..", f"/upload/{slot_id}/other.txt",
        "/upload/AAAAAAAAAAAAAAAAAAAAAA/real.txt",  # a well-formed id that was never given
    ):  # fmt: skip
        answer = await https(server, "GET", path)
        assert (answer.status, answer.body) == (404, b"not found\n"), (path, answer)
        assert secret not in answer.body


async def test_a_slot_not_yet_uploaded_is_not_found(server: ServerProcess, peers: Peers, user: str) -> None:
    _, get_url = await slot(peers, user, "later.txt", 5)
    assert (await https(server, "GET", get_url)).status == 404
    assert (await https(server, "DELETE", get_url)).status == 405


# ---- expiry and the clean-up; reloaded options --------------------------------------------------


def age(server: ServerProcess, get_url: str, days: float) -> Path:
    """Make the slot of `get_url` look `days` old (as if uploaded then); its directory."""
    slot_dir = uploads(server) / urllib.parse.urlsplit(get_url).path.split("/")[2]
    meta = json.loads((slot_dir / "meta.json").read_text())
    meta["created"] = time.time() - days * 86400
    (slot_dir / "meta.json").write_text(json.dumps(meta))
    return slot_dir


async def test_an_expired_file_is_gone_before_the_clean_up(server: ServerProcess, peers: Peers,
                                                           user: str) -> None:  # fmt: skip
    put_url, get_url = await slot(peers, user, "old.txt", 3)
    assert (await put(server, put_url, b"old")).status == 201
    slot_dir = age(server, get_url, 31)  # expire_days = 30
    assert (await https(server, "GET", get_url)).status == 404
    assert (await https(server, "HEAD", get_url)).status == 404
    assert (slot_dir / "data").exists()  # the next clean-up is an hour away: the GET itself refused it


SMALL_CONFIG = """
[modules.http_upload]
max_file_size = 1000
cleanup_interval = 0.2
"""


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One worker, the default modules, a clean-up every 0.2 s and a small size limit."""
    directory = tmp_path_factory.mktemp("upload-small")
    with running_server(directory, users=[("ann", PASSWORD)], extra=SMALL_CONFIG) as process:
        yield process


async def test_the_clean_up_deletes_expired_files(small_server: ServerProcess) -> None:
    server = small_server
    logins = Peers(server.c2s_port, PASSWORD)
    try:
        put_url, get_url = await slot(logins, "ann", "old.txt", 3)
        assert (await put(server, put_url, b"old")).status == 201
        kept_put, kept_get = await slot(logins, "ann", "new.txt", 3)
        assert (await put(server, kept_put, b"new")).status == 201
    finally:
        await logins.aclose()
    slot_dir = age(server, get_url, 31)
    with trio.fail_after(TIMEOUT):  # deleted by the next clean-up, in the server's own time
        while slot_dir.exists():  # noqa: ASYNC110 - removed by the server's process
            await trio.sleep(0.05)
    owners = uploads(server) / "owners"
    assert not any(mark.name == slot_dir.name for mark in owners.rglob("*"))
    assert (await https(server, "GET", kept_get)).body == b"new"  # a recent file stays


async def test_reloaded_options_apply_to_the_service(small_server: ServerProcess) -> None:
    server = small_server
    config = server.config_path.read_text()
    logins = Peers(server.c2s_port, PASSWORD)
    try:
        peer = await logins.login("ann")
        assert error_condition(await peer.iq(slot_request("a.bin", 1500), to=SERVICE)) == "not-acceptable"
        server.config_path.write_text(config.replace("max_file_size = 1000", "max_file_size = 2000"))
        server.proc.send_signal(signal.SIGHUP)
        with trio.fail_after(TIMEOUT):
            while await max_file_size(peer) != "2000":  # noqa: ASYNC110 - reloaded by the server's process
                await trio.sleep(0.05)
        reply = await peer.iq(slot_request("a.bin", 1500), to=SERVICE)
        assert reply.get("type") == "result", show(reply)
    finally:
        server.config_path.write_text(config)
        await logins.aclose()


async def max_file_size(peer: Any) -> str | None:
    info = await peer.iq(f"<query xmlns='{DISCO_INFO}'/>", to=SERVICE)
    fields = {f.get("var"): f.findtext("{jabber:x:data}value") for f in info.iter("{jabber:x:data}field")}
    return fields.get("max-file-size")
