"""The company directory: departments in a tree, people in them (pure: no I/O, no clock).

`Org` is what the database holds and what `imactor org import` reads (`imactor.directory.files`);
`Directory` indexes one `Org` for the questions the server asks it: whose colleague is whom
under a sharing policy (shared roster groups), who matches a search (XEP-0055), and which
departments a person belongs to (vCards).

Sharing policies (`SHARE_POLICIES`), for `[modules.directory] share`:

- ``"none"``: no shared roster groups (search and vCards only);
- ``"department"``: the members of one's own department;
- ``"parents"``: one's own department, every department above it, and, so that presence flows
  both ways (RFC 6121: a 'both' subscription has two sides), every department below it: the
  relation "sees" must be symmetric, and the symmetric closure of "own and parents" is "own,
  parents and children" (a head of Sales sees Sales/EMEA; Sales/EMEA sees Sales; EMEA and APAC
  do not see each other);
- ``"company"``: everyone.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

SHARE_POLICIES = ("none", "department", "parents", "company")
#: The fields of a person a search may name (XEP-0055 form fields), besides the name.
SEARCH_FIELDS = ("name", "department", "title", "email")


@dataclass(frozen=True, slots=True)
class Department:
    key: str  #: stable identifier: the path from a CSV file ("Sales/EMEA"), the "id" from JSON
    name: str  #: shown as the roster group
    parent: str | None  #: the parent's key; None: a top-level department
    position: int = 0  #: order among its siblings (the file's order)


@dataclass(frozen=True, slots=True)
class Person:
    username: str  #: the account's localpart (prepared, RFC 7622)
    name: str  #: display name (vCard FN, roster item name)
    department: str  #: the department's key
    title: str = ""
    phone: str = ""
    email: str = ""
    position: int = 0  #: order within the department (the file's order)


@dataclass(frozen=True, slots=True)
class Org:
    departments: tuple[Department, ...] = ()
    people: tuple[Person, ...] = ()


class OrgError(ValueError):
    """The organisation is not a tree of departments with people in existing departments."""


def check(org: Org) -> None:
    """Raises `OrgError` for duplicate keys or usernames, an unknown parent or department, or a
    cycle among the departments (a department that is its own ancestor)."""
    keys: dict[str, Department] = {}
    for department in org.departments:
        if department.key in keys:
            raise OrgError(f"department {department.key!r} appears twice")
        keys[department.key] = department
    for department in org.departments:
        if department.parent is not None and department.parent not in keys:
            raise OrgError(f"department {department.key!r}: unknown parent {department.parent!r}")
    for department in org.departments:
        _check_no_cycle(department, keys)
    usernames: set[str] = set()
    for person in org.people:
        if person.username in usernames:
            raise OrgError(f"person {person.username!r} appears twice")
        usernames.add(person.username)
        if person.department not in keys:
            raise OrgError(f"person {person.username!r}: unknown department {person.department!r}")


def _check_no_cycle(start: Department, keys: dict[str, Department]) -> None:
    seen = [start.key]
    parent = start.parent
    while parent is not None:
        if parent in seen:
            chain = " -> ".join([*seen, parent])
            raise OrgError(f"department {start.key!r} is its own ancestor: {chain}")
        seen.append(parent)
        parent = keys[parent].parent


class Directory:
    """One `Org`, indexed; `version` is the database's change counter when it was read."""

    def __init__(self, org: Org, version: int = 0) -> None:
        self.org = org
        self.version = version
        self.departments = {d.key: d for d in org.departments}
        self.people = {p.username: p for p in org.people}
        self._members: dict[str, list[Person]] = {d.key: [] for d in org.departments}
        for person in sorted(org.people, key=lambda p: p.position):
            self._members.setdefault(person.department, []).append(person)
        self._children: dict[str | None, list[Department]] = {}
        for department in sorted(org.departments, key=lambda d: d.position):
            self._children.setdefault(department.parent, []).append(department)

    def members(self, key: str) -> Sequence[Person]:
        return self._members.get(key, ())

    def ancestors(self, key: str) -> list[Department]:
        """The department `key` and those above it, nearest first."""
        found = []
        current: str | None = key
        while current is not None and current in self.departments:
            department = self.departments[current]
            found.append(department)
            current = department.parent
        return found

    def path(self, key: str) -> str:
        """The names from the top down: "Company / Sales / EMEA"."""
        return " / ".join(d.name for d in reversed(self.ancestors(key)))

    def subtree(self, key: str) -> Iterator[Department]:
        """The department `key` and every department below it, in tree order."""
        department = self.departments.get(key)
        if department is None:
            return
        yield department
        for child in self._children.get(key, ()):
            yield from self.subtree(child.key)

    def in_tree_order(self) -> Iterator[Department]:
        for top in self._children.get(None, ()):
            yield from self.subtree(top.key)

    def colleagues(self, username: str, share: str) -> list[Person]:
        """Whom `username` sees as roster items under the policy `share` (module docstring):
        never themselves; nobody when they are not in the directory."""
        person = self.people.get(username)
        if person is None or share == "none":
            return []
        if share == "company":
            departments: Iterable[str] = self.departments
        elif share == "parents":
            above = [d.key for d in self.ancestors(person.department)]
            below = [d.key for d in self.subtree(person.department)]
            departments = dict.fromkeys([*above, *below])
        else:
            departments = (person.department,)
        return [p for key in departments for p in self.members(key) if p.username != username]

    def search(self, criteria: dict[str, str]) -> list[Person]:
        """People matching every criterion (`SEARCH_FIELDS`): a case-insensitive substring of
        the field; ``department`` matches the department's name or any above it (a search for
        "Sales" finds Sales/EMEA too), ``name`` the display name or the username. A ``*`` is
        a wildcard for anything, as clients of XEP-0055 tend to send. Tree order."""
        wanted = {field: _fold(text) for field, text in criteria.items() if _fold(text)}
        return [
            person
            for department in self.in_tree_order()
            for person in self.members(department.key)
            if all(self._matches(person, field, text) for field, text in wanted.items())
        ]

    def _matches(self, person: Person, field: str, text: str) -> bool:
        if field == "name":
            haystacks: list[str] = [person.name, person.username]
        elif field == "department":
            haystacks = [d.name for d in self.ancestors(person.department)]
        else:
            haystacks = [getattr(person, field)]
        return any(_contains(_fold(haystack), text) for haystack in haystacks)


def _fold(text: str) -> str:
    return text.strip().casefold()


@functools.lru_cache(maxsize=1024)
def _pieces(pattern: str) -> tuple[str, ...]:
    return tuple(piece for piece in pattern.split("*") if piece)


def _contains(haystack: str, pattern: str) -> bool:
    """Each piece between the ``*`` of `pattern` occurs in `haystack`, in order."""
    at = 0
    for piece in _pieces(pattern):
        found = haystack.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def changes(old: Org, new: Org) -> list[str]:
    """What replacing `old` by `new` changes, one line each ("+ department ...", "~ person ...",
    "- person ..."); empty when they are the same (an import run twice changes nothing)."""
    lines: list[str] = []
    lines += _diff("department", {d.key: d for d in old.departments}, {d.key: d for d in new.departments})
    lines += _diff("person", {p.username: p for p in old.people}, {p.username: p for p in new.people})
    return lines


def _diff(kind: str, old: dict[str, Department] | dict[str, Person],
          new: dict[str, Department] | dict[str, Person]) -> list[str]:  # fmt: skip
    lines = []
    for key, value in new.items():
        before = old.get(key)
        if before is None:
            lines.append(f"+ {kind} {key}: {_describe(value)}")
        elif before != value:
            lines.append(f"~ {kind} {key}: {_describe(before)} => {_describe(value)}")
    lines += [f"- {kind} {key}" for key in old if key not in new]
    return lines


def _describe(value: Department | Person) -> str:
    if isinstance(value, Department):
        return f"{value.name!r} under {value.parent!r} (#{value.position})"
    fields = (value.name, value.department, value.title, value.phone, value.email)
    return ", ".join(repr(field) for field in fields) + f" (#{value.position})"


# ---- one change at a time (the admin console; an import replaces the whole) ----------------------

#: Characters of a department's or person's name, title, phone or e-mail (as in import files).
MAX_NAME = 256


def _clean(text: str, what: str, *, required: bool = True) -> str:
    """`text` stripped; `OrgError` when it is empty (and `required`), too long or has control
    characters, naming `what`."""
    value = text.strip()
    if required and not value:
        raise OrgError(f"{what}: empty")
    if len(value) > MAX_NAME:
        raise OrgError(f"{what}: longer than {MAX_NAME} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise OrgError(f"{what}: contains a control character")
    return value


def _replaced(org: Org, departments: Iterable[Department] | None = None,
              people: Iterable[Person] | None = None) -> Org:  # fmt: skip
    new = Org(org.departments if departments is None else tuple(departments),
              org.people if people is None else tuple(people))  # fmt: skip
    check(new)
    return new


def _department(org: Org, key: str) -> Department:
    for department in org.departments:
        if department.key == key:
            return department
    raise OrgError(f"no department {key!r}")


def _last_position(items: Iterable[Department] | Iterable[Person]) -> int:
    return max((item.position + 1 for item in items), default=0)


def add_department(org: Org, name: str, parent: str | None) -> tuple[Org, str]:
    """`org` with a new department `name` last under `parent` (None: at the top), and its key:
    the path of names, as an import file's would be ("Sales/EMEA").

    Raises:
        OrgError: a bad name (empty, a "/", too long), an unknown parent, or a sibling of that name.
    """
    name = _clean(name, "department name")
    if "/" in name:
        raise OrgError("department name: a '/' separates departments in a path; use another character")
    if parent is not None:
        _department(org, parent)
    key = f"{parent}/{name}" if parent is not None else name
    if any(d.key == key for d in org.departments):
        raise OrgError(f"department {key!r} exists already")
    siblings = [d for d in org.departments if d.parent == parent]
    added = Department(key, name, parent, _last_position(siblings))
    return _replaced(org, [*org.departments, added]), key


def rename_department(org: Org, key: str, name: str) -> Org:
    """`org` with the department `key` shown as `name` (its key, which people and import files
    name, stays)."""
    name = _clean(name, "department name")
    _department(org, key)
    return _replaced(org, [Department(d.key, name, d.parent, d.position) if d.key == key else d
                           for d in org.departments])  # fmt: skip


def move_department(org: Org, key: str, parent: str | None) -> Org:
    """`org` with the department `key` (and everything under it) last under `parent`.

    Raises:
        OrgError: an unknown department or parent, or a move under itself or its own subtree
            (a cycle).
    """
    _department(org, key)
    if parent is not None:
        _department(org, parent)
    siblings = [d for d in org.departments if d.parent == parent and d.key != key]
    position = _last_position(siblings)
    return _replaced(org, [Department(d.key, d.name, parent, position) if d.key == key else d
                           for d in org.departments])  # fmt: skip


def delete_department(org: Org, key: str) -> Org:
    """`org` without the department `key`, which must be empty: no department under it and
    nobody in it (move or remove them first, so that nothing goes by accident)."""
    _department(org, key)
    children = [d.key for d in org.departments if d.parent == key]
    if children:
        raise OrgError(f"department {key!r} has departments under it ({', '.join(children)}): "
                       "move or delete them first")  # fmt: skip
    members = [p.username for p in org.people if p.department == key]
    if members:
        raise OrgError(f"department {key!r} has people in it ({', '.join(members)}): "
                       "move or remove them first")  # fmt: skip
    return _replaced(org, [d for d in org.departments if d.key != key])


def place_person(org: Org, person: Person) -> Org:
    """`org` with `person` (a username already prepared) in their department: added, or
    replacing what the directory had for that username (moved: last in the new department)."""
    _department(org, person.department)
    fields = {"name": person.name, "title": person.title, "phone": person.phone, "email": person.email}
    cleaned = {field: _clean(value, field, required=field == "name") for field, value in fields.items()}
    before = next((p for p in org.people if p.username == person.username), None)
    if before is not None and before.department == person.department:
        position = before.position
    else:
        position = _last_position(p for p in org.people if p.department == person.department)
    placed = Person(person.username, cleaned["name"], person.department, cleaned["title"],
                    cleaned["phone"], cleaned["email"], position)  # fmt: skip
    return _replaced(org, people=[*(p for p in org.people if p.username != person.username), placed])


def remove_person(org: Org, username: str) -> Org:
    """`org` without `username` (their account stays: only the directory forgets them)."""
    if not any(p.username == username for p in org.people):
        raise OrgError(f"{username!r} is not in the directory")
    return _replaced(org, people=[p for p in org.people if p.username != username])
