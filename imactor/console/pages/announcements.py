"""Announcements: to everyone online, to every account (kept for those offline), and the message
of the day.

- To online users: the XEP-0133 ``announce`` command's message (`announce.announcement`: from
  the server's JID, a headline or a normal message), handed by one worker to every session of
  every worker (the status socket's ``announce``). Nobody offline gets it.
- To all users: a reminder for every account (`ALL_USERS`), due now, from the administrator:
  the reminder task on the node's first worker (woken at once, ``wake-reminders``) delivers it to
  each account durably, offline storage for those not online, exactly once per account even if
  a worker or node fails meanwhile (docs/reminders.md). Needs the ``adhoc`` module.
- The message of the day: stored (`MotdStore`, as XEP-0133 set-motd) and sent now to everyone
  online; each session gets it at its first presence until it is deleted.
"""

from __future__ import annotations

import time

from imactor.console import html
from imactor.console.pages.base import Context, Invalid, Page, unknown
from imactor.console.pages.reminders import adhoc_options, wake_reminders
from imactor.modules.adhoc.announce import ANNOUNCE_TYPES, MOTD_SUBJECT
from imactor.storage.reminders import ALL_USERS, ReminderLimit

PATH = "/announcements"


async def view(context: Context) -> str:
    csrf = context.session.csrf
    kinds = [("headline", "Headline"), ("normal", "Normal message")]
    online = html.form(
        PATH,
        "online",
        html.field("Subject", "subject", value=context.value("subject"))
        + html.select("Shown as", "type", kinds, context.value("type") or "headline")
        + html.textarea("Announcement", "body", required=True, value=context.form.get("body", "")),
        "Send to online users",
        csrf,
    )
    everyone = html.form(
        PATH,
        "all",
        html.textarea("Announcement", "text", required=True, value=context.form.get("text", "")),
        "Send to all users",
        csrf,
    )
    current = await context.access.storage.motd.get()
    motd = html.form(
        PATH,
        "motd",
        html.textarea(
            "Message of the day", "motd", required=True, value=context.form.get("motd", current or "")
        ),
        "Set",
        csrf,
        style="",
    )
    if current is not None:
        motd += "<p></p>" + html.form(
            PATH, "motd-delete", "", "Delete the message of the day", csrf, style="inline danger"
        )
    return (
        html.section(
            "To everyone online",
            online,
            note="Every session on every worker gets it now; nobody offline does.",
        )
        + html.section(
            "To all users",
            everyone,
            note="Every account gets it, as a headline from you: now if online, at the next login "
            "otherwise (stored, delivered once).",
        )
        + html.section(
            "Message of the day",
            motd,
            note=("Set: " if current else "None set. ")
            + "Everyone online gets it now, and each session once when it starts, until deleted.",
        )
    )


async def change(context: Context, action: str) -> str:
    storage = context.access.storage
    if action == "online":
        body, kind = context.value("body"), context.value("type") or ANNOUNCE_TYPES[0]
        if not body:
            raise Invalid("the announcement is empty")
        if kind not in ANNOUNCE_TYPES:
            raise Invalid(f"unknown message type {kind!r}")
        answer = await context.access.command(
            "announce", subject=context.value("subject"), body=body, type=kind
        )
        if "error" in answer:
            raise Invalid(f"not sent: {answer['error']}")
        return "The announcement was sent to every online user"
    if action == "all":
        text = context.value("text")
        if not text:
            raise Invalid("the announcement is empty")
        if "adhoc" not in context.access.config.server.modules:
            raise Invalid("announcements to all users need the adhoc module (server.modules)")
        options = adhoc_options(context)
        if len(text) > options.max_reminder_text:
            raise Invalid(
                f"the text has {len(text)} characters; at most {options.max_reminder_text} are allowed"
            )
        now = time.time()
        try:
            await storage.reminders.add(
                context.username, (ALL_USERS,), text, now, "none", now=now, limit=options.max_reminders
            )
        except ReminderLimit:
            raise Invalid(
                f"you have {options.max_reminders} reminders pending already, the most allowed"
            ) from None
        await wake_reminders(context)
        return "The announcement is on its way to every account (stored for those offline)"
    if action == "motd":
        text = context.form.get("motd", "").strip()
        if not text:
            raise Invalid("the message of the day is empty")
        await storage.motd.set(text)
        # XEP-0133 §4.24: online users get it now, the others when they next log in.
        await context.access.command("announce", subject=MOTD_SUBJECT, body=text, type="normal")
        return "The message of the day is set"
    if action == "motd-delete":
        if await storage.motd.delete():
            return "The message of the day is deleted"
        raise Invalid("no message of the day was set")
    raise unknown(action)


PAGE = Page(PATH, "Announcements", view, change)
