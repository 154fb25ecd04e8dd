"""Sending through the SMTP relay, in a thread, and the retry schedule.

`send` is blocking (smtplib) and runs in a thread of its own (`trio.to_thread`): the sender
task waits for it, message delivery never does. It raises `RelayError`, whose `permanent` says
whether a later attempt could succeed (RFC 5321 §4.2.1: a 5yz reply is permanent, 4yz and a
relay that cannot be reached are transient).
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

STARTTLS_MODES = ("required", "optional", "off")


@dataclass(frozen=True, slots=True)
class Relay:
    host: str
    port: int
    starttls: str  #: one of `STARTTLS_MODES`
    tls: bool  #: implicit TLS (SMTPS, RFC 8314)
    username: str
    password: str
    password_file: str
    timeout: float
    ca_file: str  #: "" : the system's trusted certificates
    verify: bool  #: check the relay's certificate and name (off: a test relay only)


class RelayError(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def retry_delay(failures: int, *, base: float, cap: float) -> float:
    """Seconds before the next attempt after `failures` failed ones: `base`, doubled after each
    failure, never more than `cap`."""
    return float(min(cap, base * 2 ** max(0, failures - 1)))


def _context(relay: Relay) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=relay.ca_file or None)
    if not relay.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _password(relay: Relay) -> str:
    if relay.password_file:
        # Read at each send: a rotated secret needs no reload.
        return Path(relay.password_file).read_text(encoding="utf-8").strip()
    return relay.password


def send(relay: Relay, message: EmailMessage, sender: str, recipient: str) -> None:
    """Deliver `message` to `recipient` through the relay (blocking).

    Raises:
        RelayError: the relay could not be reached or refused the mail.
    """
    try:
        if relay.tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(relay.host, relay.port, timeout=relay.timeout,
                                                    context=_context(relay))  # fmt: skip
        else:
            client = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout)
        with client:
            client.ehlo()
            if not relay.tls and relay.starttls != "off":
                if client.has_extn("starttls"):
                    client.starttls(context=_context(relay))
                    client.ehlo()
                elif relay.starttls == "required":
                    # Transient: the relay may be misconfigured for a while; the bound on
                    # attempts ends it. The credentials and the mail never go in clear.
                    raise RelayError("the relay does not offer STARTTLS (starttls = \"required\")",
                                     permanent=False)  # fmt: skip
            if relay.username:
                client.login(relay.username, _password(relay))
            client.send_message(message, from_addr=sender, to_addrs=[recipient])
    except RelayError:
        raise
    except smtplib.SMTPRecipientsRefused as exc:
        permanent = all(code >= 500 for code, _ in exc.recipients.values())
        raise RelayError(f"recipient refused: {exc.recipients}", permanent=permanent) from exc
    except smtplib.SMTPResponseException as exc:  # sender refused, data refused, auth failed...
        reply = exc.smtp_error
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        raise RelayError(f"{exc.smtp_code} {text}", permanent=exc.smtp_code >= 500) from exc
    except (OSError, smtplib.SMTPException) as exc:  # refused, unreachable, timed out, TLS failed
        raise RelayError(f"{type(exc).__name__}: {exc}", permanent=False) from exc
