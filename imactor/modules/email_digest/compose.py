"""The digest mail: who wrote, how many messages, and (only when asked for) what they wrote.

Pure: the caller gives the clock and the names. The mail is plain text in UTF-8 (quoted-printable
where needed, so that a Chinese name survives any relay), with RFC 5322's required From and Date,
To, a Subject that names the count, and a Message-ID made from the digest's id: a digest sent
twice (a sender that died after the relay took it, `imactor.storage.email`) carries the same
Message-ID both times, so that a mail store or client can tell the copy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

#: What one message shows at most, with ``include_text`` (the rest is cut, with "…").
MAX_TEXT = 1000
#: Messages whose text a mail shows at most (the oldest); the counts include every message.
MAX_SHOWN = 50


@dataclass(frozen=True, slots=True)
class Entry:
    sender: str  #: bare JID
    text: str  #: "" when the text is not sent
    stored_at: float  #: Unix time


@dataclass(frozen=True, slots=True)
class DigestMail:
    digest_id: str
    to_address: str
    to_name: str  #: the recipient's display name ("" if unknown)
    account: str  #: the recipient's bare JID
    entries: Sequence[Entry]


def compose(mail: DigestMail, *, from_address: str, names: Mapping[str, str], include_text: bool,
            domain: str, now: float) -> EmailMessage:  # fmt: skip
    """The message to send. `names`: display names of senders' bare JIDs (the directory's)."""
    counts = Counter(entry.sender for entry in mail.entries)
    total = sum(counts.values())
    senders = list(counts)  # first come, first listed
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = Address(display_name=mail.to_name, addr_spec=mail.to_address)
    message["Subject"] = _subject(total, [names.get(s) or s for s in senders])
    message["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    message["Message-ID"] = f"<digest.{mail.digest_id}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to it
    lines = [f"While you were offline, {_count(total)} arrived for {mail.account}:", ""]
    for sender in senders:
        name = names.get(sender)
        who = f"{name} <{sender}>" if name else sender
        lines.append(f"  {who}: {_count(counts[sender])}")
    if include_text:
        lines += ["", "Messages:"]
        for entry in mail.entries[:MAX_SHOWN]:
            stamp = datetime.fromtimestamp(entry.stored_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
            lines += ["", f"[{stamp}] {names.get(entry.sender) or entry.sender}:"]
            lines += [f"  {line}" for line in _cut(entry.text).splitlines() or [""]]
        if len(mail.entries) > MAX_SHOWN:
            lines += ["", f"… and {len(mail.entries) - MAX_SHOWN} more."]
    lines += ["", "Sign in to your chat client to read and answer them.", "",
              "You get this mail because messages waited for you. To stop these mails, turn",
              "email notifications off from your client or ask your administrator.", ""]  # fmt: skip
    message.set_content("\n".join(lines), charset="utf-8")
    return message


def _subject(total: int, senders: list[str]) -> str:
    """Short: the first sender only. A long header is folded, and Python folds one whose first
    word does not fit right after the colon, which some clients show as a leading space."""
    others = len(senders) - 1
    more = f" and {others} other" + ("s" if others > 1 else "") if others else ""
    return f"{_count(total)} from {senders[0]}{more}"


def _count(n: int) -> str:
    return f"{n} new message" if n == 1 else f"{n} new messages"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"
