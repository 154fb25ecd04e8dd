"""The files of ``imactor org import`` and ``export``: CSV and JSON (docs/directory.md).

CSV (UTF-8, a BOM allowed, as spreadsheets write it): a header row naming the columns
``username``, ``name``, ``department`` (required) and ``title``, ``phone``, ``email``
(optional), in any order; one person a row. ``department`` is the path from the top,
``Company/Sales/EMEA``: each department is created from the paths, in the order they first
appear. A row with an empty username declares a department that may have nobody in it.

JSON: ``{"departments": [{"id", "name", "parent"}], "people": [{"username", "name",
"department", "title", "phone", "email"}]}``, with ``parent`` and ``department`` naming ids
(``parent`` null or absent: a top-level department). Order is the file's order.

Every error names the file, the line and the field, and nothing is imported (`OrgFileError`).
"""

from __future__ import annotations

import csv
import io
import json
import json.decoder
import json.scanner
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from imactor.directory.org import Department, Directory, Org, OrgError, Person, check
from imactor.xmpp.jid import InvalidJID, prep_localpart

FORMATS = ("csv", "json")
COLUMNS = ("username", "name", "department", "title", "phone", "email")
REQUIRED = ("username", "name", "department")
MAX_TEXT = 256  #: characters of a name, title, phone or e-mail address
PHONE = re.compile(r"\+?[0-9 ()./-]{1,40}(?:\s*(?:x|ext\.?)\s*[0-9]{1,8})?")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class OrgFileError(ValueError):
    """A bad file: `str()` is ``FILE:LINE: FIELD: what is wrong``."""


@dataclass(frozen=True, slots=True)
class _Place:
    source: str
    line: int

    def error(self, field: str, message: str) -> OrgFileError:
        return OrgFileError(f"{self.source}:{self.line}: {field}: {message}")


def detect_format(name: str) -> str:
    """The format, "csv" or "json", from a file name's extension (``-``: JSON)."""
    return "csv" if name.lower().endswith(".csv") else "json"


def parse(data: bytes, source: str, file_format: str) -> Org:
    """The organisation in `data` (the whole file), checked: a tree, no duplicates.

    Raises:
        OrgFileError: naming `source`, the line and the field.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OrgFileError(f"{source}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return parse_csv(text, source) if file_format == "csv" else parse_json(text, source)


# ---- CSV -------------------------------------------------------------------------------------


def parse_csv(text: str, source: str) -> Org:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise _Place(source, 1).error("header", f"empty file: expected the columns {', '.join(COLUMNS)}")
    columns = _columns([c.strip().lower() for c in header], _Place(source, 1))
    departments: dict[str, Department] = {}
    people: dict[str, tuple[Person, int]] = {}
    counts: dict[str, int] = {}  #: people so far per department: the next one's position
    while True:
        start = reader.line_num + 1  # a quoted field may span lines: name the row's first
        row = next(reader, None)
        if row is None:
            break
        place = _Place(source, start)
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            raise place.error("row", f"{len(row)} fields, the header has {len(columns)}")
        cells = {column: _text(cell, column, place) for column, cell in zip(columns, row, strict=True)}
        key = _department_path(cells["department"], place, departments)
        if not cells["username"]:
            if cells["name"] or any(cells.get(c) for c in ("title", "phone", "email")):
                raise place.error("username", "empty (a row without a username only declares a department)")
            continue
        person = _person(cells, key, counts.get(key, 0), place)
        if person.username in people:
            raise place.error("username", f"{person.username!r} is also on line {people[person.username][1]}")
        people[person.username] = (person, place.line)
        counts[key] = counts.get(key, 0) + 1
    return Org(tuple(departments.values()), tuple(person for person, _ in people.values()))


def _columns(header: list[str], place: _Place) -> list[str]:
    for column in header:
        if column not in COLUMNS:
            raise place.error(column or "header", f"unknown column; expected {', '.join(COLUMNS)}")
    for column in REQUIRED:
        if column not in header:
            raise place.error(column, "missing column")
    if len(set(header)) != len(header):
        raise place.error("header", "a column appears twice")
    return header


def _department_path(path: str, place: _Place, departments: dict[str, Department]) -> str:
    """The key of the department at `path` ("A/B/C"), creating it and those above it."""
    names = [name.strip() for name in path.split("/")]
    if not path or not all(names):
        raise place.error("department", f"{path!r}: expected a path such as Company/Sales/EMEA")
    parent: str | None = None
    for depth in range(len(names)):
        key = "/".join(names[: depth + 1])
        if key not in departments:
            siblings = sum(1 for d in departments.values() if d.parent == parent)
            departments[key] = Department(key, names[depth], parent, siblings)
        parent = key
    assert parent is not None
    return parent


# ---- JSON ------------------------------------------------------------------------------------


# Not in typeshed, stable since Python 2.7: the pure-Python object parser and scanner factory.
_JSON_OBJECT: Callable[..., tuple[list[tuple[str, Any]], int]] = getattr(json.decoder, "JSONObject")  # noqa: B009
_PY_MAKE_SCANNER: Callable[[json.JSONDecoder], Any] = getattr(json.scanner, "py_make_scanner")  # noqa: B009


class _Located(dict[str, Any]):
    """A JSON object that knows the line of its opening brace."""

    line = 0


def _located_decoder(text: str) -> json.JSONDecoder:
    """A decoder whose objects are `_Located`: the pure-Python scanner calls `parse_object`
    with the position of each object, which the C scanner does not expose."""
    decoder = json.JSONDecoder()

    def parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[_Located, int]:
        start = s_and_end[1]
        pairs, end = _JSON_OBJECT(s_and_end, *args)
        located = _Located(pairs)
        located.line = text.count("\n", 0, start) + 1
        return located, end

    decoder.parse_object = parse_object  # type: ignore[attr-defined]
    decoder.scan_once = _PY_MAKE_SCANNER(decoder)  # type: ignore[attr-defined]
    return decoder


def parse_json(text: str, source: str) -> Org:
    try:
        document = _located_decoder(text).decode(text)
    except json.JSONDecodeError as exc:
        raise _Place(source, exc.lineno).error("json", exc.msg) from None
    if not isinstance(document, _Located):
        raise _Place(source, 1).error("json", 'expected an object {"departments": [...], "people": [...]}')
    departments = _json_list(document, "departments", source)
    people = _json_list(document, "people", source)
    unknown = sorted(set(document) - {"departments", "people"})
    if unknown:
        raise _Place(source, document.line).error(unknown[0], "unknown key; expected departments, people")
    parsed = Org(
        tuple(_json_department(item, source, index, departments) for index, item in enumerate(departments)),
        _json_people(people, source),
    )
    _check_json(parsed, source, departments, people)
    return parsed


def _json_list(document: _Located, key: str, source: str) -> list[_Located]:
    items = document.get(key, [])
    if not isinstance(items, list):
        raise _Place(source, document.line).error(key, "expected a list")
    for item in items:
        if not isinstance(item, _Located):
            raise _Place(source, document.line).error(key, f"expected objects, got {item!r}")
    return items


def _fields(item: _Located, allowed: Iterable[str], place: _Place) -> dict[str, str | None]:
    allowed = tuple(allowed)
    for key in item:
        if key not in allowed:
            raise place.error(key, f"unknown key; expected {', '.join(allowed)}")
    fields: dict[str, str | None] = {}
    for key in allowed:
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            raise place.error(key, f"expected a string, got {value!r}")
        fields[key] = None if value is None else _text(value, key, place)
    return fields


def _json_department(item: _Located, source: str, index: int, all_items: list[_Located]) -> Department:
    place = _Place(source, item.line)
    fields = _fields(item, ("id", "name", "parent"), place)
    key, name = fields["id"], fields["name"]
    if not key:
        raise place.error("id", "missing")
    if not name:
        raise place.error("name", "missing")
    parent = fields["parent"] or None
    siblings = sum(1 for other in all_items[:index] if (other.get("parent") or None) == parent)
    return Department(key, name, parent, siblings)


def _json_people(items: list[_Located], source: str) -> tuple[Person, ...]:
    counts: dict[str, int] = {}  #: people so far per department: the next one's position
    people = []
    for item in items:
        place = _Place(source, item.line)
        fields = {key: value or "" for key, value in _fields(item, COLUMNS, place).items()}
        department = fields["department"]
        people.append(_person(fields, department, counts.get(department, 0), place))
        counts[department] = counts.get(department, 0) + 1
    return tuple(people)


def _check_json(org: Org, source: str, departments: list[_Located], people: list[_Located]) -> None:
    """`imactor.org.check`, with the line of the object at fault."""
    try:
        check(org)
    except OrgError as exc:
        message = str(exc)
        line, field = _culprit(org, message, departments, people)
        raise _Place(source, line).error(field, message) from None


def _culprit(org: Org, message: str, departments: list[_Located],
             people: list[_Located]) -> tuple[int, str]:  # fmt: skip
    """The line and field of the object `check` complained about (its message names it first)."""
    for department, item in zip(org.departments, departments, strict=True):
        if message.startswith(f"department {department.key!r}"):
            field = "id" if "twice" in message else "parent"
            same = [i for d, i in zip(org.departments, departments, strict=True) if d.key == department.key]
            last = same[-1]
            return (last if field == "id" else item).line, field
    for person, item in zip(org.people, people, strict=True):
        if message.startswith(f"person {person.username!r}"):
            field = "username" if "twice" in message else "department"
            same = [i for p, i in zip(org.people, people, strict=True) if p.username == person.username]
            last = same[-1]
            return (last if field == "username" else item).line, field
    return 1, "json"


# ---- both ------------------------------------------------------------------------------------


def _text(value: str, field: str, place: _Place) -> str:
    value = value.strip()
    if _CONTROL.search(value):
        raise place.error(field, "contains a control character")
    if len(value) > MAX_TEXT:
        raise place.error(field, f"longer than {MAX_TEXT} characters")
    return value


def _person(cells: dict[str, str], department: str, position: int, place: _Place) -> Person:
    try:
        username = prep_localpart(cells["username"])
    except InvalidJID as exc:
        raise place.error("username", f"{cells['username']!r} is not a valid account name ({exc})") from None
    if not cells.get("name"):
        raise place.error("name", "missing")
    if not department:
        raise place.error("department", "missing")
    phone, email = cells.get("phone", ""), cells.get("email", "")
    if phone and not PHONE.fullmatch(phone):
        raise place.error("phone", f"{phone!r} is not a phone number (digits, spaces, + ( ) - . /, ext)")
    if email and not EMAIL.fullmatch(email):
        raise place.error("email", f"{email!r} is not an e-mail address")
    return Person(username, cells["name"], department, cells.get("title", ""), phone, email, position)


def write(org: Org, file_format: str) -> str:
    """The organisation as a file `parse` reads back to the same people and departments (CSV:
    department keys become paths).

    Raises:
        OrgFileError: CSV of a department whose name holds a "/" (its path could not be read back).
    """
    return _write_csv(org) if file_format == "csv" else _write_json(org)


def _write_json(org: Org) -> str:
    directory = Directory(org)
    departments = [{"id": d.key, "name": d.name, "parent": d.parent} for d in directory.in_tree_order()]
    people = [_person_dict(p) for d in directory.in_tree_order() for p in directory.members(d.key)]
    return json.dumps({"departments": departments, "people": people}, ensure_ascii=False, indent=2) + "\n"


def _person_dict(person: Person) -> dict[str, str]:
    return {"username": person.username, "name": person.name, "department": person.department,
            "title": person.title, "phone": person.phone, "email": person.email}  # fmt: skip


def _write_csv(org: Org) -> str:
    directory = Directory(org)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    path: Callable[[str], str] = lambda key: "/".join(d.name for d in reversed(directory.ancestors(key)))  # noqa: E731
    for department in directory.in_tree_order():
        if "/" in department.name:
            raise OrgFileError(f"department {department.name!r}: a '/' cannot be written in CSV; use JSON")
        members = directory.members(department.key)
        if not members:
            writer.writerow(("", "", path(department.key), "", "", ""))
        for p in members:
            writer.writerow((p.username, p.name, path(department.key), p.title, p.phone, p.email))
    return out.getvalue()
