"""Reminders: every account's pending reminders (the soonest first), scheduling one, cancelling one.

Scheduling takes what the *Schedule a reminder* command's form takes, checked by the same code
(`checked_reminder`, `account_jid`: a time such as ``2026-12-24T09:00:00Z`` or ``in 10 minutes``,
a repeat rule, the text within ``[modules.adhoc] max_reminder_text``, recipients: every account
or some accounts of the domain); the reminder is the administrator's (the headline carries their
name) and counts against their ``max_reminders``. The reminder task is woken at once
(``wake-reminders``). Cancelling stops a reminder whoever set it.
"""

from __future__ import annotations

import time
from typing import Any

from imactor.console import html
from imactor.console.html import esc
from imactor.console.pages.base import Context, Invalid, Page, log, unknown
from imactor.modules.adhoc import Options
from imactor.modules.adhoc.admin import account_jid
from imactor.modules.adhoc.reminders import checked_reminder
from imactor.modules.adhoc.schedule import REPEATS, format_time
from imactor.storage.reminders import ALL_USERS, ReminderLimit
from imactor.xmpp.dataforms import FormError

PATH = "/reminders"
#: Reminders the page lists.
SHOWN = 500


async def view(context: Context) -> str:
    csrf = context.session.csrf
    reminders = await context.access.storage.reminders.active(SHOWN)
    rows = []
    for reminder in reminders:
        whom = "every user" if reminder.recipients == (ALL_USERS,) else ", ".join(reminder.recipients)
        cancel = html.form(
            PATH, "cancel", html.hidden("id", str(reminder.id)), "Cancel", csrf, style="inline danger"
        )
        rows.append(
            [
                esc(reminder.id),
                esc(format_time(reminder.next_at)),
                esc(reminder.repeat),
                esc(reminder.owner),
                esc(whom),
                esc(reminder.text),
                cancel,
            ]
        )
    repeats = [
        ("none", "Once"),
        ("daily", "Every day"),
        ("weekdays", "Monday to Friday"),
        ("weekly", "Every week"),
    ]
    recipients = [("all", "Every user"), ("accounts", "The accounts below")]
    schedule = html.form(
        PATH,
        "schedule",
        html.field(
            "When",
            "when",
            required=True,
            value=context.value("when"),
            placeholder="in 10 minutes, or 2026-12-24T09:00:00Z",
        )
        + html.select("Repeat (UTC)", "repeat", repeats, context.value("repeat") or "none")
        + html.select("For", "recipients", recipients, context.value("recipients") or "all")
        + html.field(
            "Accounts (JIDs, a space between)", "accounts", value=context.value("accounts"), size="wide"
        )
        + html.textarea("Text", "text", required=True, value=context.form.get("text", "")),
        "Schedule",
        csrf,
    )
    return html.section(
        "Schedule a reminder",
        schedule,
        note="Sent as a headline with your name; kept for whoever is offline.",
    ) + html.section(
        "Pending reminders",
        html.table(
            ["Id", "Next (UTC)", "Repeat", "Set by", "For", "Text", ""], rows, empty="No pending reminders."
        ),
    )


async def change(context: Context, action: str) -> str:
    store = context.access.storage.reminders
    if action == "cancel":
        raw = context.value("id")
        found = [r for r in await store.active(SHOWN) if str(r.id) == raw] if raw.isdigit() else []
        if not found or not await store.cancel(found[0].owner, found[0].id):
            raise Invalid(f"no pending reminder {raw!r}")
        return f"Reminder {raw} is cancelled"
    if action != "schedule":
        raise unknown(action)
    if "adhoc" not in context.access.config.server.modules:
        raise Invalid("reminders need the adhoc module (server.modules)")
    options = adhoc_options(context)
    now = time.time()
    repeat = context.value("repeat") or REPEATS[0]
    if repeat not in REPEATS:
        raise Invalid(f"unknown repeat rule {repeat!r}")
    try:
        text, due = checked_reminder(
            context.form.get("text", ""), context.value("when"), now, options.max_reminder_text
        )
        recipients = _recipients(context)
    except FormError as exc:
        raise Invalid(str(exc)) from None
    try:
        reminder_id = await store.add(
            context.username, recipients, text, due, repeat, now=now, limit=options.max_reminders
        )
    except ReminderLimit:
        raise Invalid(f"you have {options.max_reminders} reminders already, the most allowed") from None
    await wake_reminders(context)
    again = "" if repeat == "none" else f", then {repeat}"
    return f"Reminder {reminder_id} is set for {format_time(due)}{again}"


def _recipients(context: Context) -> tuple[str, ...]:
    chosen = context.value("recipients") or "all"
    if chosen == "all":
        return (ALL_USERS,)
    if chosen != "accounts":
        raise FormError(f"unknown recipients {chosen!r}")
    domain = context.access.config.server.domain
    named = context.value("accounts").replace(",", " ").split()
    if not named:
        raise FormError("name at least one account (user@domain)")
    return tuple(dict.fromkeys(str(account_jid(domain, value)) for value in named))


def adhoc_options(context: Context) -> Options:
    """``[modules.adhoc]`` as the module reads it (checked at the node's start)."""
    raw: dict[str, Any] = dict(context.access.config.modules.get("adhoc", {}))
    return Options(**raw)


async def wake_reminders(context: Context) -> None:
    """The reminder task looks now instead of at its next ``reminder_recheck``."""
    answer = await context.access.command("wake-reminders")
    if "error" in answer:  # it still looks within reminder_recheck seconds
        log.info("console: the reminder task was not woken: %s", answer["error"])


PAGE = Page(PATH, "Reminders", view, change)
