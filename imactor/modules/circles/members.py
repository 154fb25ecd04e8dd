"""Who belongs to a circle, read from its source at each request (never copied into pubsub rows).

- A department's circle: the people of the department and of every department below it (the
  head of Sales reads Sales/EMEA's posts in the Sales circle; Sales/EMEA has a circle of its
  own), from the worker's copy of the directory (`imactor.modules.directory`), which a
  ``imactor org import`` reloads in every worker.
- A room's circle: the owners, admins and members of a persistent, members-only room, from the
  room's stored state, which the room writes before it answers an affiliation change.

So a move in the directory or a change of a room's members decides the next request's access
and the next post's recipients, with no copy to bring up to date.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from imactor.modules import directory
from imactor.modules.circles.nodes import DEPARTMENT, ROOM
from imactor.muc.state import RoomState
from imactor.server.modules import IqContext
from imactor.storage.rooms import StoredRoom

log = logging.getLogger("imactor.circles")


@dataclass(frozen=True, slots=True)
class Circle:
    feed: str  #: the feed node
    title: str  #: the department's path or the room's name
    members: frozenset[str]  #: bare JIDs


async def circle(ctx: IqContext, feed: str, *, departments: bool, rooms: bool) -> Circle | None:
    """The circle of the feed node `feed`; None when its department or room does not exist (or
    its kind is switched off, or the room is not a persistent members-only one)."""
    domain = ctx.server.domain
    if feed.startswith(DEPARTMENT):
        if not departments:
            return None
        org = await directory.current_directory(ctx.storage, directory.DEFAULT_INTERVAL)
        key = feed[len(DEPARTMENT) :]
        if key not in org.departments:
            return None
        people = {f"{p.username}@{domain}" for d in org.subtree(key) for p in org.members(d.key)}
        return Circle(feed, org.path(key), frozenset(people))
    if not rooms or not ctx.config.muc.enabled:
        return None
    name = feed[len(ROOM) :]
    stored = await ctx.storage.rooms.load(name)
    return None if stored is None else _room_circle(stored)


def _room_circle(stored: StoredRoom) -> Circle | None:
    try:
        state = RoomState.from_json(stored.state)
    except ValueError as exc:
        log.warning("room %s: stored state unreadable, no circle: %s", stored.name, exc)
        return None
    if not (state.config.persistent and state.config.members_only):
        return None
    affiliated = {*state.with_affiliation("owner"), *state.with_affiliation("admin"),
                  *state.with_affiliation("member")}  # fmt: skip
    return Circle(ROOM + stored.name, state.config.name or stored.name, frozenset(affiliated))


async def circles_of(ctx: IqContext, bare: str, *, departments: bool, rooms: bool) -> list[Circle]:
    """The circles `bare` belongs to: their department and those above it, and their rooms."""
    found: list[Circle] = []
    domain = ctx.server.domain
    if departments:
        org = await directory.current_directory(ctx.storage, directory.DEFAULT_INTERVAL)
        local, _, host = bare.partition("@")
        person = org.people.get(local) if host == domain else None
        if person is not None:
            for department in org.ancestors(person.department):
                people = {f"{p.username}@{domain}" for d in org.subtree(department.key)
                          for p in org.members(d.key)}  # fmt: skip
                found.append(Circle(DEPARTMENT + department.key, org.path(department.key), frozenset(people)))
    if rooms and ctx.config.muc.enabled:
        for stored in await ctx.storage.rooms.listing():
            found_circle = _room_circle(stored) if stored.persistent else None
            if found_circle is not None and bare in found_circle.members:
                found.append(found_circle)
    return found
