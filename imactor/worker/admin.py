"""Administrative commands a worker answers on its status socket (`imactor.node.status`).

``destroy-room``: destroy a room as its owner would (XEP-0045 §10.9): its occupants are told,
with the reason and the alternate venue, and it is deleted with its archive. The command goes to
the room's home worker (the node supervisor forwards it there), where the room's actor does it;
a room that does not exist answers ``{"destroyed": false}``, and one whose deletion could not be
stored (a full disk) an error: the room lives on, its occupants told nothing.

``logout-user``: end every session of an account on this worker (detached ones waiting for a
XEP-0198 resumption too), with the stream error ``not-authorized``: ``imactor user
logout-everywhere`` sends it to every worker after revoking the account's FAST tokens.

``reload-modules``: run the modules' reload hooks (`imactor.worker.reload.reload_modules`), as
SIGHUP does after the config: `imactor filter ...` sends it to every worker (through the node
supervisor) after changing the word lists, and answers once every worker has the new lists.

The admin console's (`imactor.console`), sent to one worker, which reaches every worker's
sessions through the module API's server view (`ServerApi`, as the XEP-0133 commands do):
``announce`` (``subject``, ``body``, ``type``: headline or normal) to every online session;
``end-sessions`` (``user``; ``removed``: the account was deleted, else disabled) ends the
account's sessions on every worker as the XEP-0133 delete-user and disable-user commands do;
``wake-reminders`` (to the node's first worker) makes its reminder task look at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from imactor import messages as m
from imactor.actors import ask
from imactor.modules.adhoc.announce import ANNOUNCE_TYPES, announcement
from imactor.modules.adhoc.reminder_task import poke
from imactor.node.status import CommandHandler
from imactor.storage.errors import StorageError
from imactor.worker.admin_wing import end_sessions_here
from imactor.worker.reload import reload_modules
from imactor.xmpp.jid import JID, InvalidJID

if TYPE_CHECKING:
    from imactor.rooms.service import MucService
    from imactor.server.services import Services

#: Seconds the room's actor has to answer.
ROOM_TIMEOUT = 8.0


def commands(services: Services, rooms: MucService | None) -> dict[str, CommandHandler]:
    async def destroy_room(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
        name, reason = arguments.get("room"), arguments.get("reason", "")
        alternate = arguments.get("alternate")
        if rooms is None:
            return {"error": "multi-user chat is not enabled ([muc] enabled)"}
        if not isinstance(name, str) or not name or not isinstance(reason, str):
            return {"error": "destroy-room needs a room name and a text reason"}
        try:
            venue = JID.parse(alternate) if isinstance(alternate, str) and alternate else None
        except InvalidJID as exc:
            return {"error": f"alternate venue: {exc}"}
        ref = await services.router.local("room", name)
        try:
            destroyed: bool = await ask(
                ref, lambda reply: m.DestroyRoom(reason, venue, reply), timeout=ROOM_TIMEOUT
            )
        except StorageError as exc:
            return {"error": f"the room was not destroyed: its deletion could not be stored ({exc})"}
        return {"room": f"{name}@{rooms.domain}", "destroyed": destroyed}

    async def reload(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"worker": services.worker_index, "hooks": await reload_modules(services)}

    async def announce(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
        subject, body, kind = arguments.get("subject", ""), arguments.get("body"), arguments.get("type")
        if not (isinstance(subject, str) and isinstance(body, str) and body and kind in ANNOUNCE_TYPES):
            return {"error": "announce needs a text body, a text subject and a type (headline or normal)"}
        await services.server.announce(announcement(services.domain, str(kind), subject, body))
        return {"announced": True}

    async def end_sessions(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
        user = arguments.get("user")
        if not isinstance(user, str) or not user:
            return {"error": "end-sessions needs a user"}
        if arguments.get("removed"):
            await services.server.account_removed(user)  # its sessions end, its actor forgets it
        else:
            await services.server.end_sessions(user, condition="not-authorized", text="account disabled")
        return {"ended": True}

    async def wake_reminders(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
        poke()
        return {"worker": services.worker_index}

    async def logout_user(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
        username = arguments.get("user")
        if not isinstance(username, str) or not username:
            return {"error": "logout-user needs a username"}
        ended = end_sessions_here(services, m.EndSessions(username, "", "not-authorized",
                                                          "logged out by an administrator"))  # fmt: skip
        return {"worker": services.worker_index, "sessions": ended}

    return {"destroy-room": destroy_room, "reload-modules": reload, "announce": announce,
            "end-sessions": end_sessions, "wake-reminders": wake_reminders,
            "logout-user": logout_user}  # fmt: skip
