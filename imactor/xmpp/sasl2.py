"""XEP-0388 Extensible SASL Profile (SASL2) and XEP-0386 Bind 2, sans-IO: what an <authenticate/>
asks for, and the elements the server answers with.

`parse_authenticate` reads a client's <authenticate/> into an `Authenticate`: the mechanism and
its initial response, the <user-agent/>, and the inline requests the server advertised in its
<inline/> feature (Bind 2's <bind/> with its own inline features, XEP-0198's <resume/>,
XEP-0484's <request-token/> and <fast/>). Anything else inside is refused before the mechanism
runs, with a <failure/> the client can read (`Sasl2Error`): the exchange counts as a failed one
and the stream stays as it was (XEP-0388 §2.6.2).

The stream (`imactor.xmpp.stream`) drives the mechanism exactly as for RFC 6120 SASL; the shell
(`imactor.c2s.sasl2`) acts on the inline requests once authenticated and writes <success/>.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from imactor.xmpp.fast import FastError, parse_count
from imactor.xmpp.jid import InvalidJID, prep_resource
from imactor.xmpp.namespaces import (
    NS_BIND2,
    NS_CARBONS,
    NS_CSI,
    NS_FAST,
    NS_SASL,
    NS_SASL2,
    NS_SM,
    qname,
)  # fmt: skip
from imactor.xmpp.stanza import default_ns

AUTHENTICATE = qname(NS_SASL2, "authenticate")
RESPONSE = qname(NS_SASL2, "response")
ABORT = qname(NS_SASL2, "abort")
_INITIAL_RESPONSE = qname(NS_SASL2, "initial-response")
_USER_AGENT = qname(NS_SASL2, "user-agent")
_SUPPORTED = qname(NS_SASL2, "supported")  # informational only (§2.3)
_BIND = qname(NS_BIND2, "bind")
_TAG = qname(NS_BIND2, "tag")
_RESUME = qname(NS_SM, "resume")
_SM_ENABLE = qname(NS_SM, "enable")
_CARBONS_ENABLE = qname(NS_CARBONS, "enable")
_CSI_ACTIVE = qname(NS_CSI, "active")
_CSI_INACTIVE = qname(NS_CSI, "inactive")
_REQUEST_TOKEN = qname(NS_FAST, "request-token")
_FAST = qname(NS_FAST, "fast")
#: Longest <user-agent id/> kept: it keys a client's FAST tokens, so it is bounded.
MAX_USER_AGENT_ID = 128
#: Longest Bind 2 <tag/>: the server's part follows it, within a resource's 1023 bytes.
MAX_TAG = 64
#: Inline features Bind 2 can enable, by the disco feature each is advertised under.
BIND2_FEATURES = (NS_CARBONS, NS_CSI, NS_SM)
_WHITESPACE = re.compile(r"\s+")


class Sasl2Error(Exception):
    """A request the server refuses with an XEP-0388 <failure/>: an RFC 6120 §6.5 condition and text."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition, text)
        self.condition = condition
        self.text = text


@dataclass(frozen=True, slots=True)
class UserAgent:
    """<user-agent/>: `id` identifies one installation of a client (its FAST tokens' key)."""

    id: str | None
    software: str = ""
    device: str = ""


@dataclass(frozen=True, slots=True)
class BindRequest:
    """Bind 2's <bind/>: the client's tag and the features to enable in the new session."""

    tag: str | None
    carbons: bool = False
    #: XEP-0352: the state the session starts in (None: the default, active).
    csi: etree._Element | None = None
    #: XEP-0198 <enable/>, answered inside <bound/>.
    sm_enable: etree._Element | None = None


@dataclass(frozen=True, slots=True)
class FastUse:
    """XEP-0484 <fast/>: the client authenticates with a token."""

    count: int | None
    invalidate: bool


@dataclass(frozen=True, slots=True)
class Authenticate:
    """One <authenticate/>, checked against what the server offered."""

    mechanism: str
    #: None: no <initial-response/> (the mechanism asks with an empty challenge).
    initial_response: bytes | None
    user_agent: UserAgent | None = None
    bind: BindRequest | None = None
    #: XEP-0198 <resume/>, tried before Bind 2 (XEP-0386 §3.2).
    resume: etree._Element | None = None
    #: XEP-0484 <request-token mechanism/>: the HT mechanism a new token is for.
    request_token: str | None = None
    fast: FastUse | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    """What the server advertised in <authentication/><inline/> on this stream."""

    bind2: bool
    sm: bool
    fast_mechanisms: tuple[str, ...]
    #: Bind 2's inline features (`BIND2_FEATURES` that the server's modules provide).
    bind2_features: tuple[str, ...] = BIND2_FEATURES


def parse_authenticate(element: etree._Element, offer: Offer) -> Authenticate:
    """Read an <authenticate/> (XEP-0388 §2.3).

    Raises:
        Sasl2Error: malformed-request for an element or inline request the server did not offer
            or cannot read; incorrect-encoding for an initial response that is not base64;
            invalid-mechanism for a token requested for a mechanism not offered.
    """
    mechanism = element.get("mechanism", "")
    if not mechanism:
        raise Sasl2Error("invalid-mechanism", "the mechanism attribute is required")
    if element.get("upgrade") is not None:
        # §2.3: an upgrade not announced fails; this server announces no <upgrade/> tasks.
        raise Sasl2Error("invalid-mechanism", "no upgrade task is offered")
    initial: bytes | None = None
    user_agent: UserAgent | None = None
    bind: BindRequest | None = None
    resume: etree._Element | None = None
    request_token: str | None = None
    fast: FastUse | None = None
    seen: set[str] = set()
    for child in element:
        tag = child.tag
        if tag in seen:
            raise Sasl2Error("malformed-request", f"more than one {tag}")
        seen.add(tag)
        if tag == _INITIAL_RESPONSE:
            initial = decode(child.text)
        elif tag == _USER_AGENT:
            user_agent = _user_agent(child)
        elif tag == _SUPPORTED:
            continue
        elif tag == _BIND and offer.bind2:
            bind = _bind(child, offer)
        elif tag == _RESUME and offer.sm:
            resume = child
        elif tag == _REQUEST_TOKEN and offer.fast_mechanisms:
            request_token = child.get("mechanism", "")
            if request_token not in offer.fast_mechanisms:
                raise Sasl2Error("invalid-mechanism", f"no FAST mechanism {request_token!r} is offered")
        elif tag == _FAST and offer.fast_mechanisms:
            try:
                fast = FastUse(parse_count(child.get("count")), child.get("invalidate") in ("true", "1"))
            except FastError as exc:
                raise Sasl2Error(exc.condition, exc.text) from None
        else:
            raise Sasl2Error("malformed-request", f"unsupported inline request {tag}")
    is_fast = mechanism in offer.fast_mechanisms
    if fast is not None and not is_fast:
        raise Sasl2Error("malformed-request", "<fast/> goes with a FAST mechanism")
    if (is_fast or request_token is not None) and (user_agent is None or user_agent.id is None):
        # XEP-0484 §5.1: tokens are per client, and the client is its <user-agent id/>.
        raise Sasl2Error("malformed-request", "FAST needs a <user-agent id=''/>")
    return Authenticate(mechanism, initial, user_agent, bind, resume, request_token, fast)


def decode(text: str | None) -> bytes:
    """SASL2 data: base64 without line breaks (whitespace is tolerated); empty is empty (§2.2).

    Raises:
        Sasl2Error: incorrect-encoding.
    """
    compact = _WHITESPACE.sub("", text or "")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise Sasl2Error("incorrect-encoding", "not base64") from None


def _user_agent(element: etree._Element) -> UserAgent:
    agent_id = element.get("id")
    if agent_id is not None and not 0 < len(agent_id) <= MAX_USER_AGENT_ID:
        raise Sasl2Error(
            "malformed-request", f"the user-agent id must be 1 to {MAX_USER_AGENT_ID} characters"
        )
    return UserAgent(
        agent_id,
        (element.findtext(qname(NS_SASL2, "software")) or "")[:200],
        (element.findtext(qname(NS_SASL2, "device")) or "")[:200],
    )


def _bind(element: etree._Element, offer: Offer) -> BindRequest:
    tag: str | None = None
    carbons = False
    csi: etree._Element | None = None
    sm_enable: etree._Element | None = None
    for child in element:
        name = child.tag
        if name == _TAG:
            tag = _bind_tag(child.text)
        elif name == _CARBONS_ENABLE and NS_CARBONS in offer.bind2_features:
            carbons = True
        elif name in (_CSI_ACTIVE, _CSI_INACTIVE) and NS_CSI in offer.bind2_features:
            csi = child
        elif name == _SM_ENABLE and NS_SM in offer.bind2_features:
            sm_enable = child
        else:
            # XEP-0386 §3.1: a client asks only for the inline features listed in the offer.
            raise Sasl2Error("malformed-request", f"unsupported Bind 2 inline feature {name}")
    return BindRequest(tag, carbons, csi, sm_enable)


def _bind_tag(text: str | None) -> str | None:
    if not text or not text.strip():
        return None
    try:
        tag = prep_resource(text.strip())
    except InvalidJID:
        raise Sasl2Error("malformed-request", "the Bind 2 tag is not a valid resource") from None
    if len(tag.encode()) > MAX_TAG or "/" in tag:
        raise Sasl2Error(
            "malformed-request", f"the Bind 2 tag must be a short name without '/' (at most {MAX_TAG} bytes)"
        )
    return tag


def resource(tag: str | None, unique: str) -> str:
    """XEP-0386 §3.2.1: the client's tag, '/', then the server's part (alone without a tag)."""
    return unique if tag is None else f"{tag}/{unique}"


# ---- what the server writes ----------------------------------------------------------------------


def feature(mechanisms: Sequence[str], inline: Sequence[bytes]) -> etree._Element:
    """<authentication/> for <stream:features/> (§2.1), with the inline features offered."""
    authentication = etree.Element(qname(NS_SASL2, "authentication"), nsmap=default_ns(NS_SASL2))
    for name in mechanisms:
        etree.SubElement(authentication, qname(NS_SASL2, "mechanism")).text = name
    if inline:
        holder = etree.SubElement(authentication, qname(NS_SASL2, "inline"))
        for data in inline:
            holder.append(etree.fromstring(data))
    return authentication


def inline_features(offer: Offer) -> tuple[bytes, ...]:
    """The children of <inline/>: Bind 2 (with its own inline features), XEP-0198 and FAST."""
    out: list[bytes] = []
    sm, fast_mechanisms = offer.sm, offer.fast_mechanisms
    if offer.bind2:
        bind = etree.Element(qname(NS_BIND2, "bind"), nsmap=default_ns(NS_BIND2))
        features = etree.SubElement(bind, qname(NS_BIND2, "inline"))
        for var in offer.bind2_features:
            etree.SubElement(features, qname(NS_BIND2, "feature")).set("var", var)
        out.append(etree.tostring(bind))
    if sm:
        out.append(f"<sm xmlns='{NS_SM}'/>".encode())
    if fast_mechanisms:
        fast = etree.Element(qname(NS_FAST, "fast"), nsmap=default_ns(NS_FAST))
        for name in fast_mechanisms:
            etree.SubElement(fast, qname(NS_FAST, "mechanism")).text = name
        out.append(etree.tostring(fast))
    return tuple(out)


def challenge(data: bytes) -> bytes:
    element = etree.Element(qname(NS_SASL2, "challenge"), nsmap=default_ns(NS_SASL2))
    element.text = base64.b64encode(data).decode("ascii")
    return etree.tostring(element)


def success(
    authorization_identifier: str, additional_data: bytes | None, extra: Sequence[bytes] = ()
) -> bytes:
    """<success/> (§2.6.1): the additional data, the identity (a full JID once bound), extensions."""
    element = etree.Element(qname(NS_SASL2, "success"), nsmap=default_ns(NS_SASL2))
    if additional_data is not None:
        etree.SubElement(element, qname(NS_SASL2, "additional-data")).text = base64.b64encode(
            additional_data
        ).decode("ascii")
    etree.SubElement(element, qname(NS_SASL2, "authorization-identifier")).text = authorization_identifier
    for data in extra:
        element.append(etree.fromstring(data))
    return etree.tostring(element)


def failure(condition: str, text: str = "") -> bytes:
    """<failure/> (§2.6.2): one RFC 6120 §6.5 condition, in the RFC's namespace, and a text."""
    element = etree.Element(qname(NS_SASL2, "failure"), nsmap=default_ns(NS_SASL2))
    etree.SubElement(element, qname(NS_SASL, condition), nsmap=default_ns(NS_SASL))
    if text:
        etree.SubElement(element, qname(NS_SASL2, "text")).text = text
    return etree.tostring(element)


def bound(children: Sequence[bytes]) -> bytes:
    """Bind 2's <bound/>, with the answers of the inline features that have one (XEP-0198)."""
    element = etree.Element(qname(NS_BIND2, "bound"), nsmap=default_ns(NS_BIND2))
    for data in children:
        element.append(etree.fromstring(data))
    return etree.tostring(element)


def token(value: str, expiry: str) -> bytes:
    """XEP-0484 <token/>; `expiry` in the XEP-0082 DateTime profile."""
    element = etree.Element(qname(NS_FAST, "token"), nsmap=default_ns(NS_FAST))
    element.set("expiry", expiry)
    element.set("token", value)
    return etree.tostring(element)
