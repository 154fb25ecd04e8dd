"""XEP-0050: Ad-Hoc Commands, with the XEP-0133 Service Administration commands.

The server's JID offers commands to the administrators of ``[server] admins``:

- discovery: disco#items of the node ``http://jabber.org/protocol/commands`` lists the commands
  the requester may run (every one for an administrator, none for anyone else, as Prosody and
  ejabberd do); disco#info of a command's node gives its identity (automation/command-node) and
  features to an administrator and ``forbidden`` to others;
- execution (§4): ``execute`` starts a session (its ``sessionid``) and shows the first form, with
  the actions allowed (``next`` / ``prev`` between stages, ``complete`` on the last; a submission
  without an action takes the default, `<actions execute=.../>`); ``cancel`` ends it. A completed
  command answers with notes and, for counts and lists, a result form (FORM_TYPE
  ``http://jabber.org/protocol/admin``). A value the command refuses shows the same form again
  with an error note.
- errors (§4.6): an unknown node ``item-not-found``; a requester who is not an administrator
  ``forbidden``; an unknown action ``bad-request`` <malformed-action/>; an action the stage does
  not offer ``bad-request`` <bad-action/>; an unknown session (or another JID's) ``bad-request``
  <bad-sessionid/>; a session idle for longer than ``session_timeout`` seconds ``not-allowed``
  <session-expired/>; a stage submitted without its form, or with another FORM_TYPE,
  ``bad-request`` <bad-payload/>.

Sessions live in the worker that runs the requester's client session (the IQs of one full JID
all reach its session task there), in memory: a client that resumes its stream on another
worker starts its command again. At most 8 open sessions per requester.

The commands (`admin.py`): add-user, delete-user, disable-user, reenable-user, end-user-session,
change-user-password, get-registered-users-num, get-disabled-users-num, get-online-users-num,
get-registered-users-list, get-disabled-users-list, get-online-users-list; and (`announce.py`)
announce (a headline or normal message to every online session, on every worker), set-motd, edit-motd,
delete-motd. The message of the day is stored in the database and sent to each client session
once, when it sends its first available presence (Prosody's mod_motd), until it is deleted;
setting it also sends it to every online session at once (XEP-0133 §4.24).

Options (``[modules.adhoc]``): ``session_timeout`` (seconds, default 600).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from imactor.modules.adhoc import admin, reminder_task, reminders
from imactor.modules.adhoc.announce import motd_message
from imactor.modules.adhoc.commands import Command, Done, Note
from imactor.modules.adhoc.rights import is_admin
from imactor.modules.adhoc.sessions import CommandSession, CommandSessions, bad_sessionid
from imactor.server.modules import (
    IqContext,
    Module,
    ModuleConfigError,
    NodeInfo,
    PresenceContext,
    Xep,
    storage_failure,
)
from imactor.storage.errors import StorageError
from imactor.xmpp import dataforms
from imactor.xmpp import stanza as st
from imactor.xmpp.dataforms import FormError, SubmittedForm
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID, InvalidJID
from imactor.xmpp.namespaces import NS_ADMIN, NS_COMMANDS, NS_DATA_FORMS

ACTIONS = ("execute", "next", "prev", "complete", "cancel")
#: The key of the per-resource state that says this session had the message of the day.
MOTD_SENT = "adhoc.motd"


@dataclass(frozen=True)
class Options:
    session_timeout: float = 600.0  #: seconds a command session waits for its next stage
    max_reminders: int = 50  #: active reminders an account may have
    max_reminder_text: int = 2000  #: characters of a reminder's text
    #: Seconds between looks for reminders scheduled on other workers or nodes.
    reminder_recheck: float = 30.0

    def __post_init__(self) -> None:
        value: object = self.session_timeout  # TOML gives an int, a float, or anything else
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86400:
            raise ModuleConfigError(f"modules.adhoc.session_timeout: expected seconds in (0, 86400], "
                                    f"got {self.session_timeout!r}")  # fmt: skip
        for name, top in (("max_reminders", 100_000), ("max_reminder_text", 100_000)):
            count: object = getattr(self, name)
            if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= top:
                raise ModuleConfigError(f"modules.adhoc.{name}: expected an integer in [1, {top}], "
                                        f"got {count!r}")  # fmt: skip
        recheck: object = self.reminder_recheck
        if isinstance(recheck, bool) or not isinstance(recheck, int | float) or not 0.1 <= recheck <= 3600:
            raise ModuleConfigError(f"modules.adhoc.reminder_recheck: expected seconds in [0.1, 3600], "
                                    f"got {self.reminder_recheck!r}")  # fmt: skip


class _Nodes:
    """The disco nodes of the commands (`Module.host_nodes`)."""

    async def items(self, ctx: IqContext, node: str) -> list[tuple[str, str | None, str | None]] | None:
        if node != NS_COMMANDS:
            return None
        return [(ctx.server.domain, command.node, command.name) for command in COMMANDS.values()
                if may_run(ctx, command)]  # fmt: skip

    async def info(self, ctx: IqContext, node: str) -> NodeInfo | None:
        if node == NS_COMMANDS:
            return NodeInfo((("automation", "command-list", "Commands"),), ())
        command = COMMANDS.get(node)
        if command is None:
            return None
        refuse_unless_allowed(ctx, command)
        return NodeInfo((("automation", "command-node", command.name),), (NS_COMMANDS, NS_DATA_FORMS))


module = Module(
    name="adhoc", summary="Ad-Hoc Commands: service administration, reminders",
    xeps=(Xep("0050", "1.3.0", "complete"),
          Xep("0133", "1.3.1", "partial: users, sessions, counts and lists, announce, motd")),
    features=(NS_COMMANDS,), options=Options, host_nodes=_Nodes(),
)  # fmt: skip

module.background(reminder_task.deliver_reminders)

COMMANDS: dict[str, Command] = {command.node: command for command in (*admin.COMMANDS, *reminders.COMMANDS)}

#: This worker's command sessions (the module docstring says why they may live here).
_SESSIONS = CommandSessions()


def may_run(ctx: IqContext, command: Command) -> bool:
    """Administrators run every command; the server's other accounts the ones for users."""
    if is_admin(ctx):
        return True
    if command.admin_only:
        return False
    return ctx.from_jid.localpart is not None and ctx.from_jid.domainpart == ctx.server.domain


def refuse_unless_allowed(ctx: IqContext, command: Command) -> None:
    if not may_run(ctx, command):
        if command.admin_only:
            raise StanzaError("forbidden", "only the server's administrators may run this command")
        raise StanzaError("forbidden", "only the server's own accounts may run this command")


@module.iq("set", NS_COMMANDS, "command")
async def execute(ctx: IqContext) -> st.Element:
    payload = ctx.payload
    node = payload.get("node", "")
    command = COMMANDS.get(node)
    if command is None:
        raise StanzaError("item-not-found", "no such command")
    refuse_unless_allowed(ctx, command)
    action = payload.get("action", "execute")
    if action not in ACTIONS:
        raise StanzaError("bad-request", f"unknown action {action!r}",
                          app_condition=(NS_COMMANDS, "malformed-action"))  # fmt: skip
    now, timeout = time.monotonic(), float(ctx.options.session_timeout)
    sessionid = payload.get("sessionid")
    try:
        if sessionid is None:
            if action != "execute":
                raise bad_sessionid(f"{action} needs the sessionid of a running command")
            session = _SESSIONS.open(ctx.from_jid, node, now, timeout)
            if not command.stages:
                return await _complete(ctx, command, session)
            return await _show(ctx, command, session)
        session = _SESSIONS.find(ctx.from_jid, node, sessionid, now, timeout)
        return await _go_on(ctx, command, session, action)
    except StorageError as exc:
        raise storage_failure(exc, "the change") from exc


async def _go_on(ctx: IqContext, command: Command, session: CommandSession, action: str) -> st.Element:
    """A later stage of a session (§4.4): the action against the ones the stage offered."""
    if action == "cancel":
        _SESSIONS.close(session)
        return _reply(ctx, session, "canceled")
    last = len(command.stages) - 1
    if action == "execute":  # §4.4: the default action of the stage
        action = "next" if session.stage < last else "complete"
    if action == "prev":
        if session.stage == 0:
            raise _bad_action("the first stage has no previous one")
        session.stage -= 1
        del session.forms[session.stage :]
        return await _show(ctx, command, session)
    if (action == "next") != (session.stage < last):
        raise _bad_action(f"{action} is not one of this stage's actions")
    form = read_submission(ctx.payload, command.form_type)
    if form.type == "cancel":
        _SESSIONS.close(session)
        return _reply(ctx, session, "canceled")
    stage = command.stages[session.stage]
    try:
        if stage.check is not None:
            stage.check(form)
    except FormError as exc:
        return await _show(ctx, command, session, (("error", str(exc)),))
    session.forms[session.stage :] = [form]
    if action == "next":
        session.stage += 1
        return await _show(ctx, command, session)
    return await _complete(ctx, command, session)


async def _complete(ctx: IqContext, command: Command, session: CommandSession) -> st.Element:
    try:
        done = await command.run(ctx, tuple(session.forms))
    except FormError as exc:
        del session.forms[session.stage :]
        return await _show(ctx, command, session, (("error", str(exc)),))
    _SESSIONS.close(session)
    return _reply(ctx, session, "completed", done, command.form_type)


async def _show(
    ctx: IqContext, command: Command, session: CommandSession, notes: tuple[Note, ...] = ()
) -> st.Element:
    """The form of the session's current stage, with the actions it offers (§3.4)."""
    stage = command.stages[session.stage]
    reply = _reply(ctx, session, "executing", Done(notes), command.form_type)
    element = reply[0]
    last = session.stage == len(command.stages) - 1
    actions = st.child(element, NS_COMMANDS, "actions")
    actions.set("execute", "complete" if last else "next")
    if session.stage > 0:
        st.child(actions, NS_COMMANDS, "prev")
    st.child(actions, NS_COMMANDS, "complete" if last else "next")
    element.remove(actions)
    element.insert(0, actions)  # §3.4: <actions/>, then the notes and the form
    dataforms.build(element, "form", await stage.fields(ctx), namespace=command.form_type, title=stage.title,
                    instructions=stage.instructions)  # fmt: skip
    return reply


def _reply(ctx: IqContext, session: CommandSession, status: str, done: Done | None = None,
           form_type: str = NS_ADMIN) -> st.Element:  # fmt: skip
    reply = st.iq_result(ctx.stanza)
    element = st.child(reply, NS_COMMANDS, "command")
    element.set("node", session.node)
    element.set("sessionid", session.id)
    element.set("status", status)
    done = done or Done()
    for kind, text in done.notes:
        st.child(element, NS_COMMANDS, "note", text).set("type", kind)
    if done.result:
        dataforms.build(element, "result", done.result, namespace=form_type)
    return reply


def read_submission(payload: st.Element, form_type: str = NS_ADMIN) -> SubmittedForm:
    """The stage's submitted form (§4.4), or ``bad-payload``."""
    found = dataforms.find_form(payload)
    if found is None:
        raise _bad_payload("the stage's form is missing")
    try:
        form = dataforms.parse(found)
    except FormError as exc:
        raise _bad_payload(str(exc)) from None
    if form.type not in ("submit", "cancel"):
        raise _bad_payload(f"a form of type {form.type!r} is not a submission")
    if form.form_type not in (None, form_type):
        raise _bad_payload(f"a form of type {form.form_type} is not this command's")
    return form


def _bad_action(text: str) -> StanzaError:
    return StanzaError("bad-request", text, app_condition=(NS_COMMANDS, "bad-action"))


def _bad_payload(text: str) -> StanzaError:
    return StanzaError("bad-request", text, app_condition=(NS_COMMANDS, "bad-payload"))


# ---- the message of the day at login ---------------------------------------------------------


@module.on_presence
async def motd_at_login(ctx: PresenceContext) -> None:
    """The message of the day, once per session: at its first available presence."""
    element = ctx.stanza
    if not ctx.own or element.get("type", "") != "":
        return  # own presence reaches the hooks only when broadcast: never a directed one
    try:
        full = JID.parse(element.get("from", ""))
    except InvalidJID:
        return
    resource = full.resourcepart
    state = None if resource is None else ctx.account.resource_state(resource)
    if resource is None or state is None or MOTD_SENT in state:
        return
    ctx.account.set_resource_state(resource, MOTD_SENT, "1")
    try:
        text = await ctx.storage.motd.get()
    except StorageError:
        return  # the database logs it; a message of the day is not worth refusing a presence
    if text:
        ctx.account.send_to_resource(resource, motd_message(ctx.server.domain, text, str(full)))
