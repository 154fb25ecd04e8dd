"""The directory's questions (`imactor.directory.org.Directory`): colleagues by policy, search, diff."""

from __future__ import annotations

import pytest

from imactor.directory.org import Department, Directory, Org, OrgError, Person, changes, check

ORG = Org(
    (Department("acme", "Acme", None), Department("sales", "Sales", "acme"),
     Department("emea", "EMEA", "sales"), Department("apac", "APAC", "sales", 1),
     Department("rnd", "R&D", "acme", 1)),
    (Person("ceo", "Chief", "acme"), Person("head", "Sales Head", "sales", "Head of sales"),
     Person("eve", "Eve Martin", "emea", email="eve@example.com"), Person("emil", "Emil", "emea", position=1),
     Person("ada", "Ada", "apac"), Person("rob", "Rob", "rnd", "Engineer")),
)  # fmt: skip


def who(people: list[Person]) -> list[str]:
    return [person.username for person in people]


@pytest.mark.parametrize(
    ("share", "username", "expected"),
    [
        ("department", "eve", ["emil"]),
        ("department", "head", []),
        ("parents", "eve", ["emil", "head", "ceo"]),  # own, then up
        ("parents", "head", ["ceo", "eve", "emil", "ada"]),  # up, then down: everyone of Sales
        ("parents", "rob", ["ceo"]),  # never APAC or EMEA from R&D
        ("company", "rob", ["ceo", "head", "eve", "emil", "ada"]),
        ("none", "eve", []),
        ("company", "stranger", []),
    ],
)
def test_colleagues_by_policy(share: str, username: str, expected: list[str]) -> None:
    assert sorted(who(Directory(ORG).colleagues(username, share))) == sorted(expected)


def test_every_policy_is_symmetric() -> None:
    """Presence flows both ways only if "a sees b" implies "b sees a" (a 'both' subscription)."""
    directory = Directory(ORG)
    for share in ("department", "parents", "company"):
        for person in ORG.people:
            for other in directory.colleagues(person.username, share):
                assert person.username in who(directory.colleagues(other.username, share)), (share, person)


def test_search_matches_every_field_given() -> None:
    directory = Directory(ORG)
    assert who(directory.search({"department": "sales"})) == ["head", "eve", "emil", "ada"]  # and below
    assert who(directory.search({"name": "E*MART"})) == ["eve"]
    assert who(directory.search({"name": "e", "department": "emea"})) == ["eve", "emil"]
    assert who(directory.search({"title": "engineer"})) == ["rob"]
    assert who(directory.search({"email": "@example.com", "name": "emil"})) == []


def test_check_refuses_what_is_not_a_tree() -> None:
    with pytest.raises(OrgError, match="unknown parent"):
        check(Org((Department("a", "A", "z"),), ()))
    with pytest.raises(OrgError, match="its own ancestor: a -> a"):
        check(Org((Department("a", "A", "a"),), ()))
    with pytest.raises(OrgError, match="appears twice"):
        check(Org((Department("a", "A", None),), (Person("x", "X", "a"), Person("x", "Y", "a"))))


def test_changes_name_what_an_import_does() -> None:
    moved = Org(ORG.departments[:-1], (*ORG.people[:4], Person("ada", "Ada", "emea")))
    assert changes(ORG, moved) == [
        "- department rnd",
        "~ person ada: 'Ada', 'apac', '', '', '' (#0) => 'Ada', 'emea', '', '', '' (#0)",
        "- person rob",
    ]
    assert changes(ORG, ORG) == []
