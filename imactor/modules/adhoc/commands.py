"""What a command is, for the XEP-0050 engine (`imactor.modules.adhoc`): its node, its name, the
stages of forms it shows, and what it does with what was submitted.

A command without stages runs as soon as it is executed (the counts of XEP-0133). A command with
stages shows their forms in order (actions ``next`` / ``prev``; ``complete`` on the last one),
and runs with every stage's submission once the last one is completed. A `FormError` raised by a
stage's `check` or by `run` shows that stage's form again with the error as a note: the session
stays open and the administrator corrects the value.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from imactor.server.modules import IqContext
from imactor.xmpp.dataforms import Field, SubmittedForm
from imactor.xmpp.namespaces import NS_ADMIN

__all__ = ["Command", "Done", "Note", "Run", "Stage"]

#: A XEP-0050 §3.4 note: (type: "info", "warn" or "error", text).
Note = tuple[str, str]
#: What a command does once its last stage is complete: the submissions of every stage, in order.
Run = Callable[[IqContext, Sequence[SubmittedForm]], Awaitable["Done"]]


@dataclass(frozen=True)
class Done:
    """The outcome of a completed command: notes for the administrator and a result form."""

    notes: tuple[Note, ...] = ()
    result: tuple[Field, ...] = ()  #: fields of a result form (FORM_TYPE added); none: no form


@dataclass(frozen=True)
class Stage:
    """One form a command shows."""

    title: str
    instructions: str
    #: The form's fields (without FORM_TYPE), built when the stage is shown (a current value).
    fields: Callable[[IqContext], Awaitable[Sequence[Field]]]
    #: Checks a submission before the next stage is shown; raises `FormError`.
    check: Callable[[SubmittedForm], None] | None = None


@dataclass(frozen=True)
class Command:
    node: str  #: the disco node that names it (XEP-0133: http://jabber.org/protocol/admin#...)
    name: str  #: shown to people in disco#items
    run: Run
    stages: tuple[Stage, ...] = ()
    #: Only for ``[server] admins``; False: any account of the server may run it (reminders).
    admin_only: bool = True
    form_type: str = NS_ADMIN  #: the FORM_TYPE of its forms and results


def static(*fields: Field) -> Callable[[IqContext], Awaitable[Sequence[Field]]]:
    """The `Stage.fields` of a form that does not depend on the server's state."""

    async def build(_ctx: IqContext) -> Sequence[Field]:
        return fields

    return build
