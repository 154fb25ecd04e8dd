"""Word lists: the sensitive-word filter's lists, with their scope, action and words.

Create a list (name, scope, action, first words), add words (one word or phrase a line), remove
a word, set the scope and action, delete a list. The calls are those of ``imactor filter ...``
(`WordListStore`, whose checks refuse an empty or enormous word before anything is written), and
the running workers then read the lists again (``reload-modules``), so that the next message is
filtered by the new lists, as after the CLI.
"""

from __future__ import annotations

from imactor.console import html
from imactor.console.html import esc
from imactor.console.pages.base import Context, Invalid, Page, confirmed, tell_workers, unknown
from imactor.storage.word_lists import NoSuchList, check_name, parse_scope
from imactor.wordmatch import ACTIONS, BadWord

PATH = "/words"
#: Words one form may add (a larger list: ``imactor filter import``).
MAX_WORDS = 2000


async def view(context: Context) -> str:
    csrf = context.session.csrf
    lists = (await context.access.storage.word_lists.load()).lists
    actions = [(action, action) for action in ACTIONS]
    create = html.form(
        PATH,
        "add",
        html.field("List name", "name", required=True, value=context.value("name"), placeholder="profanity")
        + html.field(
            "Scope",
            "scope",
            value=context.value("scope") or "server",
            placeholder="server, domain:D or room:R",
        )
        + html.select("Action", "list_action", actions, context.value("list_action") or "mask")
        + html.textarea("Words or phrases, one a line", "lines", value=context.form.get("lines", "")),
        "Create or add",
        csrf,
    )
    body = html.section(
        "Create a list, or add words to one",
        create,
        note="mask: shown as ***; reject: refused with policy-violation; "
        "alert: delivered, and the compliance admins are told.",
    )
    if "word_filter" not in context.access.config.server.modules:
        body = (
            '<p class="notice error">The word_filter module is not in server.modules: '
            "no list applies until it is.</p>"
        ) + body
    for word_list in lists:
        name = html.hidden("name", word_list.name)
        words = html.removable(
            PATH,
            "remove",
            csrf,
            ((f"<code>{esc(word)}</code>", name + html.hidden("word", word)) for word in word_list.words),
            empty="no words",
        )
        add = html.form(
            PATH,
            "add",
            name + html.field("Add words (a space between)", "words", required=True),
            "Add",
            csrf,
            style="inline",
        )
        settings = html.form(
            PATH,
            "set",
            name
            + html.field("Scope", "scope", value=word_list.scope)
            + html.select("Action", "list_action", actions, word_list.action),
            "Save",
            csrf,
            style="inline",
        )
        drop = html.form(PATH, "drop", name, "Delete list", csrf, style="inline danger")
        title = f"{word_list.name}: {word_list.action}, {word_list.scope}, {len(word_list.words)} words"
        body += html.section(title, f'<div class="words">{words}</div>{add}<p></p>{settings}{drop}')
    if not lists:
        body += html.section("Lists", '<p class="empty">No word lists yet.</p>')
    return body


async def change(context: Context, action: str) -> str:
    store = context.access.storage.word_lists
    try:
        name = check_name(context.value("name"))
        if action == "add":
            words = _words(context)
            if not words:
                raise Invalid("give at least one word")
            added = await store.add_words(name, words, scope=_scope(context), action=_action(context))
            done = f"{name}: added {added} words ({len(words) - added} were there)"
        elif action == "remove":
            removed = await store.remove_words(name, [context.form.get("word", "")])
            done = f"{name}: removed {removed} words"
        elif action == "set":
            await store.configure(name, scope=_scope(context), action=_action(context))
            done = f"{name}: saved"
        elif action == "drop":
            confirmed(context, f"Delete the word list {name} and its words?", "Delete the list")
            if not await store.drop(name):
                raise NoSuchList(name)
            done = f"{name}: deleted"
        else:
            raise unknown(action)
    except (BadWord, ValueError) as exc:
        raise Invalid(str(exc)) from None
    except NoSuchList:
        raise Invalid(f"no word list {context.value('name')!r}") from None
    return done + await tell_workers(context, "word lists")


def _words(context: Context) -> list[str]:
    """The words of a form: ``lines`` has one word or phrase a line, ``words`` words between spaces."""
    words = [line.strip() for line in context.form.get("lines", "").splitlines() if line.strip()]
    words += context.form.get("words", "").split()
    if len(words) > MAX_WORDS:
        raise Invalid(f"{len(words)} words in one form; at most {MAX_WORDS} (imactor filter import for more)")
    return words


def _scope(context: Context) -> str | None:
    raw = context.value("scope")
    if not raw:
        return None
    config = context.access.config
    try:
        return parse_scope(raw, config.server.domain, f"{config.muc.subdomain}.{config.server.domain}")
    except ValueError as exc:
        raise Invalid(f"scope {exc}") from None


def _action(context: Context) -> str | None:
    chosen = context.value("list_action")
    if chosen and chosen not in ACTIONS:
        raise Invalid(f"unknown action {chosen!r}: expected one of {', '.join(ACTIONS)}")
    return chosen or None


PAGE = Page(PATH, "Word lists", view, change)
