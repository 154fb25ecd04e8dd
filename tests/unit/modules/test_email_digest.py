"""The digest mail (MIME, headers, UTF-8 names), the retry schedule, the options' checks and the
relay client's reading of failures (a real SMTP server: aiosmtpd, tests/support/smtp.py)."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from imactor.modules.email_digest import Options, relay
from imactor.modules.email_digest.compose import MAX_SHOWN, MAX_TEXT, DigestMail, Entry, compose
from imactor.server.module_host import ModuleHost
from imactor.server.modules import ModuleConfigError
from tests.support.ca import TestCA
from tests.support.smtp import SmtpRelay

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
ENTRIES = (
    Entry("wang@chat.example", "你好，明天开会吗？", NOW - 300),
    Entry("bob@chat.example", "lunch?", NOW - 200),
    Entry("wang@chat.example", "第二条", NOW - 100),
)
MAIL = DigestMail("0123abcd", "li@corp.example", "李华", "li@chat.example", ENTRIES)
NAMES = {"wang@chat.example": "王小明"}


def parsed(message: EmailMessage) -> EmailMessage:
    """As a mail client reads it: the bytes sent, parsed again."""
    again = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(again, EmailMessage)
    return again


def body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_the_headers_a_mail_needs_and_utf8_names() -> None:
    message = parsed(compose(MAIL, from_address="chat@corp.example", names=NAMES, include_text=False,
                             domain="chat.example", now=NOW))  # fmt: skip
    assert message["From"] == "chat@corp.example"
    (to,) = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("李华", "li@corp.example")
    assert message["Subject"] == "3 new messages from 王小明 and 1 other"
    assert parsedate_to_datetime(message["Date"]).timestamp() == NOW
    assert message["Message-ID"] == "<digest.0123abcd@chat.example>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    # On the wire every header is ASCII (RFC 2047 encoded words for the names).
    head = compose(MAIL, from_address="chat@corp.example", names=NAMES, include_text=False,
                   domain="chat.example", now=NOW).as_bytes().split(b"\n\n", 1)[0]  # fmt: skip
    head.decode("ascii")
    assert b"\n " not in head  # nothing folded


def test_senders_and_counts_without_the_text_by_default() -> None:
    message = parsed(compose(MAIL, from_address="chat@corp.example", names=NAMES, include_text=False,
                             domain="chat.example", now=NOW))  # fmt: skip
    text = body(message)
    assert "3 new messages arrived for li@chat.example" in text
    assert "  王小明 <wang@chat.example>: 2 new messages" in text
    assert "  bob@chat.example: 1 new message\n" in text
    assert "你好" not in text
    assert "lunch" not in text
    assert text.index("王小明") < text.index("bob@")  # first come, first listed


def test_the_text_with_include_text() -> None:
    long = Entry("bob@chat.example", "x" * (MAX_TEXT + 50) + "\nsecond line", NOW)
    mail = DigestMail("id", "li@corp.example", "", "li@chat.example", (*ENTRIES, long))
    text = body(parsed(compose(mail, from_address="chat@corp.example", names=NAMES, include_text=True,
                               domain="chat.example", now=NOW)))  # fmt: skip
    assert "[2027-01-15 07:55 UTC] 王小明:\n  你好，明天开会吗？" in text
    assert "  lunch?" in text
    assert "x" * MAX_TEXT + "…" in text
    assert "second line" not in text  # cut


def test_a_long_absence_shows_the_oldest_texts_and_counts_all() -> None:
    entries = [Entry("bob@chat.example", f"message {n}", NOW) for n in range(MAX_SHOWN + 7)]
    mail = DigestMail("id", "li@corp.example", "", "li@chat.example", entries)
    text = body(parsed(compose(mail, from_address="chat@corp.example", names={}, include_text=True,
                               domain="chat.example", now=NOW)))  # fmt: skip
    assert f"bob@chat.example: {MAX_SHOWN + 7} new messages" in text
    assert f"  message {MAX_SHOWN - 1}\n" in text
    assert f"message {MAX_SHOWN}\n" not in text
    assert "… and 7 more." in text


def test_the_retry_schedule_doubles_up_to_its_cap() -> None:
    delays = [relay.retry_delay(n, base=60, cap=3600) for n in range(1, 9)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "from_address"),
        ({"from_address": "not an address"}, "from_address"),
        ({"smtp_starttls": "sometimes"}, "smtp_starttls"),
        ({"smtp_port": 70000}, "smtp_port"),
        ({"quiet_period": 0}, "quiet_period"),
        ({"retry_base": float("nan")}, "retry_base"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"smtp_password": "a", "smtp_password_file": "/etc/hostname"}, "smtp_password_file"),
        ({"smtp_password_file": "/nonexistent/secret"}, "smtp_password_file"),
    ],
)
def test_bad_options_name_their_key(options: dict[str, object], key: str) -> None:
    values: dict[str, object] = {"from_address": "chat@corp.example", **options}
    if key == "from_address":
        values = options
    with pytest.raises(ModuleConfigError, match=f"modules.email_digest.{key}:"):
        Options(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("names", "options", "message"),
    [
        (["email_digest"], {"email_digest": {"from_address": "a@b.example"}},
         "f.toml: server.modules: email_digest needs 'offline'"),
        (["offline", "email_digest"], {},
         "f.toml: modules.email_digest.from_address: expected an email address"),
        (["offline", "email_digest"], {"email_digest": {"from_address": "a@b.example", "smtp_tls": "yes"}},
         "f.toml: modules.email_digest.smtp_tls: expected bool"),
    ],
)  # fmt: skip
def test_the_config_file_and_key_are_named(names: list[str], options: dict[str, dict[str, object]],
                                           message: str) -> None:  # fmt: skip
    with pytest.raises(ModuleConfigError) as caught:
        ModuleHost(names, options, "f.toml")
    assert str(caught.value).startswith(message)


def test_default_ports() -> None:
    assert Options(from_address="a@b.example").relay.port == 587
    assert Options(from_address="a@b.example", smtp_tls=True).relay.port == 465
    assert Options(from_address="a@b.example", smtp_port=2525).relay.port == 2525


def _relay(port: int, **changes: object) -> relay.Relay:
    values: dict[str, object] = {"host": "127.0.0.1", "port": port, "starttls": "off", "tls": False,
                                 "username": "", "password": "", "password_file": "", "timeout": 5.0,
                                 "ca_file": "", "verify": True, **changes}  # fmt: skip
    return relay.Relay(**values)  # type: ignore[arg-type]


def _mail() -> EmailMessage:
    return compose(MAIL, from_address="chat@corp.example", names=NAMES, include_text=False,
                   domain="chat.example", now=NOW)  # fmt: skip


def test_a_closed_port_is_a_transient_failure() -> None:
    with socket.socket() as held:  # bound, not listening: connections are refused
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        with pytest.raises(relay.RelayError) as failure:
            relay.send(_relay(port), _mail(), "chat@corp.example", "li@corp.example")
    assert not failure.value.permanent


def test_starttls_required_but_not_offered_is_refused_before_anything_is_sent() -> None:
    with SmtpRelay() as smtp:
        with pytest.raises(relay.RelayError, match="STARTTLS") as failure:
            relay.send(_relay(smtp.port, starttls="required"), _mail(), "chat@corp.example", "li@corp.ex")
        assert not failure.value.permanent
        assert smtp.mails == []
        relay.send(_relay(smtp.port, starttls="optional"), _mail(), "chat@corp.example", "li@corp.ex")
        (mail,) = smtp.mails
    assert mail.rcpt_tos == ("li@corp.ex",)
    assert mail.mail_from == "chat@corp.example"
    assert mail.message["Subject"] == "3 new messages from 王小明 and 1 other"


def test_the_password_file_is_read_at_each_send(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert relay._password(_relay(25, password_file=str(secret))) == "s3cret"
    secret.write_text("rotated\n")
    assert relay._password(_relay(25, password_file=str(secret))) == "rotated"


@pytest.fixture(scope="module")
def relay_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A server context for "localhost" from a test CA, and that CA's file."""
    ca = TestCA(tmp_path_factory.mktemp("smtp-ca"))
    issued = ca.issue("localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.certificate, issued.key)
    return context, ca.path


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
def test_tls_to_the_relay_with_its_certificate_checked(relay_tls: tuple[ssl.SSLContext, Path],
                                                       implicit: bool) -> None:  # fmt: skip
    context, ca_file = relay_tls
    with SmtpRelay(tls=context, implicit=implicit) as smtp:
        settings = {"host": "localhost", "tls": implicit, "starttls": "required"}
        # A relay whose certificate the system does not trust is refused (transient: the bound
        # on attempts ends it), and nothing is sent in clear.
        with pytest.raises(relay.RelayError, match="CERTIFICATE_VERIFY_FAILED") as failure:
            relay.send(_relay(smtp.port, **settings), _mail(), "chat@corp.example", "li@corp.ex")
        assert not failure.value.permanent
        assert smtp.mails == []
        relay.send(_relay(smtp.port, ca_file=str(ca_file), **settings), _mail(), "chat@corp.example",
                   "li@corp.ex")  # fmt: skip
        (mail,) = smtp.mails
    assert mail.message["Message-ID"] == "<digest.0123abcd@chat.example>"


def test_a_refused_recipient_is_permanent() -> None:
    """RFC 5321 §4.2.1: a 5yz reply is permanent."""
    with SmtpRelay() as smtp:
        smtp.refused.add("gone@corp.example")
        with pytest.raises(relay.RelayError, match="550") as failure:
            relay.send(_relay(smtp.port), _mail(), "chat@corp.example", "gone@corp.example")
        assert failure.value.permanent
        assert smtp.mails == []
