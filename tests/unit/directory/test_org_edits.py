"""One-at-a-time edits of the directory (`imactor.directory.org`), as the admin console makes them:
each returns a checked tree, or raises `OrgError` and leaves the directory as it was."""

from __future__ import annotations

import pytest

from imactor.directory.org import (
    Department,
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


def company() -> Org:
    org, _ = add_department(Org(), "Sales", None)
    org, emea = add_department(org, "EMEA", "Sales")
    org, _ = add_department(org, "Support", None)
    return place_person(org, Person("alice", "Alice", emea, "Rep"))


def test_added_departments_are_keyed_by_their_path_and_ordered_last_among_siblings() -> None:
    org = company()
    assert org.departments == (
        Department("Sales", "Sales", None, 0),
        Department("Sales/EMEA", "EMEA", "Sales", 0),
        Department("Support", "Support", None, 1),
    )


@pytest.mark.parametrize(
    ("name", "parent", "said"),
    [("", None, "empty"), ("A/B", None, "'/'"), ("x" * 300, None, "longer"),
     ("Ops\n", "Nowhere", "no department"), ("EMEA", "Sales", "exists already"),
     ("Bad\x07", None, "control character")],
)  # fmt: skip
def test_a_department_that_cannot_be_added(name: str, parent: str | None, said: str) -> None:
    with pytest.raises(OrgError, match=said):
        add_department(company(), name, parent)


def test_rename_keeps_the_key_and_move_takes_the_subtree() -> None:
    org = rename_department(company(), "Sales/EMEA", "Europe")
    assert Department("Sales/EMEA", "Europe", "Sales", 0) in org.departments
    moved = move_department(org, "Sales", "Support")
    assert Department("Sales", "Sales", "Support", 0) in moved.departments
    assert [p.department for p in moved.people] == ["Sales/EMEA"]


def test_a_move_under_itself_or_below_is_a_cycle_and_refused() -> None:
    with pytest.raises(OrgError, match="its own ancestor"):
        move_department(company(), "Sales", "Sales/EMEA")
    with pytest.raises(OrgError, match="its own ancestor"):
        move_department(company(), "Sales", "Sales")


def test_only_an_empty_department_is_deleted() -> None:
    with pytest.raises(OrgError, match="departments under it"):
        delete_department(company(), "Sales")
    with pytest.raises(OrgError, match="people in it"):
        delete_department(company(), "Sales/EMEA")
    emptied = remove_person(company(), "alice")
    assert [d.key for d in delete_department(emptied, "Sales/EMEA").departments] == ["Sales", "Support"]


def test_placing_a_person_again_updates_them_and_a_move_puts_them_last() -> None:
    org = place_person(company(), Person("bob", "Bob", "Sales/EMEA"))
    org = place_person(org, Person("alice", "Alice A.", "Sales/EMEA", "Lead"))
    assert {p.username: (p.name, p.title, p.position) for p in org.people} == {
        "alice": ("Alice A.", "Lead", 0), "bob": ("Bob", "", 1)}  # fmt: skip
    org = place_person(org, Person("alice", "Alice A.", "Support"))
    assert [(p.username, p.department) for p in org.people] == [("bob", "Sales/EMEA"), ("alice", "Support")]
    with pytest.raises(OrgError, match="name: empty"):
        place_person(org, Person("carol", " ", "Support"))
    with pytest.raises(OrgError, match="no department"):
        place_person(org, Person("carol", "Carol", "Nowhere"))
    with pytest.raises(OrgError, match="not in the directory"):
        remove_person(org, "carol")
