"""Accounts: list (search by part of the username, 50 a page), add, delete, disable and enable,
change a password. The stores' calls are those of ``imactor user ...`` and of the XEP-0133
commands; deleting or disabling an account ends its sessions on every worker, as the XEP-0133
commands do (the status socket's ``end-sessions``). An administrator cannot delete or disable
their own account here (they would lock themselves out mid-session)."""

from __future__ import annotations

from urllib.parse import urlencode

from imactor.config import Config
from imactor.console import html
from imactor.console.html import esc
from imactor.console.pages.base import Context, Invalid, Page, confirmed, unknown
from imactor.hosts import Hosts
from imactor.storage import AccountExists, AccountNotFound
from imactor.xmpp.jid import InvalidJID, prep_password

PAGE_SIZE = 50
PATH = "/accounts"


async def view(context: Context) -> str:
    csrf, domain = context.session.csrf, context.access.config.server.domain
    hosts = Hosts.of(context.access.config)
    search = context.query.get("q", "").strip()[:64]
    page = _page_number(context.query.get("page", "1"))
    total, accounts = await context.access.storage.accounts.search(
        search, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    rows = []
    for username, disabled in accounts:
        jid = str(hosts.jid(username))  # an account key: alice, or alice@<a [[hosts]] domain>
        who = html.hidden("username", username)
        toggle = (
            html.form(PATH, "enable", who, "Enable", csrf, style="inline")
            if disabled
            else html.form(PATH, "disable", who, "Disable", csrf, style="inline")
        )
        password = html.form(
            PATH,
            "password",
            who + html.field("New password", "password", kind="password", required=True),
            "Set",
            csrf,
            style="inline",
        )
        delete = html.form(PATH, "delete", who, "Delete", csrf, style="inline danger")
        state = html.badge("disabled", "bad") if disabled else html.badge("active", "ok")
        rows.append([esc(jid), state, toggle + delete, password])
    finder = (
        f'<form method="get" action="{PATH}">'
        + html.field("Username contains", "q", value=search)
        + '<button class="button" type="submit">Search</button></form>'
    )
    pages = max(1, -(-total // PAGE_SIZE))
    pager = f'<div class="pager"><span>{total} accounts · page {page} of {pages}</span>'
    if page > 1:
        pager += f'<a href="{PATH}?{esc(urlencode({"q": search, "page": page - 1}))}">← previous</a>'
    if page < pages:
        pager += f'<a href="{PATH}?{esc(urlencode({"q": search, "page": page + 1}))}">next →</a>'
    pager += "</div>"
    add = html.form(
        PATH,
        "add",
        html.field("Username", "username", required=True, value=context.value("username"))
        + html.field("Password", "password", kind="password", required=True)
        + html.field("Password again", "password2", kind="password", required=True),
        "Add account",
        csrf,
    )
    note = f"The account is created on {domain}."
    if context.access.config.hosts:
        note = f"The account is created on {domain}, or on another served domain named in full (alice@host)."
    return html.section("Add an account", add, note=note) + html.section(
        "Accounts",
        finder + html.table(["Account", "State", "", "Password"], rows, empty="No account matches.") + pager,
    )


async def change(context: Context, action: str) -> str:
    storage, config = context.access.storage, context.access.config
    iterations = config.auth.scram_iterations
    username = _username(context.value("username"), config)
    jid = str(Hosts.of(config).jid(username))
    try:
        if action == "add":
            password = _password(context.form.get("password", ""))
            if context.form.get("password2", "") != context.form.get("password", ""):
                raise Invalid("the two passwords differ")
            try:
                await storage.accounts.create(username, password, iterations=iterations)
            except AccountExists:
                raise Invalid(f"{jid} exists already") from None
            return f"Created {jid}"
        if action == "password":
            await storage.accounts.set_password(
                username, _password(context.form.get("password", "")), iterations=iterations
            )
            return f"Changed the password of {jid}"
        if action in ("delete", "disable") and jid == context.session.jid:
            raise Invalid("you cannot delete or disable your own account while logged in with it")
        if action == "delete":
            if not await storage.accounts.exists(username):
                raise AccountNotFound(username)
            confirmed(
                context,
                f"Delete {jid} and everything stored for it (roster, archive, offline "
                "messages)? This cannot be undone.",
                "Delete the account",
            )
            await storage.accounts.delete(username)
            await context.access.command("end-sessions", user=username, removed=True)
            return f"Deleted {jid}"
        if action in ("disable", "enable"):
            await storage.accounts.set_disabled(username, action == "disable")
            if action == "disable":
                await context.access.command("end-sessions", user=username, removed=False)
            return f"{action.capitalize()}d {jid}"
    except AccountNotFound:
        raise Invalid(f"no such account: {jid}") from None
    raise unknown(action)


def _username(raw: str, config: Config) -> str:
    """The account key of `raw`: a name on the primary domain, or a bare JID of a served one."""
    if not raw:
        raise Invalid("name an account")
    try:
        return Hosts.of(config).parse_account(raw)
    except (InvalidJID, ValueError) as exc:
        raise Invalid(f"invalid username {raw!r}: {exc}") from None


def _password(raw: str) -> str:
    if not raw:
        raise Invalid("the password is empty")
    try:
        return prep_password(raw)
    except (InvalidJID, ValueError):
        raise Invalid("the password has characters a password may not have") from None


def _page_number(raw: str) -> int:
    return int(raw) if raw.isdigit() and 0 < int(raw) < 1_000_000 else 1


PAGE = Page(PATH, "Accounts", view, change)
