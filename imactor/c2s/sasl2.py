"""The session's side of a XEP-0388 SASL2 login: FAST tokens, then resumption, then Bind 2.

The stream (`imactor.xmpp.stream`) runs the SASL mechanism itself, as for RFC 6120 SASL, with
the same credential look-up, login throttle and retry limit (`SessionActor._on_event`). Two
events come here:

- `ev.TokenNeeded` (`check_token`): an HT-* login (XEP-0484). The client's stored tokens are
  read (`imactor.storage.fast_tokens`), checked (`imactor.xmpp.fast.check`), and the use is
  recorded before the stream is told: a replayed `count` loses in the database, whichever worker
  it came to.
- `ev.Sasl2Authenticated` (`complete`): authenticated; the inline requests are acted on in the
  order the XEPs give, and the <success/> carries their answers:
  1. FAST (XEP-0484 §4.3-§4.6): a token is invalidated, issued on request, or rotated when the
     one used is past half its life (the older one stays valid until the new one is used);
  2. XEP-0198 <resume/> (XEP-0386 §3.2): on success the detached session takes this connection
     over and answers <success/> with <resumed/> itself (`Handover.answer`), and Bind 2 is
     ignored; on failure <failed/> goes in the <success/> and Bind 2 goes on;
  3. Bind 2 (XEP-0386): the resource is the client's tag, '/', and a part the server derives
     from the account and the <user-agent id/> (stable per client, so a client that reconnects
     replaces its old session, as §3.2 wants, without showing the id), then carbons, CSI and
     XEP-0198 <enable/> (its <enabled/> goes in <bound/>).
  The session is then bound as with RFC 6120 binding: initial presence, roster, offline
  messages and the archive behave the same.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from imactor.xmpp import events as ev
from imactor.xmpp import fast, sasl2
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_CARBONS, NS_CSI, NS_SM
from imactor.xmpp.sasl import SaslFailure, SaslSuccess

if TYPE_CHECKING:
    from lxml import etree

    from imactor.c2s.resumption import ResumedAnswer
    from imactor.server.module_host import ModuleHost
    from imactor.server.services import Services
    from imactor.xmpp.sm import StreamManagement
    from imactor.xmpp.stream import ServerStream

#: The module state key of XEP-0280 (`imactor.modules.carbons.ENABLED`): Bind 2 sets it at bind.
CARBONS_ENABLED = "carbons.enabled"


class LoginSession(Protocol):
    """What of `imactor.c2s.session.SessionActor` a login uses (the session imports this module)."""

    services: Services
    remote: str
    fast_login: FastLogin | None
    sm: StreamManagement

    @property
    def stream(self) -> ServerStream: ...

    async def resume(self, element: etree._Element, answer: ResumedAnswer | None = None) -> bytes | None: ...

    async def bind_resource(
        self, resource: str | None, state: tuple[tuple[str, str], ...] = ()
    ) -> JID | StanzaError: ...

    def inline_nonza(self, element: etree._Element) -> None: ...

    def account_key(self, localpart: str) -> str: ...


@dataclass(frozen=True, slots=True)
class FastLogin:
    """The token a connection authenticated with (kept until its login completes)."""

    client: str
    token: fast.StoredToken


async def check_token(session: LoginSession, event: ev.TokenNeeded) -> None:
    """Decide an HT login and tell the stream (`ServerStream.token_checked` / `refuse_auth`)."""
    services, stream = session.services, session.stream
    # The account of the host the stream named (`imactor.hosts`): its tokens, its throttle.
    username, request = session.account_key(event.username), event.request
    if services.login_throttle.is_blocked(username, session.remote):
        stream.refuse_auth("temporary-auth-failure", "too many failed attempts; wait")
        return
    agent = request.user_agent
    assert agent is not None  # parse_authenticate requires one for FAST, with an id
    assert agent.id is not None
    client = agent.id
    store = services.storage.fast_tokens
    count = None if request.fast is None else request.fast.count
    tokens, disabled = await store.login(username, client)
    try:
        accepted = fast.check(
            tokens, mechanism=request.mechanism, proof=event.proof, cb_data=event.cb_data, count=count,
            now=time.time(),
        )  # fmt: skip
    except fast.FastError as exc:
        stream.token_checked(SaslFailure(exc.condition, exc.text))
        return
    if disabled:
        stream.token_checked(SaslFailure("account-disabled", "this account is disabled"))
        return
    if not await store.use(username, client, accepted.slot, count):
        # Another login took this count (or the token) first: a replay.
        stream.token_checked(SaslFailure("not-authorized", "replayed: count is not above the last one used"))
        return
    session.fast_login = FastLogin(client, accepted.token)
    stream.token_checked(SaslSuccess(event.username, None, accepted.responder))


async def complete(session: LoginSession, event: ev.Sasl2Authenticated) -> None:
    """Act on the inline requests of a successful SASL2 login and answer it (module docstring)."""
    stream, request = session.stream, event.request
    extra: list[bytes] = []
    token = await _tokens(session, session.account_key(event.username), request)
    if token is not None:
        extra.append(token)
    session.fast_login = None
    if request.resume is not None:

        def answer(full_jid: JID, resumed: bytes) -> None:
            stream.sasl2_succeeded(full_jid, event.additional_data, (resumed, *extra), bound=True)

        refusal = await session.resume(request.resume, answer)
        if refusal is None:
            return  # the resumed session answered, and owns this connection now
        extra.insert(0, refusal)
    bare = JID.make(event.username, stream.domain)  # on the host the stream named
    if request.bind is None:
        stream.sasl2_succeeded(bare, event.additional_data, tuple(extra))
        return
    bound = await _bind(session, request.bind, request.user_agent)
    if isinstance(bound, StanzaError):
        # Authenticated but not bound: the client sees the bare JID and may bind the RFC 6120 way.
        stream.sasl2_succeeded(bare, event.additional_data, tuple(extra))
        return
    full_jid, answers = bound
    stream.sasl2_succeeded(full_jid, event.additional_data, (sasl2.bound(answers), *extra), bound=True)


async def _bind(
    session: LoginSession, bind: sasl2.BindRequest, user_agent: sasl2.UserAgent | None
) -> tuple[JID, list[bytes]] | StanzaError:
    """XEP-0386 §3.2: bind, then enable the inline features asked for; the answers for <bound/>."""
    services = session.services
    username = session.account_key(session.stream.username or "")
    if user_agent is not None and user_agent.id is not None:
        seed = f"bind2\x00{username}\x00{user_agent.id}".encode()
        unique = hmac.new(services.fake_salt_secret, seed, hashlib.sha256).hexdigest()[:12]
    else:
        unique = secrets.token_hex(6)
    state = ((CARBONS_ENABLED, "1"),) if bind.carbons else ()
    full_jid = await session.bind_resource(sasl2.resource(bind.tag, unique), state)
    if isinstance(full_jid, StanzaError):
        return full_jid
    answers: list[bytes] = []
    if bind.csi is not None:
        session.inline_nonza(bind.csi)
    if bind.sm_enable is not None:
        reply = session.sm.handle(
            bind.sm_enable, bound=True, new_id=services.sessions.new_resumption_id,
            max_resume=int(services.config.limits.resume_timeout),
        )  # fmt: skip
        if reply is not None:
            if reply.enabled:
                session.stream.track_sent = True
                if session.sm.id is not None:
                    services.sessions.resumable[session.sm.id] = session
            answers.append(reply.data)
    return full_jid, answers


async def _tokens(session: LoginSession, username: str, request: sasl2.Authenticate) -> bytes | None:
    """XEP-0484 after authentication: invalidate, issue or rotate; the <token/> to send, if any."""
    lifetime = session.services.config.auth.fast_token_lifetime
    store = session.services.storage.fast_tokens
    used = session.fast_login
    now = time.time()
    mechanism = request.request_token
    if used is not None:
        if request.fast is not None and request.fast.invalidate:
            # §4.6: gone at once; a new token only if one is asked for in the same request.
            await store.invalidate(username, used.client, fast.CURRENT)
        elif mechanism is None and fast.due_for_rotation(used.token, lifetime=lifetime, now=now):
            mechanism = used.token.mechanism
    if mechanism is None or lifetime <= 0:
        return None
    agent = request.user_agent
    assert agent is not None  # parse_authenticate requires one for FAST, with an id
    assert agent.id is not None
    value, key = fast.new_token(secrets.token_bytes(fast.TOKEN_BYTES))
    expires_at = now + lifetime
    await store.issue(username, agent.id, key, mechanism, expires_at=expires_at, now=now)
    expiry = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return sasl2.token(value, expiry)


def bind2_features(modules: ModuleHost) -> tuple[str, ...]:
    """Bind 2's inline features this server provides: XEP-0198 always, carbons and CSI with their
    modules."""
    loaded = set(modules.loaded)
    return tuple(
        var for var in sasl2.BIND2_FEATURES
        if var == NS_SM or (var == NS_CARBONS and "carbons" in loaded) or (var == NS_CSI and "csi" in loaded)
    )  # fmt: skip
