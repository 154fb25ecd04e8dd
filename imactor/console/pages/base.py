"""What every page is: a path, a title, a view (HTML of the page's body) and its changes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imactor.console.access import NodeAccess
    from imactor.console.auth import AdminSession

log = logging.getLogger("imactor.console")


class Invalid(Exception):
    """A change the page refuses (a malformed or impossible value): nothing was changed, and
    the message is shown on the page."""


class Confirm(Exception):
    """A change that destroys data asks first: the page shows `question` and a button that
    submits the same form again with ``confirm=yes``. Nothing was changed yet."""

    def __init__(self, question: str, button: str) -> None:
        super().__init__(question)
        self.question, self.button = question, button


def confirmed(context: Context, question: str, button: str) -> None:
    """Raise `Confirm` unless the form says the administrator confirmed."""
    if context.form.get("confirm") != "yes":
        raise Confirm(question, button)


@dataclass(frozen=True)
class Context:
    access: NodeAccess
    session: AdminSession
    form: Mapping[str, str]  #: the POSTed fields (a refused change's, to show them again)
    query: Mapping[str, str]  #: the URL's query

    def value(self, name: str) -> str:
        return self.form.get(name, "").strip()

    @property
    def username(self) -> str:
        """The logged-in administrator's username."""
        return self.session.jid.partition("@")[0]


@dataclass(frozen=True)
class Page:
    path: str
    title: str
    view: Callable[[Context], Awaitable[str]]
    #: ``change(context, action)`` → what was done, for the next view; raises `Invalid`.
    change: Callable[[Context, str], Awaitable[str]]


async def no_change(_context: Context, action: str) -> str:
    raise Invalid(f"unknown action {action!r}")


def unknown(action: str) -> Invalid:
    return Invalid(f"unknown action {action!r}")


async def tell_workers(context: Context, what: str) -> str:
    """Have the running workers read `what` again now (``reload-modules``, as the CLI does
    after a change); a note for the page when some did not confirm."""
    answer: Mapping[str, Any] = await context.access.command("reload-modules")
    workers = answer.get("workers", [answer])
    failed = [w for w in workers if isinstance(w, Mapping) and "error" in w]
    if failed or "error" in answer:
        log.warning("console: not every worker confirmed the new %s: %s", what, answer)
        return f" (not every worker confirmed; they read the {what} within check_interval seconds)"
    return ""
