"""XEP-0227 import and export against a temporary SQLite database: the peers' real exports
(tests/data/xep0227/), the round trip export → import → export, idempotence, --dry-run, and
malformed input named by file, line and element."""

from __future__ import annotations

import base64
import re
import sqlite3
import stat
from pathlib import Path

import pytest

from imactor.config import Config, load_config
from imactor.migration import (
    decode_files,
    export_document,
    export_files,
    import_accounts,
    pep_limits,
    read_document,
)
from imactor.storage import ArchiveEntry, RosterItem, Storage
from imactor.xmpp import pie
from imactor.xmpp import pubsub as ps
from imactor.xmpp.jid import prep_password
from imactor.xmpp.scram import verify_password
from tests.support.pie_samples import EJABBERD_MAIN, PASSWORDS, PROSODY_FILES
from tests.unit.storage.conftest import FAST_ITERATIONS

HEAD = "<server-data xmlns='urn:xmpp:pie:0'>\n<host jid='localhost'>\n"
TAIL = "</host>\n</server-data>\n"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "imactor.toml"
    path.write_text(f'[server]\ndomain = "localhost"\ndata_dir = "data"\n[auth]\nscram_iterations = {4096}\n')
    return load_config(path)


async def run_import(
    storage: Storage, config: Config, paths: list[Path], *, dry_run: bool = False
) -> list[str]:
    said: list[str] = []
    accounts = decode_files(paths, "localhost", said.append)
    await import_accounts(storage, config, accounts, dry_run=dry_run, say=said.append)
    return said


def decoded(paths: list[Path]) -> dict[str, pie.Account]:
    return {a.name: a for a in decode_files(paths, "localhost", lambda _: None)}


def test_prosody_export_decodes() -> None:
    accounts = decoded(PROSODY_FILES)
    assert sorted(accounts) == ["alice", "bob", "carol"]
    alice = accounts["alice"]
    [creds] = alice.credentials
    assert (creds.hash_name, creds.iterations) == ("SHA-1", 10000)
    assert verify_password(prep_password(PASSWORDS["alice"]), creds)  # the old password still fits
    assert alice.roster == [
        RosterItem("bob@localhost", "Bob", "both", groups=("Friends", "Work"), listed=True),
        RosterItem("carol@localhost", pending_in=True),  # Prosody's <presence/> has no xmlns
    ]
    assert [m.timestamp for m in alice.archive] == [1796622947.0] * 3
    assert [n.node for n in alice.pep] == ["http://jabber.org/protocol/nick"]
    assert alice.skipped == []


def test_ejabberd_export_decodes_through_its_xincludes() -> None:
    accounts = decoded([EJABBERD_MAIN])
    assert sorted(accounts) == ["alice", "bob", "carol"]
    for name, account in accounts.items():
        [creds] = account.credentials
        assert (creds.hash_name, creds.iterations, len(creds.stored_key)) == ("SHA-1", 4096, 20)
        assert verify_password(prep_password(PASSWORDS[name]), creds)  # keys encoded twice: COMPAT
    [offline] = accounts["bob"].offline
    assert b"Are you there, Bob?" in offline
    assert b"urn:xmpp:sid:0" not in offline  # ejabberd's archive id for bob is not carried over
    assert b"urn:xmpp:mam:tmp" not in offline


async def test_round_trip_gives_the_same_document(tmp_path: Path, config: Config) -> None:
    limits = pep_limits(config)
    async with await Storage.open(f"sqlite:///{tmp_path / 'one.sqlite3'}") as one:
        await run_import(one, config, [*PROSODY_FILES, EJABBERD_MAIN])
        # What only imactor writes: both verifiers, pre-approval, fractions of a second, a
        # configured PEP node with several items.
        await one.accounts.create("dave", "dave's password", iterations=FAST_ITERATIONS)
        await one.roster.put("dave", RosterItem("alice@localhost", "Ally", "from", ask=True, approved=True,
                                                groups=("b", "a")))  # fmt: skip
        await one.archive.append([ArchiveEntry("dave", "x1", "alice@localhost", "in",
                                               b"<message xmlns='jabber:client' from='alice@localhost/l' "
                                               b"to='dave@localhost'><body>hi</body></message>",
                                               "l", 1796622947.123456)])  # fmt: skip
        await one.offline.store(
            "dave", b"<message xmlns='jabber:client' to='dave@localhost'><body>1</body></message>"
        )
        config_json = ps.NodeConfig(access_model="open", max_items=5, title="Moods").to_json()
        await one.pep.set_node("dave", "urn:xmpp:mood", config_json, 5)
        for i in range(3):
            await one.pep.publish("dave", "urn:xmpp:mood", f"i{i}", b"<mood xmlns='urn:xmpp:mood'/>", 5)
        first, count = await export_document(one, "localhost", limits)
    assert count == 4
    for part in (b'approved="true"', b"SCRAM-SHA-256", b'stamp="2026-12-07T05:55:47.123456Z"',
                 b'<field var="pubsub#access_model"><value>open</value>',
                 b"Are you there, Bob?"):  # fmt: skip
        assert part in first
    (tmp_path / "first.xml").write_bytes(first)

    async with await Storage.open(f"sqlite:///{tmp_path / 'two.sqlite3'}") as two:
        await run_import(two, config, [tmp_path / "first.xml"])
        second, _ = await export_document(two, "localhost", limits)
        assert second == first
        again = await run_import(two, config, [tmp_path / "first.xml"])
    assert again == ["alice: unchanged", "bob: unchanged", "carol: unchanged", "dave: unchanged"]


async def test_import_is_idempotent_and_dry_run_writes_nothing(storage: Storage, config: Config) -> None:
    planned = await run_import(storage, config, PROSODY_FILES, dry_run=True)
    assert planned[0].startswith(
        "would change alice: new account; credentials SCRAM-SHA-1 (10000 iterations)"
    )
    assert await storage.accounts.list_usernames() == []

    done = await run_import(storage, config, PROSODY_FILES)
    assert [line.removeprefix("would change ") for line in planned] == done
    assert await run_import(storage, config, PROSODY_FILES) == [
        f"{n}: unchanged" for n in ("alice", "bob", "carol")
    ]
    stored = await storage.xep0227.read("alice")
    assert stored is not None
    assert len(stored.archive) == 3


async def test_a_plaintext_password_gives_both_verifiers_once(
    tmp_path: Path, storage: Storage, config: Config
) -> None:
    path = tmp_path / "old.xml"
    path.write_text(HEAD + "<user name='Eve' password='pässword'/>\n" + TAIL)  # XEP-0227 before 1.1
    [line] = await run_import(storage, config, [path])
    assert line == ("eve: new account; credentials SCRAM-SHA-1 (4096 iterations), "
                    "SCRAM-SHA-256 (4096 iterations) from the password")  # fmt: skip
    credentials = await storage.accounts.get_credentials("eve")
    assert credentials is not None
    assert all(verify_password(prep_password("pässword"), c) for c in credentials.values())
    assert await run_import(storage, config, [path]) == ["eve: unchanged"]  # no new salt each time


MALFORMED = [
    ("<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='a'></host>", 1,
     "not well-formed XML"),
    (HEAD + "<user password='x'/>\n" + TAIL, 3, "<user>: no name attribute"),
    (HEAD + "<user name='a'>\n<query xmlns='jabber:iq:roster'>\n"
     "<item jid='b@localhost' subscription='maybe'/></query></user>\n" + TAIL, 5,
     "<item>: subscription 'maybe'"),
    (HEAD + "<user name='a'>\n<query xmlns='jabber:iq:roster'><item jid='@@'/></query></user>\n" + TAIL, 4,
     "<item>: jid '@@' is not a JID"),
    (HEAD + "<user name='a'>\n<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>"
     "<iter-count>4096</iter-count><salt>c2FsdA==</salt><server-key>AAAA</server-key>"
     "<stored-key>AAAA</stored-key></scram-credentials></user>\n" + TAIL, 4, "<scram-credentials>"),
    (HEAD + "<user name='a'>\n<archive xmlns='urn:xmpp:pie:0#mam'>\n<result xmlns='urn:xmpp:mam:2' id='1'>"
     "<forwarded xmlns='urn:xmpp:forward:0'/></result></archive></user>\n" + TAIL, 5, "<result>: expected"),
    ("<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>\n"
     "<xi:include href='/etc/passwd'/></server-data>", 2, "<include>: href '/etc/passwd'"),
    ("<users/>", 1, "<users>: expected <server-data"),
    (HEAD + "<user name='a' password='a&#x378;'/>\n" + TAIL, 3,
     "<user>: the password is not a valid password"),
    (HEAD + "<user name='a'>\n<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>"
     "<iter-count>1000000000</iter-count></scram-credentials></user>\n" + TAIL, 4,
     "<scram-credentials>: iter-count 1000000000: every login"),
    ("", 1, "not well-formed XML"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "problem"), MALFORMED)
def test_malformed_input_is_named_by_file_line_and_element(tmp_path: Path, text: str, line: int,
                                                             problem: str) -> None:  # fmt: skip
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(pie.PieError) as caught:
        decode_files([path], "localhost", lambda _: None)
    assert re.match(rf"{re.escape(str(path))}:{line}: ", str(caught.value)), str(caught.value)
    assert problem in str(caught.value)


def test_other_hosts_are_skipped_and_said(tmp_path: Path) -> None:
    path = tmp_path / "two-hosts.xml"
    path.write_text("<server-data xmlns='urn:xmpp:pie:0'><host jid='example.org'><user name='x'/></host>"
                    "<host jid='localhost'><user name='y'/></host></server-data>")  # fmt: skip
    said: list[str] = []
    assert [a.name for a in decode_files([path], "localhost", said.append)] == ["y"]
    assert said == [f"skipped host example.org ({path}): this server serves localhost"]
    # A domain this server serves as a [[hosts]] domain: its users are imported, keyed by bare JID.
    names = [a.name for a in decode_files([path], "localhost", said.append, hosts=["example.org"])]
    assert names == ["x@example.org", "y"]


async def test_each_served_domain_is_its_own_host_in_a_round_trip(tmp_path: Path, config: Config) -> None:
    """A [[hosts]] domain's accounts (keyed by bare JID) are exported under their own <host/>,
    named by localpart, and come back as the same accounts; the same localpart on two domains
    stays two accounts, each with its own roster and archive."""
    limits = pep_limits(config)
    async with await Storage.open(f"sqlite:///{tmp_path / 'one.sqlite3'}") as one:
        for key in ("erin", "erin@beta.test"):
            await one.accounts.create(key, f"{key}'s password", iterations=FAST_ITERATIONS)
        await one.roster.put("erin@beta.test", RosterItem("erin@localhost", "The other Erin", "both"))
        await one.archive.append([ArchiveEntry("erin@beta.test", "b1", "erin@localhost", "in",
                                               b"<message xmlns='jabber:client' from='erin@localhost/l' "
                                               b"to='erin@beta.test'><body>hello</body></message>",
                                               "l", 1796622947.5)])  # fmt: skip
        first, count = await export_document(one, "localhost", limits)
    assert count == 2
    hosts = re.findall(rb'<host jid="([^"]+)">\s*<user name="([^"]+)"', first)
    assert hosts == [(b"localhost", b"erin"), (b"beta.test", b"erin")]
    (tmp_path / "first.xml").write_bytes(first)

    async with await Storage.open(f"sqlite:///{tmp_path / 'two.sqlite3'}") as two:
        accounts = decode_files([tmp_path / "first.xml"], "localhost", lambda _: None, hosts=["beta.test"])
        await import_accounts(two, config, accounts, dry_run=False, say=lambda _: None)
        assert sorted(await two.accounts.list_usernames()) == ["erin", "erin@beta.test"]
        stored = await two.xep0227.read("erin@beta.test")
        assert stored is not None
        assert [item.jid for item in stored.roster] == ["erin@localhost"]
        assert [archived.stanza_id for archived in stored.archive] == ["b1"]
        credentials = await two.accounts.get_credentials("erin@beta.test")
        assert credentials is not None
        password = prep_password("erin@beta.test's password")
        assert all(verify_password(password, c) for c in credentials.values())
        second, _ = await export_document(two, "localhost", limits)
    assert second == first
    # The archive's own side is the host's account: the message came in from the other Erin.
    with sqlite3.connect(tmp_path / "two.sqlite3") as db:
        rows = db.execute("SELECT username, peer, direction FROM archive").fetchall()
    assert rows == [("erin@beta.test", "erin@localhost", "in")]


def test_includes_below_a_user_are_user_data(tmp_path: Path) -> None:
    """XEP-0227 §5 and §6: only includes at the top levels are followed."""
    (tmp_path / "secret.xml").write_text("<secret/>")
    path = tmp_path / "main.xml"
    path.write_text(HEAD + "<user name='a'><query xmlns='jabber:iq:private'><x xmlns='urn:example'>"
                    "<xi:include xmlns:xi='http://www.w3.org/2001/XInclude' href='secret.xml'/></x></query>"
                    "</user>\n" + TAIL)  # fmt: skip
    root = read_document(path)
    [account] = pie.decode_host(pie.hosts(root)[0])
    assert b"include" in account.private["{urn:example}x"]
    assert b"secret" not in account.private["{urn:example}x"].replace(b"secret.xml", b"")


def test_openfire_export_plugin_shape(tmp_path: Path) -> None:
    """The elements Openfire's user import/export plugin writes (per its source): the draft
    namespace, a plaintext password, and roster items, vCard fields and message bodies that
    dom4j leaves without a namespace."""
    path = tmp_path / "openfire.xml"
    path.write_text(
        "<server-data xmlns='http://www.xmpp.org/extensions/xep-0227.html#ns'>"
        "<host xmlns='' jid='localhost'><user name='frank' password='secret'>"
        "<query xmlns='jabber:iq:roster'>"
        "<item xmlns='' jid='alice@localhost' name='Alice' subscription='both'>"
        "<group>Friends</group></item></query>"
        "<vCard xmlns='vcard-temp'><FN xmlns=''>Frank</FN></vCard>"
        "<offline-messages><message xmlns='jabber:client' from='alice@localhost/x' to='frank@localhost' "
        "type='chat'><body xmlns=''>hello</body><delay xmlns='urn:xmpp:delay' from='localhost' "
        "stamp='Mon Dec 07 05:55:58 UTC 2026'>Offline Storage</delay></message></offline-messages>"
        "</user></host></server-data>"
    )
    [frank] = decode_files([path], "localhost", lambda _: None)
    assert (frank.name, frank.password) == ("frank", "secret")
    assert frank.roster == [RosterItem("alice@localhost", "Alice", "both", groups=("Friends",), listed=True)]
    assert frank.vcard == b'<vCard xmlns="vcard-temp"><FN>Frank</FN></vCard>'
    [message] = frank.offline
    assert b"<body>hello</body>" in message
    assert b'xmlns=""' not in message


def test_exports_for_the_peers_importers(tmp_path: Path) -> None:
    """--for ejabberd: SCRAM values as ejabberd 23.01's import_piefxis decodes them (base64 of
    the base64 text); --for prosody: one file per user, as Prosody's xep0227 store reads them.
    (scripts/make_xep0227_samples.py back imports both into the real peers.)"""
    accounts = decode_files(PROSODY_FILES, "localhost", lambda _: None)
    [ejabberd] = export_files(accounts, "localhost", tmp_path / "ejabberd.xml", "ejabberd")
    salt = accounts[0].credentials[0].salt
    twice = base64.b64encode(base64.b64encode(salt))
    assert b"<salt>" + twice + b"</salt>" in ejabberd.read_bytes()
    again = {a.name: a for a in decode_files([ejabberd], "localhost", lambda _: None)}
    assert all(again[a.name].credentials == a.credentials for a in accounts)

    files = export_files(accounts, "localhost", tmp_path / "prosody", "prosody")
    assert [f.name for f in files] == [f"{a.name}@localhost.xml" for a in accounts]
    for account, path in zip(accounts, files, strict=True):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [a.name for a in decode_files([path], "localhost", lambda _: None)] == [account.name]


async def test_an_archive_id_given_twice_is_imported_once(
    tmp_path: Path, storage: Storage, config: Config
) -> None:
    result = (
        "<result xmlns='urn:xmpp:mam:2' id='same'><forwarded xmlns='urn:xmpp:forward:0'>"
        "<delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:00Z'/>"
        "<message xmlns='jabber:client' from='a@localhost/x' to='b@localhost'><body>{}</body></message>"
        "</forwarded></result>"
    )
    path = tmp_path / "twice.xml"
    path.write_text(HEAD + "<user name='a'><archive xmlns='urn:xmpp:pie:0#mam'>" + result.format(1)
                    + result.format(2) + "</archive></user>\n" + TAIL)  # fmt: skip
    said = await run_import(storage, config, [path])
    assert said == ["a: new account; archived messages 1",
                    "  a has no password or SCRAM-SHA-1/-256 verifier: it cannot log in until "
                    "`imactor user passwd a`"]  # fmt: skip
    stored = await storage.xep0227.read("a")
    assert stored is not None
    assert [(m.stanza_id, m.timestamp) for m in stored.archive] == [("same", 1577836800.0)]
