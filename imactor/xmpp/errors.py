"""Protocol errors of the sans-IO core (h11 style: local vs remote, each with a hint).

- `RemoteProtocolError`: the peer broke the protocol. It carries the RFC 6120 stream error
  condition (`stream_condition`) that the shell sends before closing the stream.
- `LocalProtocolError`: we were asked to do something the state machine does not allow: a bug here.
- `StanzaError`: a handler refuses one stanza; the core turns it into an error reply (RFC 6120 §8.3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lxml import etree

#: RFC 6120 §4.9.3 stream error conditions.
STREAM_CONDITIONS = frozenset(
    {
        "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
        "host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
        "invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed", "policy-violation",
        "remote-connection-failed", "reset", "resource-constraint", "restricted-xml", "see-other-host",
        "system-shutdown", "undefined-condition", "unsupported-encoding", "unsupported-feature",
        "unsupported-stanza-type", "unsupported-version",
    }
)  # fmt: skip

#: RFC 6120 §8.3.3 stanza error conditions with their default error type (§8.3.2).
STANZA_CONDITIONS: dict[str, str] = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


class ProtocolError(Exception):
    """Base of the core's protocol errors."""


class LocalProtocolError(ProtocolError):
    """Our own code asked the state machine for something it cannot do."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; `stream_condition` is the stream error to send."""

    def __init__(self, stream_condition: str, text: str = "", *, content: str = "") -> None:
        if stream_condition not in STREAM_CONDITIONS:
            raise ValueError(f"unknown stream error condition {stream_condition!r}")
        super().__init__(f"{stream_condition}: {text}" if text else stream_condition)
        self.stream_condition = stream_condition
        self.text = text
        #: The condition element's character data (see-other-host's host and port, §4.9.3.19).
        self.content = content


class StanzaError(Exception):
    """A stanza-level error: `condition` from RFC 6120 §8.3.3, `type` defaults per §8.3.2."""

    def __init__(
        self,
        condition: str,
        text: str = "",
        *,
        error_type: str | None = None,
        app_condition: tuple[str, str] | None = None,
        app_element: etree._Element | None = None,
    ) -> None:
        if condition not in STANZA_CONDITIONS:
            raise ValueError(f"unknown stanza error condition {condition!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.error_type = error_type or STANZA_CONDITIONS[condition]
        #: (namespace, tag) of an application-specific condition element, e.g. blocking's <blocked/>.
        self.app_condition = app_condition
        #: An application-specific element with content (an lxml element, copied into the
        #: <error/>), e.g. XEP-0363's <file-too-large><max-file-size>N</max-file-size></file-too-large>.
        self.app_element = app_element
