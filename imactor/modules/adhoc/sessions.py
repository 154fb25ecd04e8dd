"""XEP-0050 command sessions: one per execution of a multi-stage command, named by its
`sessionid`, owned by the full JID that started it, and ended by completion, cancellation or
time-out. Pure: the caller passes the time (monotonic seconds) to every call.

A session that timed out is remembered for as long again, so that a late stage gets
``session-expired`` (XEP-0050 §4.6) rather than ``bad-sessionid``; after that it is forgotten.
The table is bounded: each owner keeps at most `per_owner` open sessions and the table `limit`
in all, the oldest giving way (its id then gets ``bad-sessionid``).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from imactor.xmpp.dataforms import SubmittedForm
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_COMMANDS

__all__ = ["CommandSession", "CommandSessions", "bad_sessionid", "session_expired"]


def bad_sessionid(text: str = "") -> StanzaError:
    """§4.6: the sessionid is unknown (or not the requester's, or not this node's)."""
    return StanzaError("bad-request", text, app_condition=(NS_COMMANDS, "bad-sessionid"))


def session_expired(text: str = "") -> StanzaError:
    """§4.6: the session existed but timed out."""
    return StanzaError("not-allowed", text, app_condition=(NS_COMMANDS, "session-expired"))


@dataclass
class CommandSession:
    """One execution of a command: where it stands and what was submitted so far."""

    id: str
    owner: JID  #: the full JID that started it: only it may go on
    node: str
    expires: float  #: monotonic time after which it is over
    stage: int = 0  #: the index of the form shown last
    forms: list[SubmittedForm] = field(default_factory=list)  #: the stages' submissions, in order


class CommandSessions:
    """The open (and recently expired) command sessions of one worker."""

    def __init__(self, *, per_owner: int = 8, limit: int = 4096) -> None:
        self.per_owner, self.limit = per_owner, limit
        self._open: OrderedDict[str, CommandSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def open(self, owner: JID, node: str, now: float, timeout: float) -> CommandSession:
        """Start a session of `node` for `owner`, valid for `timeout` seconds of inactivity."""
        self._sweep(now, timeout)
        mine = [s for s in self._open.values() if s.owner == owner and s.expires > now]
        for oldest in mine[: max(0, len(mine) - self.per_owner + 1)]:
            del self._open[oldest.id]
        while len(self._open) >= self.limit:
            self._open.popitem(last=False)
        session = CommandSession(f"{node.rpartition('#')[2]}:{secrets.token_urlsafe(12)}", owner, node,
                                 now + timeout)  # fmt: skip
        self._open[session.id] = session
        return session

    def find(self, owner: JID, node: str, sessionid: str, now: float, timeout: float) -> CommandSession:
        """The open session `sessionid` of `owner` on `node`, its time-out renewed.

        Raises:
            StanzaError: ``bad-sessionid`` (unknown, another JID's or another node's),
                ``session-expired`` (timed out: it is forgotten now).
        """
        session = self._open.get(sessionid)
        if session is None or session.owner != owner or session.node != node:
            raise bad_sessionid("no such command session")
        if session.expires <= now:
            del self._open[sessionid]
            raise session_expired("the command session timed out; execute the command again")
        session.expires = now + timeout
        self._open.move_to_end(sessionid)
        return session

    def close(self, session: CommandSession) -> None:
        self._open.pop(session.id, None)

    def _sweep(self, now: float, timeout: float) -> None:
        """Forget sessions expired for longer than `timeout` (the late stages' grace)."""
        for sessionid in [i for i, s in self._open.items() if s.expires + timeout <= now]:
            del self._open[sessionid]
