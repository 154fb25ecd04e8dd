"""The console's pages, in the navigation's order (`imactor.console.html.NAVIGATION`)."""

from __future__ import annotations

from imactor.console.pages import accounts, announcements, departments, overview, reminders, words
from imactor.console.pages.base import Page

PAGES: tuple[Page, ...] = (
    overview.PAGE,
    accounts.PAGE,
    departments.PAGE,
    words.PAGE,
    announcements.PAGE,
    reminders.PAGE,
)
