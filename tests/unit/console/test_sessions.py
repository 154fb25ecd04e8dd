"""The console's sessions (`imactor.console.auth.Sessions`): idle ones expire, the oldest go first
when there are too many, and a form's token is compared whole. Trio's autojump clock: no sleeping."""

from __future__ import annotations

import trio

from imactor.console.auth import MAX_SESSIONS, Sessions, same_token


async def test_a_session_lives_while_used_and_expires_after_its_idle_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    sessions = Sessions(timeout=60.0)
    opened = sessions.open("boss@localhost")
    assert opened.token != opened.csrf
    await trio.sleep(50)
    assert sessions.get(opened.token) is opened  # used: its idle time starts again
    await trio.sleep(50)
    assert sessions.get(opened.token) is opened
    await trio.sleep(61)
    assert sessions.get(opened.token) is None
    assert len(sessions) == 0


async def test_unknown_tokens_and_closed_sessions_find_nothing() -> None:
    sessions = Sessions(timeout=60.0)
    opened = sessions.open("boss@localhost")
    assert sessions.get(None) is None
    assert sessions.get("") is None
    assert sessions.get(opened.csrf) is None  # the CSRF token is not a session token
    sessions.close(opened)
    assert sessions.get(opened.token) is None


async def test_beyond_the_most_sessions_the_least_recently_used_ends() -> None:
    sessions = Sessions(timeout=60.0)
    first, second = sessions.open("a@localhost"), sessions.open("b@localhost")
    assert sessions.get(first.token) is first  # now `second` is the least recently used
    for _ in range(MAX_SESSIONS - 1):
        sessions.open("c@localhost")
    assert len(sessions) == MAX_SESSIONS
    assert sessions.get(second.token) is None
    assert sessions.get(first.token) is first


def test_tokens_are_compared_whole() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abd", "abc")
    assert not same_token("ab", "abc")
    assert not same_token(None, "abc")
    assert not same_token("", "abc")
