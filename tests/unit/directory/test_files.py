"""`imactor org import` files (`imactor.directory.files`): what is read, and every bad row named
by file, line and field."""

from __future__ import annotations

import pytest

from imactor.directory.files import OrgFileError, parse, write
from imactor.directory.org import Department, Org, Person, changes

CSV = """\ufeffusername,name,department,title,phone,email
alice,Alice Liu,Acme/Sales,Head of sales,+86 10 1234 5678,alice@example.com
bob,鲍勃,Acme / Sales / EMEA,,,
,,Acme/R&D,,,
Carol,Carol,Acme/Sales/EMEA,Engineer,555-0100 ext 12,
"""

JSON = """{
  "departments": [
    {"id": "acme", "name": "Acme"},
    {"id": "sales", "name": "Sales", "parent": "acme"},
    {"id": "emea", "name": "EMEA", "parent": "sales"}
  ],
  "people": [
    {"username": "alice", "name": "Alice Liu", "department": "sales", "email": "alice@example.com"},
    {"username": "bob", "name": "Bob", "department": "emea"}
  ]
}
"""


def test_csv_builds_the_tree_from_the_paths_in_file_order() -> None:
    org = parse(CSV.encode(), "org.csv", "csv")
    assert org.departments == (
        Department("Acme", "Acme", None, 0),
        Department("Acme/Sales", "Sales", "Acme", 0),
        Department("Acme/Sales/EMEA", "EMEA", "Acme/Sales", 0),  # spaces around "/" do not count
        Department("Acme/R&D", "R&D", "Acme", 1),  # a row without a username: an empty department
    )
    assert org.people == (
        Person("alice", "Alice Liu", "Acme/Sales", "Head of sales", "+86 10 1234 5678", "alice@example.com"),
        Person("bob", "鲍勃", "Acme/Sales/EMEA"),
        Person("carol", "Carol", "Acme/Sales/EMEA", "Engineer", "555-0100 ext 12", "", 1),  # prepared
    )


def test_json_reads_ids_and_parents() -> None:
    org = parse(JSON.encode(), "org.json", "json")
    parents = [(d.key, d.parent) for d in org.departments]
    assert parents == [("acme", None), ("sales", "acme"), ("emea", "sales")]
    assert org.people[1] == Person("bob", "Bob", "emea")


@pytest.mark.parametrize("file_format", ["csv", "json"])
def test_an_export_reads_back_to_the_same_directory(file_format: str) -> None:
    org = parse(CSV.encode(), "org.csv", "csv")
    again = parse(write(org, file_format).encode(), f"again.{file_format}", file_format)
    assert changes(org, again) == []


H = "username,name,department"  # the header of most bad files below
BAD_CSV = [
    ("username,name\nalice,A\n", "org.csv:1: department: missing column"),
    (f"{H},floor\n", "org.csv:1: floor: unknown column"),
    (f"{H}\nalice,A,Acme\nbob,B\n", "org.csv:3: row: 2 fields, the header has 3"),
    (f"{H}\nalice,A,Acme\nbad user,B,Acme\n", "org.csv:3: username: 'bad user' is not"),
    (f"{H}\nalice,A,Acme\nALICE,B,Acme\n", "org.csv:3: username: 'alice' is also on line 2"),
    (f"{H}\nalice,,Acme\n", "org.csv:2: name: missing"),
    (f"{H}\nalice,A,Acme//Sales\n", "org.csv:2: department: 'Acme//Sales': expected"),
    (f"{H},email\nalice,A,Acme,alice.example.com\n", "org.csv:2: email: 'alice.example.com'"),
    (f"{H},phone\nalice,A,Acme,call me\n", "org.csv:2: phone: 'call me' is not a phone"),
    (f"{H}\nalice,\"Liu,\nAlice\",Acme\n", "org.csv:2: name: contains a control"),
    (f"{H}\nalice,\"Liu, Alice\",Acme\nbob,\x07,Acme\n", "org.csv:3: name: contains a control"),
    (f"{H}\n,Someone,Acme\n", "org.csv:2: username: empty"),
]


@pytest.mark.parametrize(("text", "error"), BAD_CSV)
def test_a_bad_csv_row_is_named_by_line_and_field(text: str, error: str) -> None:
    with pytest.raises(OrgFileError) as raised:
        parse(text.encode(), "org.csv", "csv")
    assert str(raised.value).startswith(error)


X = '{"username": "x", "department": "a", '  # the start of a person below
BAD_JSON = [
    ('{"departments": [\n  {"id": "a", "name": "A", "parent": "b"},\n'
     '  {"id": "b", "name": "B", "parent": "a"}\n]}',
     "org.json:2: parent: department 'a' is its own ancestor: a -> b -> a"),
    ('{"departments": [{"id": "a", "name": "A"}],\n "people": [\n\n  {"username": "x", "name": "X", '
     '"department": "z"}]}', "org.json:4: department: person 'x': unknown department 'z'"),
    ('{"departments": [\n {"id": "a", "name": "A"},\n {"id": "a", "name": "B"}]}',
     "org.json:3: id: department 'a' appears twice"),
    ('{"people": [\n ' + X + '"name": "X", "floor": "3"}]}', "org.json:2: floor: unknown key"),
    ('{"people": [\n ' + X + '"name": 7}]}', "org.json:2: name: expected a string"),
    ('{"departments": [\n {"id": "a", "name": "A"},\n]}', "org.json:3: json: Expecting value"),
    ('[]', "org.json:1: json: expected an object"),
    ('{"teams": []}', "org.json:1: teams: unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "error"), BAD_JSON)
def test_a_bad_json_object_is_named_by_line_and_field(text: str, error: str) -> None:
    with pytest.raises(OrgFileError) as raised:
        parse(text.encode(), "org.json", "json")
    assert str(raised.value).startswith(error)


def test_a_file_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(OrgFileError, match=r"org.csv: not UTF-8"):
        parse("username,name,department\nalice,Zoë,Acme\n".encode("latin-1"), "org.csv", "csv")


def test_a_csv_export_refuses_a_name_with_a_slash() -> None:
    org = Org((Department("io", "I/O", None),), ())
    with pytest.raises(OrgFileError, match="use JSON"):
        write(org, "csv")
    assert parse(write(org, "json").encode(), "x.json", "json") == org
