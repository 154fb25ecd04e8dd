"""XEP-0133 §4.23-4.26: announcements to every online user, and the message of the day.

An announcement is a message from the server's JID, handed to every bound client session of every
worker (`ServerApi.announce`); nothing keeps it for users who are offline. Its type is
``headline`` (RFC 6121 §5.2.2: clients show it and keep no conversation) or, when the form's
extra field ``type`` asks for it, ``normal``, which clients show as a message to read. The
message of the day is stored (`imactor.storage.motd`): setting it sends it to every session at
once, and the ``adhoc`` module's presence hook sends it to each session that starts afterwards,
as a ``normal`` message with the subject "Message of the day", until it is deleted.
"""

from __future__ import annotations

from collections.abc import Sequence

from imactor.modules.adhoc.commands import Done
from imactor.server.modules import IqContext
from imactor.xmpp import stanza as st
from imactor.xmpp.dataforms import Field, FormError, SubmittedForm
from imactor.xmpp.namespaces import NS_CLIENT

__all__ = [
    "ANNOUNCE_FIELDS", "ANNOUNCE_TYPES", "MOTD_FIELD", "MOTD_SUBJECT", "announce", "announcement",
    "check_announcement", "current_motd", "delete_motd", "motd_message", "set_motd",
]  # fmt: skip

MOTD_SUBJECT = "Message of the day"
MOTD_FIELD = Field("motd", "text-multi", "Message of the Day", required=True)
#: The message types an announcement may have (the first is the default).
ANNOUNCE_TYPES = ("headline", "normal")
ANNOUNCE_FIELDS = (
    Field("subject", "text-single", "Subject"),
    Field("announcement", "text-multi", "Announcement", required=True),
    # Not in XEP-0133 (which allows a service more fields): how clients show it.
    Field("type", "list-single", "Message type", values=(ANNOUNCE_TYPES[0],),
          options=(("Headline", "headline"), ("Normal message", "normal"))),
)  # fmt: skip


def check_announcement(form: SubmittedForm) -> None:
    form.choice("type", ANNOUNCE_TYPES)
    if not _multiline(form, "announcement"):
        raise FormError("the announcement is empty")


def _multiline(form: SubmittedForm, var: str) -> str:
    """A text-multi field: one line per value (XEP-0004 §3.3)."""
    return "\n".join(form.texts(var)).strip()


def _message(ctx: IqContext, kind: str, subject: str, body: str) -> st.Element:
    return announcement(ctx.server.domain, kind, subject, body)


def announcement(domain: str, kind: str, subject: str, body: str) -> st.Element:
    """An announcement from the server's JID, without `to` (`ServerApi.announce` addresses it);
    also what the admin console sends (through the status socket's ``announce`` command)."""
    message = st.make("message", from_=domain, type_=kind)
    if subject:
        st.child(message, NS_CLIENT, "subject", subject)
    st.child(message, NS_CLIENT, "body", body)
    return message


def motd_message(domain: str, text: str, to: str) -> st.Element:
    """The message of the day as a session gets it when it starts."""
    message = st.make("message", from_=domain, to=to, type_="normal")
    st.child(message, NS_CLIENT, "subject", MOTD_SUBJECT)
    st.child(message, NS_CLIENT, "body", text)
    return message


async def announce(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    (form,) = forms
    kind = form.choice("type", ANNOUNCE_TYPES, ANNOUNCE_TYPES[0]) or ANNOUNCE_TYPES[0]
    subject = (form.text("subject") or "").strip()
    await ctx.server.announce(_message(ctx, kind, subject, _multiline(form, "announcement")))
    return Done((("info", "The announcement was sent to every online user"),))


async def set_motd(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    text = _multiline(forms[0], "motd")
    if not text:
        raise FormError("the message of the day is empty")
    await ctx.storage.motd.set(text)
    # XEP-0133 §4.24: online users get it now, the others when they next log in.
    await ctx.server.announce(_message(ctx, "normal", MOTD_SUBJECT, text))
    return Done((("info", "The message of the day is set"),))


async def current_motd(ctx: IqContext) -> Sequence[Field]:
    current = await ctx.storage.motd.get()
    lines = tuple(current.split("\n")) if current else ()
    return (Field("motd", "text-multi", "Message of the Day", values=lines, required=True),)


async def delete_motd(ctx: IqContext, _forms: Sequence[SubmittedForm]) -> Done:
    if await ctx.storage.motd.delete():
        return Done((("info", "The message of the day is deleted"),))
    return Done((("warn", "No message of the day was set"),))
