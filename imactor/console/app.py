"""The console's requests: login and logout, sessions and CSRF, and the pages' dispatch.

- ``GET /login`` shows the login form; ``POST /login`` logs in (`imactor.console.auth`), then
  303 to the overview. The form carries a token that a cookie holds too (double submit): a page
  of another site cannot log a browser in under its own account.
- Every other page needs a session: a GET without one is sent to the login page (303), a POST
  gets 401 and changes nothing.
- Every POST carries the session's CSRF token (403 without it or with another, and nothing
  changes) and comes from the console's own origin when the browser says where it comes from
  (``Origin``, ``Sec-Fetch-Site``: 403 otherwise). A change that succeeds redirects (303) to its
  page, which shows what was done; one the page refuses (a malformed value) shows the page again
  with the reason and status 400, and changes nothing.
- Only the pages' paths exist: anything else is 404 (nothing is served from files, so a path
  such as ``/../etc/passwd`` names nothing). Methods other than GET, HEAD and POST get 405;
  forms must be ``application/x-www-form-urlencoded`` in UTF-8 (415, 400).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from urllib.parse import parse_qsl

from imactor.console import html
from imactor.console.access import NodeAccess
from imactor.console.auth import (
    COOKIE,
    LOGIN_COOKIE,
    AdminSession,
    LoginRefused,
    Sessions,
    check_login,
    same_token,
)
from imactor.console.pages import PAGES
from imactor.console.pages.base import Confirm, Context, Invalid, Page
from imactor.modules.adhoc.rights import admin_jids
from imactor.server.throttles import FailureThrottle, LoginThrottle
from imactor.storage import StorageError
from imactor.web.messages import Request, Response, text_response

log = logging.getLogger("imactor.console")

#: Fields a form may have; more is not a form of this console.
MAX_FIELDS = 64


class Console:
    """The console application: `handle` answers one request (see the module doc)."""

    def __init__(self, access: NodeAccess) -> None:
        config = access.config
        self.access = access
        self.domain = config.server.domain
        self.admins = admin_jids(config.server.admins)
        self.sessions = Sessions(config.listen.console.session_timeout)
        limits = config.limits
        self.throttle = LoginThrottle(
            FailureThrottle(limits.login_failures, limits.login_failure_window),
            FailureThrottle(limits.login_failures * 4, limits.login_failure_window),
        )
        self.pages: dict[str, Page] = {page.path: page for page in PAGES}

    async def handle(self, request: Request, remote: str, tls: bool) -> Response:
        """Answer one request (the module doc).

        Error handling: a database that refuses a read or a write (`StorageError`: a full disk,
        a PostgreSQL that is down) is a 503 page that says so; the change did not happen.
        """
        try:
            return await self._route(request, remote, tls)
        except StorageError as exc:
            log.warning("console: %s %s: the database failed: %s", request.method, request.path, exc)
            body = f"<p>The database did not answer as it should: {html.esc(exc)}. Nothing was changed.</p>"
            return self._frame("Database unavailable", body, ("error", "try again later"), status=503)

    async def _route(self, request: Request, remote: str, tls: bool) -> Response:
        if request.method not in ("GET", "HEAD", "POST"):
            return Response(405, b"GET, HEAD or POST\n", headers=[("Allow", "GET, HEAD, POST")])
        if request.path == "/console.css":
            return Response(
                200,
                html.STYLESHEET,
                "text/css; charset=utf-8",
                [("Cache-Control", "max-age=3600"), ("X-Content-Type-Options", "nosniff")],
            )
        if request.path == "/login":
            return await self._login(request, remote, tls)
        page = self.pages.get(request.path)
        if page is None and request.path != "/logout":
            return text_response(404, "not found")
        cookies = _cookies(request)
        session = self.sessions.get(cookies.get(COOKIE))
        if request.method != "POST":
            if session is None:
                return html.redirect("/login")
            if page is None:
                return text_response(405, "POST only")
            return await self._show(page, session, request)
        if not _same_origin(request, tls):
            return text_response(403, "cross-site request refused")
        if session is None:
            return self._frame(
                "Logged out",
                '<p>Your session has ended. <a href="/login">Log in</a> again.</p>',
                None,
                status=401,
            )
        form = _form(request)
        if isinstance(form, Response):
            return form
        if not same_token(form.get("csrf"), session.csrf):
            return text_response(403, "the form's token is missing or stale: reload the page and try again")
        if page is None:  # /logout
            self.sessions.close(session)
            return html.redirect("/login", [("Set-Cookie", _cookie(COOKIE, "", tls, expire=True))])
        context = Context(self.access, session, form, _query(request))
        try:
            done = await page.change(context, form.get("action", ""))
        except Invalid as exc:
            return await self._show(page, session, request, ("error", str(exc)), status=400, form=form)
        except Confirm as ask:
            return self._confirm(page, session, form, ask)
        session.flash = ("ok", done)
        return html.redirect(page.path + (f"?{request.query}" if request.query else ""))

    async def _show(
        self,
        page: Page,
        session: AdminSession,
        request: Request,
        notice: tuple[str, str] | None = None,
        *,
        status: int = 200,
        form: Mapping[str, str] | None = None,
    ) -> Response:
        if notice is None and session.flash is not None:
            notice, session.flash = session.flash, None
        body = await page.view(Context(self.access, session, form or {}, _query(request)))
        return html.document(
            page.title,
            body,
            domain=self.domain,
            admin=session.jid,
            csrf=session.csrf,
            current=page.path,
            notice=notice,
            status=status,
        )

    def _confirm(self, page: Page, session: AdminSession, form: Mapping[str, str], ask: Confirm) -> Response:
        """The question, a button that sends the same form again confirmed, and a way back."""
        fields = "".join(
            html.hidden(name, value)
            for name, value in form.items()
            if name not in ("csrf", "action", "confirm")
        )
        button = html.form(
            page.path,
            form.get("action", ""),
            fields + html.hidden("confirm", "yes"),
            ask.button,
            session.csrf,
            style="inline danger",
        )
        body = html.section(
            "Are you sure?",
            f'<p>{html.esc(ask.question)}</p>{button}<a class="back" href="{html.esc(page.path)}">Cancel</a>',
        )
        return html.document(
            page.title, body, domain=self.domain, admin=session.jid, csrf=session.csrf, current=page.path
        )

    def _frame(
        self,
        title: str,
        body: str,
        notice: tuple[str, str] | None,
        *,
        status: int = 200,
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        response = html.document(title, body, domain=self.domain, notice=notice, status=status)
        response.headers.extend(headers or [])
        return response

    async def _login(self, request: Request, remote: str, tls: bool) -> Response:
        cookies = _cookies(request)
        if request.method != "POST":
            if self.sessions.get(cookies.get(COOKIE)) is not None:
                return html.redirect("/")
            return self._login_page(cookies.get(LOGIN_COOKIE), tls, None)
        if not _same_origin(request, tls):
            return text_response(403, "cross-site request refused")
        form = _form(request)
        if isinstance(form, Response):
            return form
        expected = cookies.get(LOGIN_COOKIE)
        if not expected or not same_token(form.get("csrf"), expected):
            return text_response(403, "the form's token is missing or stale: reload the page and try again")
        try:
            jid = await check_login(
                self.access.storage,
                self.admins,
                self.domain,
                form.get("jid", ""),
                form.get("password", ""),
                self.throttle,
                remote,
            )
        except LoginRefused as exc:
            status = 429 if "too many" in str(exc) else 401
            return self._login_page(
                expected, tls, ("error", str(exc)), status=status, jid=form.get("jid", "")
            )
        session = self.sessions.open(jid)
        return html.redirect(
            "/",
            [
                ("Set-Cookie", _cookie(COOKIE, session.token, tls)),
                ("Set-Cookie", _cookie(LOGIN_COOKIE, "", tls, expire=True)),
            ],
        )

    def _login_page(
        self,
        token: str | None,
        tls: bool,
        notice: tuple[str, str] | None,
        *,
        status: int = 200,
        jid: str = "",
    ) -> Response:
        headers = []
        if not token:
            token = secrets.token_urlsafe(32)
            headers.append(("Set-Cookie", _cookie(LOGIN_COOKIE, token, tls)))
        fields = html.field(
            "Administrator JID", "jid", value=jid, required=True, placeholder=f"admin@{self.domain}"
        ) + html.field(
            "Password", "password", kind="password", required=True, autocomplete="current-password"
        )
        body = (
            '<div class="card login">'
            + html.form("/login", "login", fields, "Log in", token)
            + '<p class="note">The administrators of <code>[server] admins</code>, with their XMPP '
            "password.</p></div>"
        )
        return self._frame("Log in", body, notice, status=status, headers=headers)


def _cookie(name: str, value: str, tls: bool, *, expire: bool = False) -> str:
    """A cookie scripts cannot read, that no other site's request carries, and (over TLS) that
    never travels in clear; a session cookie (no Max-Age) unless it is being removed."""
    attributes = "; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if tls else "")
    return f"{name}={value}{attributes}" + ("; Max-Age=0" if expire else "")


def _cookies(request: Request) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in request.headers.get("cookie", "").replace(",", ";").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name not in found:
            found[name] = value.strip()
    return found


def _same_origin(request: Request, tls: bool) -> bool:
    """Whether the browser says the request comes from the console's own pages (a request that
    says nothing, from a client that is not a browser, passes: the CSRF token still decides)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    scheme = "https" if tls else "http"
    return origin == f"{scheme}://{request.headers.get('host', '')}"


def _form(request: Request) -> dict[str, str] | Response:
    """The submitted form's fields (the last value of a repeated one), or the response that
    refuses it."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return text_response(415, "forms only (application/x-www-form-urlencoded)")
    try:
        text = request.body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return text_response(400, "a malformed form (not UTF-8, or too many fields)")
    return dict(pairs)


def _query(request: Request) -> dict[str, str]:
    try:
        return dict(
            parse_qsl(request.query, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
        )
    except (UnicodeDecodeError, ValueError):
        return {}
