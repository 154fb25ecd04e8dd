"""Offline-message email digests (module `email_digest`) end to end, with a real SMTP server.

The relay is aiosmtpd on a loopback port the OS chose (tests/support/smtp.py). The module's
server (two workers) sends to it without STARTTLS (TLS to a relay: tests/unit/modules/), with a
quiet period of 2 s and a sender that looks for due digests every 0.2 s. Each test waits for the
mail to its own recipient's address (an event under a bound). Where the point is that no mail
comes, the test waits out the quiet period and a margin (the one bounded wait), then shows that
the same user does get a mail for a later message, so that the silence was not a broken sender.

Addresses come from the recipient's vCard (EMAIL/USERID) or from the company directory; the
relay-down and the restart cases run servers of their own (their relay port and options).
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from imactor.config import DEFAULT_MODULES
from tests.integration.conftest import PASSWORD, Accounts
from tests.support.peer import C, Peer, Peers, message, show
from tests.support.server import ServerProcess, imactor_cli, running_server
from tests.support.smtp import Mail, SmtpRelay, serve_dropping
from tests.support.timeouts import TIMEOUT, WORKERS_TIMEOUT

NS_NOTIFY = "urn:imactor:email-notify:0"
NS_VCARD = "vcard-temp"
FROM = "chat@example.org"
QUIET = 2.0
#: Longest time a digest may take after its quiet period ends: the sender's poll (0.2 s) and
#: a mail's trip to the relay, with room for a loaded machine.
MARGIN = 3.0
ENABLED = (*DEFAULT_MODULES, "directory", "email_digest")
MODULES = "modules = [" + ", ".join(f'"{name}"' for name in ENABLED) + "]\n"


def settings(port: int, *, quiet: float = QUIET, include_text: bool = False, extra: str = "") -> str:
    return (
        f'\n[modules.email_digest]\nquiet_period = {quiet}\npoll_interval = 0.2\nfrom_address = "{FROM}"\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {port}\nsmtp_starttls = "off"\ntimeout = 5.0\n'
        f"include_text = {str(include_text).lower()}\n{extra}"
    )


@pytest.fixture(scope="module")
def relay() -> Iterator[SmtpRelay]:
    with SmtpRelay() as smtp:
        yield smtp


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, relay: SmtpRelay) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("email")
    # Two workers: the recipient's actor may note a message on one, the sender runs on worker 0.
    with running_server(directory, server_options=MODULES, extra=settings(relay.port), workers=2) as process:
        yield process


def address(username: str) -> str:
    return f"{username}@mail.example"


async def set_vcard_email(peer: Peer) -> None:
    """The recipient's address in its vCard (set from a session that sends no presence: the
    account stays offline)."""
    reply = await peer.iq(
        f"<vCard xmlns='{NS_VCARD}'><FN>{peer.username}</FN><EMAIL><INTERNET/><USERID>"
        f"{address(peer.username)}</USERID></EMAIL></vCard>", type_="set",
    )  # fmt: skip
    assert reply.get("type") == "result", show(reply)


async def offline_recipient(peers: Peers, username: str) -> None:
    peer = await peers.login(username, "setup")
    await set_vcard_email(peer)
    await peer.aclose()


async def chat(sender: Peer, to: str, body: str) -> None:
    await sender.send(f"<message to='{to}@localhost' type='chat'><body>{body}</body></message>")


async def noted(sender: Peer, recipient: str) -> None:
    """A round trip through the recipient's user actor (a vCard get of its bare JID): the
    messages routed to it before were handled, their digest entries written."""
    reply = await sender.iq(f"<vCard xmlns='{NS_VCARD}'/>", to=f"{recipient}@localhost")
    assert reply.get("type") == "result", show(reply)


def notify_cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return imactor_cli(server.config_path, "user", "notify", *args)


def text_of(mail: Mail) -> str:
    body = mail.message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def test_digest_lists_senders_and_counts_without_text(
    server: ServerProcess, relay: SmtpRelay, accounts: Accounts, peers: Peers
) -> None:
    (recipient,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        await offline_recipient(peers, recipient)
        alice, bob = await peers.online_users(2)
        await chat(alice, recipient, "the secret plan")
        await chat(alice, recipient, "second")
        await noted(alice, recipient)  # alice's come first in the digest
        await chat(bob, recipient, "third")
        mails = await relay.wait_for(address(recipient), QUIET + MARGIN)
    assert len(mails) == 1, mails
    mail = mails[0]
    assert mail.mail_from == FROM
    message_ = mail.message
    assert message_["From"] == FROM
    assert message_["To"].addresses[0].addr_spec == address(recipient)
    assert message_["Subject"] == f"3 new messages from {alice.bare} and 1 other"
    assert message_["Date"]
    assert message_["Message-ID"].endswith("@localhost>")
    text = text_of(mail)
    assert f"{alice.bare}: 2 new messages" in text, text
    assert f"{bob.bare}: 1 new message" in text, text
    assert "secret plan" not in text  # include_text is off
    assert "third" not in text
    assert b"secret plan" not in mail.data


async def test_login_before_the_period_ends_sends_nothing(
    server: ServerProcess, relay: SmtpRelay, accounts: Accounts, peers: Peers
) -> None:
    (recipient,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        await offline_recipient(peers, recipient)
        (sender,) = await peers.online_users(1)
        await chat(sender, recipient, "are you there?")
        await noted(sender, recipient)  # pending, then the user logs in
        reader = await peers.online(recipient)  # well within the 2 s: the user reads it
        await reader.expect(message(from_=sender.jid))
        await reader.aclose()
        assert await relay.wait_for(address(recipient), QUIET + MARGIN) == []
        # The same user, offline this time, gets a mail for the next message: the one before
        # was dropped, not lost on the way (and it is not counted again).
        await chat(sender, recipient, "later")
        mails = await relay.wait_for(address(recipient), QUIET + MARGIN)
    assert len(mails) == 1
    assert f"{sender.bare}: 1 new message" in text_of(mails[0])


async def test_opt_out_from_the_client_and_back_on_with_the_cli(
    server: ServerProcess, relay: SmtpRelay, accounts: Accounts, peers: Peers
) -> None:
    (recipient,) = accounts(1)
    with trio.fail_after(TIMEOUT):
        setup = await peers.login(recipient, "setup")
        await set_vcard_email(setup)
        reply = await setup.iq(f"<notify xmlns='{NS_NOTIFY}'/>")
        notify = reply.find(f"{{{NS_NOTIFY}}}notify")
        assert notify is not None, show(reply)
        assert notify.get("enabled") == "true"
        assert notify.get("address") == address(recipient)
        reply = await setup.iq(f"<notify xmlns='{NS_NOTIFY}' enabled='false'/>", type_="set")
        assert reply.get("type") == "result", show(reply)
        bad = await setup.iq(f"<notify xmlns='{NS_NOTIFY}' enabled='maybe'/>", type_="set")
        assert bad.find(f"{C}error/{{urn:ietf:params:xml:ns:xmpp-stanzas}}bad-request") is not None, show(bad)
        await setup.aclose()
        (sender,) = await peers.online_users(1)
        # Someone else may not read or change it.
        other = await sender.iq(f"<notify xmlns='{NS_NOTIFY}' enabled='true'/>", type_="set",
                                to=f"{recipient}@localhost")  # fmt: skip
        assert other.get("type") == "error", show(other)
        await chat(sender, recipient, "hello?")
        await noted(sender, recipient)
        assert await relay.wait_for(address(recipient), QUIET + MARGIN) == []
        shown = await trio.to_thread.run_sync(notify_cli, server, recipient)
        assert shown.stdout.strip() == f"email digests of {recipient}@localhost: off", shown.stderr
        done = await trio.to_thread.run_sync(notify_cli, server, recipient, "on")
        assert done.returncode == 0, done.stderr
        await chat(sender, recipient, "now?")
        mails = await relay.wait_for(address(recipient), QUIET + MARGIN)
    assert len(mails) == 1
    # The digest that was dropped while off is not sent now: only the new message counts.
    assert f"{sender.bare}: 1 new message" in text_of(mails[0])


async def test_directory_address_and_names_in_utf8(
    server: ServerProcess, relay: SmtpRelay, accounts: Accounts, peers: Peers, tmp_path: Path
) -> None:
    recipient, writer = accounts(2)
    csv = tmp_path / "org.csv"
    csv.write_text(
        "username,name,department,title,phone,email\n"
        f"{recipient},李华,公司,,,{recipient}@corp.example\n{writer},王小明,公司,,,\n",
        encoding="utf-8",
    )
    done = await trio.to_thread.run_sync(imactor_cli, server.config_path, "org", "import", str(csv))
    assert done.returncode == 0, done.stderr
    with trio.fail_after(TIMEOUT):
        sender = await peers.online(writer)
        await chat(sender, recipient, "你好")
        mails = await relay.wait_for(f"{recipient}@corp.example", QUIET + MARGIN)
    assert len(mails) == 1
    message_ = mails[0].message
    assert message_["To"].addresses[0].display_name == "李华"
    assert message_["Subject"] == "1 new message from 王小明"
    assert f"王小明 <{writer}@localhost>: 1 new message" in text_of(mails[0])
    assert "你好" not in text_of(mails[0])


async def test_relay_down_does_not_hold_messages_and_the_digest_goes_once_it_is_up(tmp_path: Path) -> None:
    """The relay takes connections and drops them (down behind its address): messages still
    flow, the digest is retried with backoff, and it is sent once a real relay answers."""
    attempts_in, attempts = trio.open_memory_channel[int](100)
    async with trio.open_nursery() as nursery:
        down, closed = trio.CancelScope(), trio.Event()

        async def run_down(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with down:
                    await serve_dropping(attempts_in, task_status=task_status)
            finally:
                closed.set()

        port: int = await nursery.start(run_down)
        recipient, sender_name, online_name = "rd_to", "rd_from", "rd_online"
        extra = settings(port, quiet=0.5, extra="retry_base = 0.2\nretry_max = 0.4\nmax_attempts = 50\n")
        users = [(name, PASSWORD) for name in (recipient, sender_name, online_name)]
        with running_server(tmp_path, server_options=MODULES, extra=extra, users=users) as srv:
            with trio.fail_after(TIMEOUT):
                setup = await Peer.login(srv.c2s_port, recipient, PASSWORD, "setup")
                await set_vcard_email(setup)
                await setup.aclose()
                sender = await Peer.online(srv.c2s_port, sender_name, PASSWORD)
                online = await Peer.online(srv.c2s_port, online_name, PASSWORD)
                await chat(sender, recipient, "while the relay is down")
                # Two failed attempts: retried.
                assert await attempts.receive() == 1
                assert await attempts.receive() == 2
                # Delivery is unaffected meanwhile: an online user gets a message at once.
                await chat(sender, online_name, "still here")
                got = await online.expect(message(from_=sender.jid))
                assert got.findtext(f"{C}body") == "still here"
                down.cancel()
                await closed.wait()
                with SmtpRelay(port) as up:
                    mails = await up.wait_for(address(recipient), TIMEOUT / 2)
                    assert len(mails) == 1
                    assert await up.wait_for(address(recipient), 1.5, count=2) == mails  # no copy
                await sender.aclose()
                await online.aclose()
            log = (tmp_path / "server.log").read_text()
            assert "failed (attempt 1 of 50)" in log, log


async def test_restart_before_the_period_ends_sends_exactly_one_mail_with_text(
    tmp_path: Path, relay: SmtpRelay
) -> None:
    """The pending digest is in the database: a server stopped during the quiet period sends it
    after it starts again, once; with ``include_text`` the mail holds the message's text.

    The first run's relay port is closed (bound, not listening), so that a loaded machine which
    takes longer than the quiet period to stop the server cannot send the mail early: whatever
    the first run did, the digest must go out once from the second."""
    recipient, sender_name = "rs_to", "rs_from"
    with trio.fail_after(WORKERS_TIMEOUT), socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        first = settings(closed.getsockname()[1], quiet=5.0, include_text=True)
        with running_server(tmp_path, server_options=MODULES, extra=first,
                            users=[(recipient, PASSWORD), (sender_name, PASSWORD)]) as srv:  # fmt: skip
            setup = await Peer.login(srv.c2s_port, recipient, PASSWORD, "setup")
            await set_vcard_email(setup)
            await setup.aclose()
            sender = await Peer.online(srv.c2s_port, sender_name, PASSWORD)
            await chat(sender, recipient, "héllo 你好 &amp; more")
            await noted(sender, recipient)  # then the stop may come
            await sender.aclose()
        extra = settings(relay.port, quiet=5.0, include_text=True)
        with running_server(tmp_path, server_options=MODULES, extra=extra):
            mails = await relay.wait_for(address(recipient), 5.0 + TIMEOUT / 2)
            assert len(mails) == 1
            assert "héllo 你好 & more" in text_of(mails[0])
            assert f"{sender_name}@localhost: 1 new message" in text_of(mails[0])
            assert await relay.wait_for(address(recipient), 1.5, count=2) == mails  # no copy
