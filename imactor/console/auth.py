"""Who may use the console, and for how long.

An administrator is a bare JID of ``[server] admins`` whose account exists, is not disabled, and
whose password matches the account's stored SCRAM-SHA-256 verifier (`verify_password`: the same
salted derivation a SASL login checks; no password is kept anywhere, by the console either). A
failed login counts against the address and the account (`LoginThrottle`, ``[limits]
login_failures`` in ``login_failure_window``, the XMPP logins' limits): once over, the login is
refused with 429 until the window has passed, whether the password is right or not.

A login opens a session: 256 random bits in an HttpOnly, SameSite=Strict cookie (Secure over
TLS), and a CSRF token of its own that every form carries and every POST must return (a
mismatch is 403 and changes nothing). Sessions live in the node supervisor's memory: a restart
of the node logs everyone out, which is the safe direction. A session ends at logout or after
``[listen.console] session_timeout`` seconds without a request.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

import trio

from imactor.server.throttles import LoginThrottle
from imactor.storage import Storage
from imactor.xmpp.jid import JID, InvalidJID, prep_password
from imactor.xmpp.scram import DEFAULT_ITERATIONS, ScramCredentials, derive_credentials, verify_password

#: The cookie that carries a session's token (and, before login, the login form's token).
COOKIE = "imactor_console"
LOGIN_COOKIE = "imactor_console_login"
#: Sessions kept at once; beyond it the least recently used ends (a flood of logins by admins).
MAX_SESSIONS = 256
#: The verifier a login checks (every account has one; SHA-256 is the stronger).
HASH_NAME = "SHA-256"


@dataclass
class AdminSession:
    jid: str  #: the administrator's bare JID
    token: str  #: the cookie's value
    csrf: str  #: what every form returns
    last_seen: float  #: trio.current_time() of its last request
    #: A message for the next page shown (after a change: Post/Redirect/Get), and its kind.
    flash: tuple[str, str] | None = field(default=None)


class Sessions:
    """The open sessions, by token; idle ones expire."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._by_token: OrderedDict[str, AdminSession] = OrderedDict()

    def open(self, jid: str) -> AdminSession:
        session = AdminSession(jid, secrets.token_urlsafe(32), secrets.token_urlsafe(32), trio.current_time())
        self._by_token[session.token] = session
        while len(self._by_token) > MAX_SESSIONS:
            self._by_token.popitem(last=False)
        return session

    def get(self, token: str | None) -> AdminSession | None:
        """The live session of `token` (its idle time starts again), or None."""
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        now = trio.current_time()
        if now - session.last_seen > self.timeout:
            del self._by_token[token]
            return None
        session.last_seen = now
        self._by_token.move_to_end(token)
        return session

    def close(self, session: AdminSession) -> None:
        self._by_token.pop(session.token, None)

    def __len__(self) -> int:
        return len(self._by_token)


@functools.cache
def _stand_in() -> ScramCredentials:
    """A verifier no password matches (its salt is fixed, its key random), for a login that
    names no administrator."""
    stand_in = derive_credentials(
        HASH_NAME, secrets.token_urlsafe(32), salt=bytes(16), iterations=DEFAULT_ITERATIONS
    )
    return stand_in


def same_token(given: str | None, expected: str) -> bool:
    """Whether a form's token is the expected one (in constant time)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class LoginRefused(Exception):
    """A login that does not open a session; the message is what the page says (it never
    tells whether the account exists, is an admin, or had the wrong password)."""


async def check_login(
    storage: Storage,
    admins: frozenset[str],
    domain: str,
    jid_text: str,
    password: str,
    throttle: LoginThrottle,
    remote: str,
) -> str:
    """The administrator's bare JID when `jid_text` and `password` log in (module doc).

    Raises:
        LoginRefused: anything else: a malformed JID, not an admin, no such account, a disabled
            account, a wrong password, or too many failures (throttled).
    """
    try:
        jid = JID.parse(jid_text.strip())
    except InvalidJID:
        jid = None
    username = jid.localpart if jid is not None else None
    if throttle.is_blocked(username or "", remote):
        raise LoginRefused("too many failed logins: wait a few minutes")
    is_admin = (
        jid is not None
        and username is not None
        and jid.resourcepart is None
        and jid.domainpart == domain
        and str(jid) in admins
    )
    verifier, disabled = None, False
    if is_admin and username is not None:
        credentials, disabled = await storage.accounts.get_login(username)
        verifier = credentials.get(HASH_NAME) if credentials else None
    try:
        prepared = prep_password(password)
    except (InvalidJID, ValueError):
        prepared = ""
    # Every refusal costs the same derivation, so the time taken does not tell an administrator's
    # JID from another's. PBKDF2 takes milliseconds: off the event loop, which serves the status
    # socket too.
    matches = await trio.to_thread.run_sync(lambda: verify_password(prepared, verifier or _stand_in()))
    if not (matches and verifier is not None and prepared) or disabled:
        throttle.record_failure(username, remote)
        raise LoginRefused("wrong JID or password, or not an administrator of this server")
    return str(jid)
