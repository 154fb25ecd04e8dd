"""XML namespaces used by the server, in one place."""

from __future__ import annotations

NS_CLIENT = "jabber:client"
NS_SERVER = "jabber:server"
NS_DIALBACK = "jabber:server:dialback"  # XEP-0220
NS_DIALBACK_FEATURE = "urn:xmpp:features:dialback"  # XEP-0220 §2.4 stream feature
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_ROSTER = "jabber:iq:roster"
NS_ROSTER_VER = "urn:xmpp:features:rosterver"
NS_PRE_APPROVAL = "urn:xmpp:features:pre-approval"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_PING = "urn:xmpp:ping"
NS_VERSION = "jabber:iq:version"
NS_TIME = "urn:xmpp:time"
NS_LAST = "jabber:iq:last"
NS_VCARD = "vcard-temp"
NS_PRIVATE = "jabber:iq:private"
NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
NS_REGISTER = "jabber:iq:register"
NS_REGISTER_FEATURE = "http://jabber.org/features/iq-register"
NS_DATA_FORMS = "jabber:x:data"
NS_COMMANDS = "http://jabber.org/protocol/commands"  # XEP-0050
NS_ADMIN = "http://jabber.org/protocol/admin"  # XEP-0133: its commands' nodes and FORM_TYPE
#: imactor's own ad-hoc commands and form type for scheduled reminders (docs/reminders.md)
NS_REMINDERS = "urn:imactor:reminders"
NS_DELAY = "urn:xmpp:delay"
NS_OFFLINE = "msgoffline"
NS_SID = "urn:xmpp:sid:0"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"
NS_SASL2 = "urn:xmpp:sasl:2"  # XEP-0388
NS_BIND2 = "urn:xmpp:bind:0"  # XEP-0386
NS_FAST = "urn:xmpp:fast:0"  # XEP-0484
NS_STANZA_LIMITS = "urn:xmpp:stanza-limits:0"
NS_SM = "urn:xmpp:sm:3"
NS_XML = "http://www.w3.org/XML/1998/namespace"
# XEP-0045 multi-user chat (and its forms: room configuration, room info, voice requests)
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_MUC_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
NS_MUC_ROOMINFO = "http://jabber.org/protocol/muc#roominfo"
NS_MUC_REQUEST = "http://jabber.org/protocol/muc#request"
# XEP-0060 / XEP-0163 publish-subscribe and PEP; XEP-0084 avatars; XEP-0402/0048 bookmarks
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_AVATAR_DATA = "urn:xmpp:avatar:data"
NS_AVATAR_METADATA = "urn:xmpp:avatar:metadata"
NS_VCARD_UPDATE = "vcard-temp:x:update"
NS_NICK = "http://jabber.org/protocol/nick"  # XEP-0172
NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_BOOKMARKS_LEGACY = "storage:bookmarks"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"  # RFC 7395 (XMPP over WebSocket)
NS_HTTPBIND = "http://jabber.org/protocol/httpbind"  # XEP-0124 (BOSH)
NS_XBOSH = "urn:xmpp:xbosh"  # XEP-0206 (XMPP over BOSH)

# XEP-0280 carbons, XEP-0297 forwarding, XEP-0334 hints, XEP-0352 CSI, XEP-0357 push
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_HINTS = "urn:xmpp:hints"
NS_CSI = "urn:xmpp:csi:0"
NS_PUSH = "urn:xmpp:push:0"
NS_PUSH_SUMMARY = "urn:xmpp:push:summary"


def qname(namespace: str, tag: str) -> str:
    """Clark notation `{namespace}tag`, the form lxml uses for element tags."""
    return f"{{{namespace}}}{tag}"
