"""XEP-0133 Service Administration: the commands a company's administrator needs, as XEP-0050
commands of the server (`Command`), with the nodes and field names of XEP-0133 §4.

Accounts are named by bare JIDs of this server's domain; a JID of another domain, a full JID
where a bare one is expected, or a name that fails PRECIS preparation is a form error (the form
is shown again with the reason). Commands that take several accounts do what they can and report
the accounts they could not act on in an error note.

What ends sessions: deleting an account (its sessions end with ``not-authorized``, as XEP-0077
removal does), disabling it (``not-authorized``: it cannot log in again, SASL answers
``account-disabled``, until ``reenable-user``), and ``end-user-session`` (``policy-violation``,
for every resource of a bare JID or for one full JID); on every worker.
"""

from __future__ import annotations

from collections.abc import Sequence

from imactor.modules.adhoc.announce import (
    ANNOUNCE_FIELDS,
    MOTD_FIELD,
    announce,
    check_announcement,
    current_motd,
    delete_motd,
    set_motd,
)
from imactor.modules.adhoc.commands import Command, Done, Note, Stage, static
from imactor.server.modules import IqContext
from imactor.storage import AccountExists, AccountNotFound
from imactor.xmpp.dataforms import Field, FormError, SubmittedForm
from imactor.xmpp.jid import JID, InvalidJID, prep_password
from imactor.xmpp.namespaces import NS_ADMIN

__all__ = ["COMMANDS", "account_jid", "account_jids", "password_of"]

#: XEP-0133 §4.18-4.20: how many users a list shows.
MAX_ITEMS = ("25", "50", "75", "100", "150", "200", "none")


def _node(name: str) -> str:
    return f"{NS_ADMIN}#{name}"


# ---- reading the forms ---------------------------------------------------------------------------


def account_jid(domain: str, value: str | None, *, full: bool = False) -> JID:
    """An account of `domain` named in a form (`full`: a full JID is accepted too).

    Raises:
        FormError: not a JID, not one of `domain`'s accounts, or a full JID where a bare one is due.
    """
    if not value or not value.strip():
        raise FormError("name an account (user@domain)")
    try:
        jid = JID.parse(value.strip())
    except InvalidJID:
        raise FormError(f"{value!r} is not a valid JID") from None
    if jid.localpart is None or jid.domainpart != domain:
        raise FormError(f"{value} is not an account of {domain}")
    if jid.resourcepart is not None and not full:
        raise FormError(f"{value}: name the account by its bare JID")
    return jid


def account_jids(domain: str, form: SubmittedForm, *, full: bool = False) -> list[JID]:
    """The accounts of the jid-multi field ``accountjids`` (at least one), as `account_jid`."""
    values = [value for value in form.texts("accountjids") if value.strip()]
    if not values:
        raise FormError("name at least one account (accountjids)")
    return [account_jid(domain, value, full=full) for value in values]


def password_of(form: SubmittedForm, var: str = "password") -> str:
    """The password of a text-private field, prepared (RFC 8265 OpaqueString); never empty."""
    password = form.text(var) or ""
    if not password:
        raise FormError("the password is empty")
    try:
        return prep_password(password)
    except (InvalidJID, ValueError):
        raise FormError("the password has characters a password may not have") from None


def _report(done: list[str], done_text: str, missing: list[str]) -> Done:
    notes: list[Note] = []
    if done:
        notes.append(("info", f"{done_text}: {', '.join(done)}"))
    if missing:
        notes.append(("error", f"No such account: {', '.join(missing)}"))
    return Done(tuple(notes))


_ACCOUNTJIDS = Field("accountjids", "jid-multi", "The Jabber ID(s) of the accounts", required=True)


# ---- accounts ---------------------------------------------------------------------------------


async def _add_user(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    (form,) = forms
    jid = account_jid(ctx.server.domain, form.text("accountjid"))
    password = password_of(form)
    if form.text("password-verify") != form.text("password"):
        raise FormError("the two passwords differ")
    try:
        await ctx.storage.accounts.create(ctx.server.account_of(jid) or "", password,
                                          iterations=ctx.config.auth.scram_iterations)  # fmt: skip
    except AccountExists:
        raise FormError(f"{jid} exists already") from None
    return Done((("info", f"Created {jid}"),))


async def _delete_user(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    deleted, missing = [], []
    for jid in account_jids(ctx.server.domain, forms[0]):
        username = ctx.server.account_of(jid) or ""
        try:
            await ctx.storage.accounts.delete(username)
        except AccountNotFound:
            missing.append(str(jid))
            continue
        await ctx.server.account_removed(username)  # its sessions end, its actor forgets it
        deleted.append(str(jid))
    return _report(deleted, "Deleted", missing)


async def _disable_user(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    disabled, missing = [], []
    for jid in account_jids(ctx.server.domain, forms[0]):
        username = ctx.server.account_of(jid) or ""
        try:
            await ctx.storage.accounts.set_disabled(username, True)
        except AccountNotFound:
            missing.append(str(jid))
            continue
        await ctx.server.end_sessions(username, condition="not-authorized", text="account disabled")
        disabled.append(str(jid))
    return _report(disabled, "Disabled", missing)


async def _reenable_user(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    enabled, missing = [], []
    for jid in account_jids(ctx.server.domain, forms[0]):
        try:
            await ctx.storage.accounts.set_disabled(ctx.server.account_of(jid) or "", False)
        except AccountNotFound:
            missing.append(str(jid))
            continue
        enabled.append(str(jid))
    return _report(enabled, "Enabled", missing)


async def _end_user_session(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    ended = []
    for jid in account_jids(ctx.server.domain, forms[0], full=True):
        account = ctx.server.account_of(jid) or ""
        await ctx.server.end_sessions(account, jid.resourcepart, condition="policy-violation",
                                      text="session ended by an administrator")  # fmt: skip
        ended.append(str(jid))
    return Done((("info", f"Ended the sessions of {', '.join(ended)}"),))


async def _change_user_password(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    (form,) = forms
    jid = account_jid(ctx.server.domain, form.text("accountjid"))
    password = password_of(form)
    try:
        await ctx.storage.accounts.set_password(ctx.server.account_of(jid) or "", password,
                                                iterations=ctx.config.auth.scram_iterations)  # fmt: skip
    except AccountNotFound:
        raise FormError(f"no such account: {jid}") from None
    return Done((("info", f"Changed the password of {jid}"),))


# ---- counts and lists ------------------------------------------------------------------------


async def _online_users(ctx: IqContext) -> list[str]:
    return sorted({str(jid.bare) for jid in await ctx.server.online_sessions()})


async def _registered_num(ctx: IqContext, _forms: Sequence[SubmittedForm]) -> Done:
    count = await ctx.storage.accounts.count()
    return Done(result=(Field("registeredusersnum", "text-single", "The number of registered users",
                              values=(str(count),)),))  # fmt: skip


async def _disabled_num(ctx: IqContext, _forms: Sequence[SubmittedForm]) -> Done:
    count = await ctx.storage.accounts.count(disabled=True)
    return Done(result=(Field("disabledusersnum", "text-single", "The number of disabled users",
                              values=(str(count),)),))  # fmt: skip


def _limit(form: SubmittedForm) -> int | None:
    """XEP-0133 ``max_items``: how many to list (None: all)."""
    chosen = form.choice("max_items", MAX_ITEMS, "none")
    return None if chosen in (None, "none") else int(chosen)


async def _stored_list(ctx: IqContext, form: SubmittedForm, *, disabled: bool, var: str, label: str) -> Done:
    limit = _limit(form)
    names = await ctx.storage.accounts.list_page(limit=limit, disabled=disabled)
    notes: tuple[Note, ...] = ()
    if limit is not None and len(names) == limit:
        total = await ctx.storage.accounts.count(disabled=disabled)
        if total > limit:
            notes = (("info", f"the first {limit} of {total}"),)
    jids = [str(ctx.server.account_jid(name)) for name in names]  # every host's accounts
    return Done(notes, (Field(var, "jid-multi", label, values=jids),))


async def _registered_list(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    return await _stored_list(ctx, forms[0], disabled=False, var="registereduserjids",
                              label="The list of all users")  # fmt: skip


async def _disabled_list(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    return await _stored_list(ctx, forms[0], disabled=True, var="disableduserjids",
                              label="The list of all disabled users")  # fmt: skip


async def _online_num(ctx: IqContext, _forms: Sequence[SubmittedForm]) -> Done:
    count = len(await _online_users(ctx))
    return Done(result=(Field("onlineusersnum", "text-single", "The number of online users",
                              values=(str(count),)),))  # fmt: skip


def _check_max_items(form: SubmittedForm) -> None:
    form.choice("max_items", MAX_ITEMS)


async def _online_list(ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    limit = _limit(forms[0])
    users = await _online_users(ctx)
    shown = users if limit is None else users[:limit]
    notes: tuple[Note, ...] = ()
    if len(shown) < len(users):
        notes = (("info", f"the first {len(shown)} of {len(users)}"),)
    return Done(notes, (Field("onlineuserjids", "jid-multi", "The list of all online users", values=shown),))


_MAX_ITEMS = Field("max_items", "list-single", "Maximum number of items to show", values=("100",),
                   options=tuple((value.capitalize(), value) for value in MAX_ITEMS))  # fmt: skip


def _list_stage(title: str, what: str) -> Stage:
    return Stage(title, f"Fill out this form to request {what} of this service.", static(_MAX_ITEMS),
                 _check_max_items)  # fmt: skip


COMMANDS: tuple[Command, ...] = (
    Command(_node("add-user"), "Add a User", _add_user, (Stage(
        "Adding a User", "Fill out this form to add a user.",
        static(Field("accountjid", "jid-single", "The Jabber ID for the account to be added", required=True),
               Field("password", "text-private", "The password for this account", required=True),
               Field("password-verify", "text-private", "Retype password", required=True))),)),
    Command(_node("delete-user"), "Delete a User", _delete_user, (Stage(
        "Deleting a User", "Fill out this form to delete a user and all of their data.",
        static(_ACCOUNTJIDS)),)),
    Command(_node("disable-user"), "Disable a User", _disable_user, (Stage(
        "Disabling a User", "Fill out this form to disable a user: they cannot log in until re-enabled.",
        static(_ACCOUNTJIDS)),)),
    Command(_node("reenable-user"), "Re-Enable a User", _reenable_user, (Stage(
        "Re-Enabling a User", "Fill out this form to let a disabled user log in again.",
        static(_ACCOUNTJIDS)),)),
    Command(_node("end-user-session"), "End a User Session", _end_user_session, (Stage(
        "Ending a User Session", "A bare JID ends every session of the account; a full JID ends one.",
        static(Field("accountjids", "jid-multi", "The Jabber ID(s) whose sessions end", required=True))),)),
    Command(_node("change-user-password"), "Change a User Password", _change_user_password, (Stage(
        "Changing a User Password", "Fill out this form to change a user's password.",
        static(Field("accountjid", "jid-single", "The Jabber ID for this account", required=True),
               Field("password", "text-private", "The new password for this account", required=True))),)),
    Command(_node("get-registered-users-num"), "Get Number of Registered Users", _registered_num),
    Command(_node("get-online-users-num"), "Get Number of Online Users", _online_num),
    Command(_node("get-disabled-users-num"), "Get Number of Disabled Users", _disabled_num),
    Command(_node("get-registered-users-list"), "Get List of Registered Users", _registered_list,
            (_list_stage("Requesting List of Registered Users", "the registered users"),)),
    Command(_node("get-disabled-users-list"), "Get List of Disabled Users", _disabled_list,
            (_list_stage("Requesting List of Disabled Users", "the disabled users"),)),
    Command(_node("get-online-users-list"), "Get List of Online Users", _online_list,
            (_list_stage("Requesting List of Online Users", "the online users"),)),
    Command(_node("announce"), "Send Announcement to Online Users", announce, (Stage(
        "Making an Announcement", "Fill out this form to make an announcement to all online users.",
        static(*ANNOUNCE_FIELDS), check_announcement),)),
    Command(_node("set-motd"), "Set Message of the Day", set_motd, (Stage(
        "Setting the Message of the Day", "Fill out this form to set the message of the day.",
        static(MOTD_FIELD)),)),
    Command(_node("edit-motd"), "Edit Message of the Day", set_motd, (Stage(
        "Editing the Message of the Day", "Fill out this form to edit the message of the day.",
        current_motd),)),
    Command(_node("delete-motd"), "Delete Message of the Day", delete_motd),
)  # fmt: skip
