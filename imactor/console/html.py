"""The console's HTML: the page frame, forms that carry the CSRF token, tables, and the stylesheet.

Everything a page shows from outside (a username, a department's name, a word) goes through
`esc`; pages compose strings of HTML made by these helpers and nothing else. No script runs in
the console, and the Content-Security-Policy says so: a value that slipped past escaping could
not run anyway. The stylesheet is served from the console itself (`STYLESHEET` at `/console.css`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from imactor.web.messages import Response

#: The pages in the navigation bar: path, title.
NAVIGATION = (
    ("/", "Overview"),
    ("/accounts", "Accounts"),
    ("/departments", "Departments"),
    ("/words", "Word lists"),
    ("/announcements", "Announcements"),
    ("/reminders", "Reminders"),
)
HTML = "text/html; charset=utf-8"
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; "
        "base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    # Not no-referrer: under it browsers send "Origin: null" with the forms, which the origin check refuses.
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
]


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def document(
    title: str,
    body: str,
    *,
    domain: str,
    admin: str | None = None,
    csrf: str = "",
    current: str = "",
    notice: tuple[str, str] | None = None,
    status: int = 200,
) -> Response:
    """A whole page: the bar (the domain, the pages, who is logged in and the logout button),
    the title, a notice (``("ok" | "error", text)``) and the body."""
    nav = ""
    if admin is not None:
        links = "".join(
            f'<a href="{path}"{" aria-current=page" if path == current else ""}>{esc(name)}</a>'
            for path, name in NAVIGATION
        )
        logout = form("/logout", "logout", "", "Log out", csrf, style="inline quiet")
        nav = f'<nav>{links}</nav><div class="who"><span>{esc(admin)}</span>{logout}</div>'
    shown = ""
    if notice is not None:
        kind, text = notice
        role = "alert" if kind == "error" else "status"
        shown = f'<p class="notice {esc(kind)}" role="{role}">{esc(text)}</p>'
    page = (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)} · imactor console</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/console.css"><link rel="icon" href="data:,"></head>'
        f'<body><header><span class="brand">imactor <small>{esc(domain)}</small></span>{nav}</header>'
        f"<main><h1>{esc(title)}</h1>{shown}{body}</main></body></html>\n"
    )
    return Response(status, page.encode(), HTML, list(SECURITY_HEADERS))


def redirect(location: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    """303 See Other: after a POST, the browser GETs `location` (Post/Redirect/Get)."""
    return Response(303, b"", HTML, [("Location", location), *SECURITY_HEADERS, *headers])


def form(path: str, action: str, fields: str, button: str, csrf: str, *, style: str = "") -> str:
    """A POST form to `path` with the session's CSRF token and the `action` it asks for."""
    classes = f' class="{esc(style)}"' if style else ""
    danger = " danger" if "danger" in style.split() else ""
    return (
        f'<form method="post" action="{esc(path)}"{classes}>'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        f'<input type="hidden" name="action" value="{esc(action)}">'
        f'{fields}<button type="submit" class="button{danger}">{esc(button)}</button></form>'
    )


def removable(path: str, action: str, csrf: str, chips: Iterable[tuple[str, str]], *, empty: str) -> str:
    """A row of chips, each its label (HTML) and a "×" form posting `action` with its own hidden
    fields (HTML); the note `empty` when there are none."""
    return (
        "".join(
            f'<span class="person">{label}'
            + form(path, action, fields, "×", csrf, style="inline remove")
            + "</span>"
            for label, fields in chips
        )
        or f'<span class="note">{esc(empty)}</span>'
    )


def hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'


def field(
    label: str,
    name: str,
    *,
    kind: str = "text",
    value: str = "",
    required: bool = False,
    placeholder: str = "",
    size: str = "",
    autocomplete: str = "",
) -> str:
    attributes = f' value="{esc(value)}"' if value else ""
    attributes += " required" if required else ""
    attributes += f' placeholder="{esc(placeholder)}"' if placeholder else ""
    # A password field sets a new password unless said otherwise (the login's is the current one).
    autocomplete = autocomplete or ("new-password" if kind == "password" else "")
    attributes += f' autocomplete="{esc(autocomplete)}"' if autocomplete else ""
    width = f' class="{esc(size)}"' if size else ""
    return (
        f"<label{width}><span>{esc(label)}</span>"
        f'<input type="{esc(kind)}" name="{esc(name)}"{attributes}></label>'
    )


def select(label: str, name: str, options: Iterable[tuple[str, str]], selected: str = "") -> str:
    choices = "".join(
        f'<option value="{esc(value)}"{" selected" if value == selected else ""}>{esc(text)}</option>'
        for value, text in options
    )
    return f'<label><span>{esc(label)}</span><select name="{esc(name)}">{choices}</select></label>'


def textarea(label: str, name: str, *, value: str = "", required: bool = False, rows: int = 3) -> str:
    need = " required" if required else ""
    return (
        f'<label class="wide"><span>{esc(label)}</span>'
        f'<textarea name="{esc(name)}" rows="{rows}"{need}>{esc(value)}</textarea></label>'
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str = "Nothing yet.") -> str:
    """A table; `rows` are HTML already (escape what they show)."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(header)}</th>" for header in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(title: str, body: str, *, note: str = "") -> str:
    explained = f'<p class="note">{esc(note)}</p>' if note else ""
    return f'<section class="card"><h2>{esc(title)}</h2>{explained}{body}</section>'


def badge(text: str, kind: str = "") -> str:
    return f'<span class="badge {esc(kind)}">{esc(text)}</span>'


STYLESHEET = b"""\
:root { --ink: #1d2330; --muted: #5d6675; --line: #dde2ea; --bg: #f5f7fa; --card: #fff;
  --accent: #2457c5; --accent-ink: #fff; --ok: #1f7a4d; --ok-bg: #e7f5ee; --bad: #b3261e;
  --bad-bg: #fdecea; font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans", sans-serif;
  font-size: 15px; color: var(--ink); background: var(--bg); }
* { box-sizing: border-box; }
body { margin: 0; }
header { display: flex; align-items: center; gap: 1.5rem; padding: 0 1.5rem; height: 3.25rem;
  background: #1d2330; color: #fff; }
.brand { font-weight: 650; letter-spacing: .01em; }
.brand small { font-weight: 400; color: #aab3c2; margin-left: .35rem; }
nav { display: flex; gap: .25rem; flex: 1; }
nav a { color: #cfd6e2; text-decoration: none; padding: .4rem .7rem; border-radius: 6px; }
nav a:hover { background: #2c3445; color: #fff; }
nav a[aria-current] { background: #3a4358; color: #fff; }
.who { display: flex; align-items: center; gap: .6rem; color: #cfd6e2; font-size: .9rem; }
main { max-width: 72rem; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.45rem; margin: .25rem 0 1.1rem; }
h2 { font-size: 1.05rem; margin: 0 0 .8rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 1.1rem 1.25rem; margin-bottom: 1.1rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(13rem, 1fr)); gap: 1rem;
  margin-bottom: 1.1rem; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: .9rem 1.1rem; }
.stat b { display: block; font-size: 1.6rem; font-weight: 650; }
.stat span { color: var(--muted); font-size: .85rem; }
table { width: 100%; border-collapse: collapse; font-size: .93rem; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: .8rem; text-transform: uppercase;
  letter-spacing: .04em; border-bottom: 1px solid var(--line); padding: .45rem .5rem; }
td { border-bottom: 1px solid var(--line); padding: .5rem; vertical-align: middle; }
tr:last-child td { border-bottom: 0; }
form { display: flex; flex-wrap: wrap; align-items: flex-end; gap: .6rem; margin: 0; }
form.inline { display: inline-flex; margin-right: .3rem; vertical-align: bottom; }
td form { gap: .35rem; }
label { display: flex; flex-direction: column; gap: .2rem; font-size: .82rem; color: var(--muted); }
label.wide { flex: 1 1 100%; }
input, select, textarea { font: inherit; color: var(--ink); border: 1px solid #c5ccd8; border-radius: 6px;
  padding: .4rem .55rem; background: #fff; min-width: 9rem; }
td input, td select { min-width: 7rem; padding: .25rem .4rem; }
textarea { width: 100%; resize: vertical; }
input:focus, select:focus, textarea:focus { outline: 2px solid #9db8ef; border-color: var(--accent); }
.button { font: inherit; border: 0; border-radius: 6px; padding: .45rem .9rem; background: var(--accent);
  color: var(--accent-ink); cursor: pointer; font-weight: 550; }
td .button { padding: .28rem .65rem; font-size: .86rem; }
.button:hover { filter: brightness(1.08); }
.button.danger { background: var(--bad); }
.quiet .button { background: transparent; color: #cfd6e2; border: 1px solid #4a5469; padding: .3rem .7rem; }
.notice { padding: .65rem .9rem; border-radius: 8px; margin: 0 0 1rem; }
.notice.ok { background: var(--ok-bg); color: var(--ok); }
.notice.error { background: var(--bad-bg); color: var(--bad); }
.note, .empty { color: var(--muted); margin: 0 0 .8rem; font-size: .9rem; }
.badge { display: inline-block; font-size: .78rem; padding: .1rem .5rem; border-radius: 99px;
  background: #e8ecf3; color: var(--muted); }
.badge.ok { background: var(--ok-bg); color: var(--ok); }
.badge.bad { background: var(--bad-bg); color: var(--bad); }
.words { display: flex; flex-wrap: wrap; gap: .35rem; margin: .4rem 0 .8rem; }
.words code { background: #eef1f6; border-radius: 4px; padding: .1rem .4rem; }
.tree { list-style: none; padding-left: 1.2rem; margin: .2rem 0; }
.tree > li { margin: .35rem 0; }
.pager { display: flex; gap: .8rem; align-items: center; margin-top: .8rem; color: var(--muted); }
.pager a, a.back { color: var(--accent); }
a.back { margin-left: .6rem; }
.login { max-width: 24rem; margin: 4rem auto; }
main:has(.login) > h1 { text-align: center; margin-top: 3rem; }
.login form { flex-direction: column; align-items: stretch; }
.login input { width: 100%; }
.person { display: inline-flex; align-items: center; gap: .25rem; background: #eef1f6; border-radius: 99px;
  padding: .1rem .2rem .1rem .6rem; margin: .15rem .25rem .15rem 0; }
.person small { color: var(--muted); }
.remove .button { background: transparent; color: var(--bad); padding: 0 .4rem; font-size: 1rem; }
"""
