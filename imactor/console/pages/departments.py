"""Departments: the company directory's tree, and the people in it.

Add a department (under another or at the top), rename, move (a move under itself or below is
refused: the tree has no cycles), delete (an empty one only); add or update a person (account,
display name, department, title, phone, e-mail), remove one from the directory. Each change is
one of `imactor.directory.org`'s edits of the directory as read, written whole by the store that
``imactor org import`` uses, only if nobody changed the directory meanwhile (`OrgChanged`); then
the running workers read it again (``reload-modules``), so that rosters of people online change
at once, as after an import.
"""

from __future__ import annotations

from imactor.console import html
from imactor.console.html import esc
from imactor.console.pages.base import Context, Invalid, Page, tell_workers, unknown
from imactor.directory.org import (
    Directory,
    Org,
    OrgError,
    Person,
    add_department,
    delete_department,
    move_department,
    place_person,
    remove_person,
    rename_department,
)
from imactor.storage.org import OrgChanged
from imactor.xmpp.jid import InvalidJID, prep_localpart

PATH = "/departments"
TOP = ""  #: the parent value that means "at the top"


async def view(context: Context) -> str:
    csrf = context.session.csrf
    _, org = await context.access.storage.org.load()
    directory = Directory(org)
    departments = list(directory.in_tree_order())
    parents = [(TOP, "(top level)"), *((d.key, directory.path(d.key)) for d in departments)]
    add = html.form(
        PATH,
        "add",
        html.field("Name", "name", required=True)
        + html.select("Under", "parent", parents, context.value("parent")),
        "Add department",
        csrf,
    )
    rows = []
    for department in departments:
        depth = len(directory.ancestors(department.key)) - 1
        key = html.hidden("key", department.key)
        indent = "&nbsp;" * 4 * depth
        name = f"{indent}<b>{esc(department.name)}</b>"
        if department.key != department.name:  # the key people and files name, when it says more
            name += f'<br>{indent}<small class="note">{esc(department.key)}</small>'
        people = html.removable(
            PATH,
            "remove-person",
            csrf,
            (
                (f"{esc(p.name)} <small>{esc(p.username)}</small>", html.hidden("username", p.username))
                for p in directory.members(department.key)
            ),
            empty="nobody",
        )
        rename = html.form(
            PATH,
            "rename",
            key + html.field("New name", "name", required=True),
            "Rename",
            csrf,
            style="inline",
        )
        others = [
            (k, label)
            for k, label in parents
            if k == TOP or k not in {d.key for d in directory.subtree(department.key)}
        ]
        move = html.form(
            PATH,
            "move",
            key + html.select("Move under", "parent", others, department.parent or TOP),
            "Move",
            csrf,
            style="inline",
        )
        delete = html.form(PATH, "delete", key, "Delete", csrf, style="inline danger")
        rows.append([name, people, rename, move + delete])
    person_fields = (
        html.field("Account (username)", "username", required=True, value=context.value("username"))
        + html.field("Display name", "person_name", required=True, value=context.value("person_name"))
        + html.select("Department", "department", parents[1:], context.value("department"))
        + html.field("Title", "title", value=context.value("title"))
        + html.field("Phone", "phone", value=context.value("phone"))
        + html.field("E-mail", "email", value=context.value("email"))
    )
    person = (
        html.form(PATH, "person", person_fields, "Save person", csrf)
        if departments
        else '<p class="note">Add a department first.</p>'
    )
    return (
        html.section("Add a department", add)
        + html.section(
            "Departments",
            html.table(
                ["Department", "People", "Rename", "Move / delete"],
                rows,
                empty="No departments yet: add one, or import a file (imactor org import).",
            ),
        )
        + html.section(
            "Add or update a person",
            person,
            note="A person already in the directory is updated (and moved to the department chosen).",
        )
    )


async def change(context: Context, action: str) -> str:
    store = context.access.storage.org
    version, org = await store.load()
    try:
        org, done = _edit(context, action, org)
        await store.replace(org, expected_version=version)
    except OrgError as exc:
        raise Invalid(str(exc)) from None
    except OrgChanged:
        raise Invalid(
            "the directory changed meanwhile (another administrator or an import): "
            "look at it again and repeat the change"
        ) from None
    return done + await tell_workers(context, "directory")


def _edit(context: Context, action: str, org: Org) -> tuple[Org, str]:
    key, name = context.value("key"), context.value("name")
    parent = context.value("parent") or None
    if action == "add":
        org, key = add_department(org, name, parent)
        return org, f"Added the department {key}"
    if action == "rename":
        return rename_department(org, key, name), f"Renamed {key} to {name}"
    if action == "move":
        return move_department(org, key, parent), f"Moved {key} under {parent or 'the top level'}"
    if action == "delete":
        return delete_department(org, key), f"Deleted the department {key}"
    if action == "person":
        username = _username(context.value("username"))
        person = Person(
            username,
            context.form.get("person_name", ""),
            context.value("department"),
            context.form.get("title", ""),
            context.form.get("phone", ""),
            context.form.get("email", ""),
        )
        return place_person(org, person), f"Saved {username} in {person.department}"
    if action == "remove-person":
        username = _username(context.value("username"))
        return remove_person(org, username), f"Removed {username} from the directory"
    raise unknown(action)


def _username(raw: str) -> str:
    try:
        return prep_localpart(raw)
    except (InvalidJID, ValueError) as exc:
        raise Invalid(f"invalid username {raw!r}: {exc}") from None


PAGE = Page(PATH, "Departments", view, change)
