"""XEP-0050 ad-hoc commands (`imactor.modules.adhoc`) without a server: the command sessions'
table, reading the XEP-0133 forms, and the engine's stages and actions (driven with a two-stage
command of the test's own: the shipped XEP-0133 commands have one form each)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest
from lxml import etree

from imactor.modules import adhoc
from imactor.modules.adhoc import Options, read_submission
from imactor.modules.adhoc.admin import account_jid, account_jids, password_of
from imactor.modules.adhoc.commands import Command, Done, Stage, static
from imactor.modules.adhoc.sessions import CommandSessions
from imactor.server.modules import IqContext, ModuleConfigError
from imactor.xmpp import stanza as st
from imactor.xmpp.dataforms import Field, FormError, SubmittedForm
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_ADMIN = "http://jabber.org/protocol/admin"
ADMIN = JID.parse("boss@example.com/pc")
OTHER = JID.parse("boss@example.com/phone")


def condition(error: StanzaError) -> tuple[str, str | None]:
    return error.condition, None if error.app_condition is None else error.app_condition[1]


# ---- the sessions' table ---------------------------------------------------------------------


def test_a_session_belongs_to_its_full_jid_and_node() -> None:
    table = CommandSessions()
    session = table.open(ADMIN, f"{NS_ADMIN}#announce", now=0, timeout=60)
    assert session.id.startswith("announce:")
    assert table.find(ADMIN, f"{NS_ADMIN}#announce", session.id, now=30, timeout=60) is session
    for owner, node in ((OTHER, f"{NS_ADMIN}#announce"), (ADMIN, f"{NS_ADMIN}#set-motd")):
        with pytest.raises(StanzaError) as refused:
            table.find(owner, node, session.id, now=30, timeout=60)
        assert condition(refused.value) == ("bad-request", "bad-sessionid")
    table.close(session)
    with pytest.raises(StanzaError) as gone:
        table.find(ADMIN, f"{NS_ADMIN}#announce", session.id, now=31, timeout=60)
    assert condition(gone.value) == ("bad-request", "bad-sessionid")


def test_an_idle_session_expires_and_each_stage_renews_it() -> None:
    table = CommandSessions()
    node = f"{NS_ADMIN}#announce"
    session = table.open(ADMIN, node, now=0, timeout=60)
    table.find(ADMIN, node, session.id, now=59, timeout=60)  # renewed until 119
    table.find(ADMIN, node, session.id, now=118, timeout=60)
    with pytest.raises(StanzaError) as expired:
        table.find(ADMIN, node, session.id, now=178, timeout=60)
    assert condition(expired.value) == ("not-allowed", "session-expired")
    with pytest.raises(StanzaError) as forgotten:  # told once; after that it is unknown
        table.find(ADMIN, node, session.id, now=179, timeout=60)
    assert condition(forgotten.value) == ("bad-request", "bad-sessionid")


def test_long_expired_sessions_are_forgotten_and_the_table_is_bounded() -> None:
    table = CommandSessions(per_owner=2, limit=3)
    node = f"{NS_ADMIN}#announce"
    old = table.open(ADMIN, node, now=0, timeout=10)
    table.open(OTHER, node, now=25, timeout=10)  # `old` expired at 10, forgotten at 20
    assert len(table) == 1
    first = table.open(ADMIN, node, now=26, timeout=10)
    table.open(ADMIN, node, now=27, timeout=10)
    table.open(ADMIN, node, now=28, timeout=10)  # the owner's third: its oldest gives way
    assert len(table) == 3
    for gone in (old, first):
        with pytest.raises(StanzaError):
            table.find(ADMIN, node, gone.id, now=29, timeout=10)
    table.open(JID.parse("other@example.com/x"), node, now=29, timeout=10)  # the table's fourth
    assert len(table) == 3


# ---- reading the forms -----------------------------------------------------------------------


def test_accounts_are_bare_jids_of_the_server() -> None:
    assert account_jid("example.com", " Alice@Example.com ") == JID.parse("alice@example.com")
    assert account_jid("example.com", "alice@example.com/pc", full=True) == JID.parse("alice@example.com/pc")
    for value, reason in [
        (None, "name an account"), ("", "name an account"), ("alice@other.example", "not an account of"),
        ("example.com", "not an account of"), ("@example.com", "not a valid JID"),
        ("alice@example.com/pc", "bare JID"),
    ]:  # fmt: skip
        with pytest.raises(FormError, match=reason):
            account_jid("example.com", value)
    form = SubmittedForm("submit", {"accountjids": ("a@example.com", " ", "b@example.com/x")})
    assert account_jids("example.com", form, full=True) == [
        JID.parse("a@example.com"),
        JID.parse("b@example.com/x"),
    ]
    with pytest.raises(FormError, match="bare JID"):
        account_jids("example.com", form)
    with pytest.raises(FormError, match="at least one"):
        account_jids("example.com", SubmittedForm("submit", {"accountjids": ("",)}))


def test_passwords_are_prepared_and_never_empty() -> None:
    assert password_of(SubmittedForm("submit", {"password": ("pass word",)})) == "pass word"
    for values in ((), ("",)):
        with pytest.raises(FormError, match="empty"):
            password_of(SubmittedForm("submit", {"password": values}))
    with pytest.raises(FormError, match="characters"):
        password_of(SubmittedForm("submit", {"password": ("bad\x07bell",)}))


def submission(xml: str) -> SubmittedForm:
    return read_submission(etree.fromstring(f"<command xmlns='{NS_COMMANDS}'>{xml}</command>"))


def test_a_stage_needs_a_submitted_admin_form() -> None:
    form_type = f"<field var='FORM_TYPE'><value>{NS_ADMIN}</value></field>"
    motd = "<field var='motd'><value>a</value><value>b</value></field>"
    form = submission(f"<x xmlns='jabber:x:data' type='submit'>{form_type}{motd}</x>")
    assert form.texts("motd") == ("a", "b")
    assert submission("<x xmlns='jabber:x:data' type='submit'/>").values == {}  # FORM_TYPE may be left out
    for xml, reason in [
        ("", "missing"),
        ("<x xmlns='jabber:x:data' type='result'/>", "not a submission"),
        ("<x xmlns='jabber:x:data' type='bogus'/>", "form type"),
        ("<x xmlns='jabber:x:data' type='submit'><field><value>x</value></field></x>", "no var"),
        ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x>",
         "not this command's"),
    ]:  # fmt: skip
        with pytest.raises(StanzaError, match=reason) as refused:
            submission(xml)
        assert condition(refused.value) == ("bad-request", "bad-payload")


def test_options_are_checked() -> None:
    assert Options().session_timeout == 600.0
    for bad in (0, -1, 86401, "10", True):
        with pytest.raises(ModuleConfigError, match=r"modules\.adhoc\.session_timeout"):
            Options(session_timeout=bad)  # type: ignore[arg-type]
    options = Options(max_reminders=3, max_reminder_text=10, reminder_recheck=0.5)
    assert (options.max_reminders, options.max_reminder_text, options.reminder_recheck) == (3, 10, 0.5)
    checks: tuple[tuple[str, tuple[object, ...]], ...] = (
        ("max_reminders", (0, -1, 100_001, 2.5, "3", True)),
        ("max_reminder_text", (0, 100_001, "10", False)),
        ("reminder_recheck", (0, 0.05, 3601, "30", True)),
    )
    for name, values in checks:
        for value in values:
            with pytest.raises(ModuleConfigError, match=rf"modules\.adhoc\.{name}"):
                Options(**{name: value})  # type: ignore[arg-type]


# ---- the engine: stages and actions ------------------------------------------------------------

TWO_STAGES = f"{NS_ADMIN}#test-two-stages"


async def _first_fields(_ctx: IqContext) -> Sequence[Field]:
    return (Field("name", "text-single", required=True),)


def _check_name(form: SubmittedForm) -> None:
    if not form.text("name"):
        raise FormError("the name is empty")


async def _greet(_ctx: IqContext, forms: Sequence[SubmittedForm]) -> Done:
    name, greeting = forms[0].text("name"), forms[1].text("greeting")
    return Done((("info", f"{greeting}, {name}"),), (Field("said", values=(f"{greeting}, {name}",)),))


@pytest.fixture
def two_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    command = Command(TWO_STAGES, "Test", _greet, (
        Stage("Who", "Name someone.", _first_fields, _check_name),
        Stage("What", "Say something.", static(Field("greeting", "text-single"))),
    ))  # fmt: skip
    monkeypatch.setitem(adhoc.COMMANDS, TWO_STAGES, command)


def context(payload: str, sender: JID = ADMIN) -> IqContext:
    iq = etree.fromstring(f"<iq xmlns='jabber:client' type='set' id='i1' from='{sender}' to='example.com'>"
                          f"<command xmlns='{NS_COMMANDS}' node='{TWO_STAGES}' {payload}</iq>")  # fmt: skip
    config = SimpleNamespace(server=SimpleNamespace(admins=("boss@example.com",)))
    return IqContext(stanza=iq, from_jid=sender, to_jid=JID.parse("example.com"), options=Options(),
                     storage=cast(Any, None), config=cast(Any, config), server=cast(Any, None))  # fmt: skip


def form(**values: str) -> str:
    fields = "".join(f"<field var='{var}'><value>{value}</value></field>" for var, value in values.items())
    return f"<x xmlns='jabber:x:data' type='submit'>{fields}</x>"


async def step(payload: str) -> st.Element:
    return (await adhoc.execute(context(payload)))[0]


def actions(reply: st.Element) -> tuple[str | None, list[str]]:
    found = reply.find(f"{{{NS_COMMANDS}}}actions")
    assert found is not None, etree.tostring(reply)
    return found.get("execute"), [etree.QName(a).localname for a in found]


def note_texts(reply: st.Element) -> list[tuple[str | None, str | None]]:
    return [(n.get("type"), n.text) for n in reply.iterfind(f"{{{NS_COMMANDS}}}note")]


async def test_next_prev_and_complete_walk_the_stages(two_stages: None) -> None:
    first = await step("action='execute'/>")
    sessionid = first.get("sessionid")
    assert (first.get("status"), actions(first)) == ("executing", ("next", ["next"]))
    with pytest.raises(StanzaError) as early:
        await step(f"sessionid='{sessionid}' action='complete'>{form(name='Ann')}</command>")
    assert condition(early.value) == ("bad-request", "bad-action")
    refused = await step(f"sessionid='{sessionid}'>{form(name='')}</command>")  # execute = next here
    assert note_texts(refused) == [("error", "the name is empty")]
    assert actions(refused) == ("next", ["next"])

    second = await step(f"sessionid='{sessionid}' action='next'>{form(name='Ann')}</command>")
    assert actions(second) == ("complete", ["prev", "complete"])
    assert second.find("{jabber:x:data}x/{jabber:x:data}title").text == "What"  # type: ignore[union-attr]
    with pytest.raises(StanzaError) as past_the_end:
        await step(f"sessionid='{sessionid}' action='next'>{form(greeting='Hi')}</command>")
    assert condition(past_the_end.value) == ("bad-request", "bad-action")

    back = await step(f"sessionid='{sessionid}' action='prev'/>")
    assert actions(back) == ("next", ["next"])
    with pytest.raises(StanzaError) as before_the_start:
        await step(f"sessionid='{sessionid}' action='prev'/>")
    assert condition(before_the_start.value) == ("bad-request", "bad-action")

    await step(f"sessionid='{sessionid}' action='next'>{form(name='Bob')}</command>")
    done = await step(f"sessionid='{sessionid}'>{form(greeting='Hello')}</command>")  # execute = complete
    assert (done.get("status"), done.get("sessionid")) == ("completed", sessionid)
    assert note_texts(done) == [("info", "Hello, Bob")]
    result = done.find("{jabber:x:data}x")
    assert result is not None
    assert result.get("type") == "result"
    assert [f.get("var") for f in result] == ["FORM_TYPE", "said"]
    with pytest.raises(StanzaError) as over:
        await step(f"sessionid='{sessionid}'>{form(greeting='Again')}</command>")
    assert condition(over.value) == ("bad-request", "bad-sessionid")


async def test_a_cancel_form_or_action_ends_the_session(two_stages: None) -> None:
    for how in ("action='cancel'/>", "><x xmlns='jabber:x:data' type='cancel'/></command>"):
        sessionid = (await step("/>")).get("sessionid")
        ended = await step(f"sessionid='{sessionid}' {how}")
        assert ended.get("status") == "canceled"
        with pytest.raises(StanzaError) as gone:
            await step(f"sessionid='{sessionid}' action='next'>{form(name='x')}</command>")
        assert condition(gone.value) == ("bad-request", "bad-sessionid")


async def test_actions_without_a_session_and_unknown_actions_are_refused(two_stages: None) -> None:
    for payload, expected in [
        ("action='next'/>", ("bad-request", "bad-sessionid")),
        ("action='cancel'/>", ("bad-request", "bad-sessionid")),
        ("action='restart'/>", ("bad-request", "malformed-action")),
    ]:
        with pytest.raises(StanzaError) as refused:
            await step(payload)
        assert condition(refused.value) == expected
    with pytest.raises(StanzaError) as forbidden:
        await adhoc.execute(context("/>", JID.parse("mallory@example.com/x")))
    assert condition(forbidden.value) == ("forbidden", None)
