"""Scheduled reminders, as ad-hoc commands any account of the server may run at its JID.

- ``urn:imactor:reminders#schedule``: one form: ``when`` (a XEP-0082 date-time with a time
  zone, or "in 10 minutes"), ``repeat`` (none, daily, weekdays, weekly) and ``text``. For an
  administrator also ``recipients`` (``self``, ``accounts``: the JIDs of ``accountjids``, or
  ``all``: every account of the server, counted when each reminder is sent). Anyone else
  reminds only themselves: a form that names other recipients is ``forbidden``.
- ``urn:imactor:reminders#list``: the requester's reminders with their next times (a result form).
- ``urn:imactor:reminders#cancel``: one form listing them; the chosen one is cancelled.

A value the command refuses (a time in the past, a malformed date, a text longer than
``max_reminder_text``, more than ``max_reminders`` reminders) shows the form again with an error
note, as the XEP-0133 commands do. The delivery is `imactor.modules.adhoc.reminder_task`'s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from imactor.modules.adhoc.admin import account_jids
from imactor.modules.adhoc.commands import Command, Done, Stage
from imactor.modules.adhoc.reminder_task import poke
from imactor.modules.adhoc.rights import is_admin
from imactor.modules.adhoc.schedule import REPEATS, format_time, parse_when
from imactor.server.modules import IqContext
from imactor.storage.errors import AccountNotFound
from imactor.storage.reminders import ALL_USERS, Reminder, ReminderLimit
from imactor.xmpp.dataforms import Field, FormError, SubmittedForm
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.namespaces import NS_REMINDERS

__all__ = ["COMMANDS", "RECIPIENTS", "checked_reminder", "describe"]

#: Who an administrator's reminder is for (the value of ``recipients``).
RECIPIENTS = ("self", "accounts", "all")


def _node(name: str) -> str:
    return f"{NS_REMINDERS}#{name}"


def _owner(ctx: IqContext) -> str:
    owner = ctx.server.account_of(ctx.from_jid)  # alice, or alice@<host> ([[hosts]])
    assert owner is not None  # the engine lets only the server's accounts run these commands
    return owner


async def _schedule_fields(ctx: IqContext) -> Sequence[Field]:
    fields = [
        Field("when", "text-single", "When: a date-time such as 2026-12-24T09:00:00Z, or 'in 10 minutes'",
              required=True),
        Field("repeat", "list-single", "Repeat (in UTC)", values=(REPEATS[0],),
              options=(("Once", "none"), ("Every day", "daily"), ("Monday to Friday", "weekdays"),
                       ("Every week", "weekly"))),
        Field("text", "text-multi", "Text", required=True),
    ]  # fmt: skip
    if is_admin(ctx):
        fields += [
            Field("recipients", "list-single", "For", values=(RECIPIENTS[0],),
                  options=(("Myself", "self"), ("The accounts below", "accounts"), ("Every user", "all"))),
            Field("accountjids", "jid-multi", "Accounts (when 'For' is 'The accounts below')"),
        ]  # fmt: skip
    return fields


def _recipients(ctx: IqContext, form: SubmittedForm) -> tuple[str, ...]:
    chosen = form.choice("recipients", RECIPIENTS, "self")
    others = chosen != "self" or any(value.strip() for value in form.texts("accountjids"))
    if others and not is_admin(ctx):
        raise StanzaError("forbidden", "only the server's administrators may remind other users")
    if chosen == "all":
        return (ALL_USERS,)
    if chosen == "accounts":
        return tuple(dict.fromkeys(str(jid) for jid in account_jids(ctx.server.domain, form)))
    return (str(ctx.from_jid.bare),)


async def schedule(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    (form,) = forms
    now = time.time()
    recipients = _recipients(ctx, form)
    text, due = checked_reminder("\n".join(form.texts("text")), form.text("when") or "", now,
                                 int(ctx.options.max_reminder_text))  # fmt: skip
    repeat = form.choice("repeat", REPEATS, REPEATS[0]) or REPEATS[0]
    try:
        reminder_id = await ctx.storage.reminders.add(_owner(ctx), recipients, text, due, repeat, now=now,
                                                      limit=int(ctx.options.max_reminders))  # fmt: skip
    except ReminderLimit:
        raise FormError(f"you have {ctx.options.max_reminders} reminders already, the most allowed; "
                        "cancel one first") from None  # fmt: skip
    except AccountNotFound:  # deleted while the command ran
        raise StanzaError("forbidden", "the account no longer exists") from None
    poke()
    again = "" if repeat == "none" else f", then {repeat}"
    return Done((("info", f"Reminder {reminder_id} is set for {format_time(due)}{again}"),),
                (Field("id", "text-single", "Reminder", values=(str(reminder_id),)),
                 Field("next", "text-single", "Next time (UTC)", values=(format_time(due),))))  # fmt: skip


def checked_reminder(text: str, when: str, now: float, max_text: int) -> tuple[str, float]:
    """A reminder's text and due time from what was typed (also the admin console's).

    Raises:
        FormError: the text is empty or longer than `max_text`; `when` is not a time
            (`parse_when`) or is in the past.
    """
    text = text.strip()
    if not text:
        raise FormError("the text is empty")
    if len(text) > max_text:
        raise FormError(f"the text has {len(text)} characters; at most {max_text} are allowed")
    due = parse_when(when, now)
    if due <= now:
        raise FormError(f"{format_time(due)} is in the past")
    return text, due


def describe(reminder: Reminder) -> str:
    """One line about a reminder: its id, next time, repeat, recipients and text."""
    first = reminder.text.split("\n", 1)[0]
    text = first if len(first) <= 60 else first[:59] + "…"
    whom = "every user" if reminder.recipients == (ALL_USERS,) else ", ".join(reminder.recipients)
    return f"{reminder.id}: {format_time(reminder.next_at)} ({reminder.repeat}) for {whom}: {text}"


async def list_reminders(ctx: IqContext, _forms: Sequence[SubmittedForm]) -> Done:
    mine = await ctx.storage.reminders.of_owner(_owner(ctx))
    if not mine:
        return Done((("info", "You have no reminders"),))
    return Done((("info", f"You have {len(mine)} reminders"),),
                (Field("reminders", "text-multi", "Reminders (id: next time in UTC)",
                       values=tuple(describe(r) for r in mine)),))  # fmt: skip


async def _cancel_fields(ctx: IqContext) -> Sequence[Field]:
    mine = await ctx.storage.reminders.of_owner(_owner(ctx))
    return (Field("id", "list-single", "Reminder to cancel", required=True,
                  options=tuple((describe(r), str(r.id)) for r in mine)),)  # fmt: skip


async def cancel(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    value = (forms[0].text("id") or "").strip()
    if not value.isdigit() or not await ctx.storage.reminders.cancel(_owner(ctx), int(value)):
        raise FormError(f"you have no reminder {value!r}")
    return Done((("info", f"Reminder {value} is cancelled"),))


COMMANDS = (
    Command(_node("schedule"), "Schedule a reminder", schedule,
            (Stage("Schedule a reminder", "When should the server send you the text?", _schedule_fields),),
            admin_only=False, form_type=NS_REMINDERS),
    Command(_node("list"), "List my reminders", list_reminders, admin_only=False, form_type=NS_REMINDERS),
    Command(_node("cancel"), "Cancel a reminder", cancel,
            (Stage("Cancel a reminder", "Choose the reminder to cancel.", _cancel_fields),),
            admin_only=False, form_type=NS_REMINDERS),
)  # fmt: skip
