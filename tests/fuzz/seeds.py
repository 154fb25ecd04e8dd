"""Write the seed corpora of tests/fuzz/corpus/ (committed; run again only to refresh them).

    python -m tests.fuzz.seeds            # the derived seeds below
    python -m tests.fuzz.capture          # the bytes of real client sessions (slixmpp, BOSH)

The derived seeds are the inputs no capture can give as they are: a whole session against the
fuzz targets' fixed SCRAM nonce (so the fuzzer starts past authentication), SCRAM exchanges, the
frames workers exchange (built with the real encoders, `imactor.cluster.wire` and
`imactor.mesh.codec.pack`), and JIDs of the shapes clients send.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from imactor.cluster import wire
from imactor.mesh.codec import pack
from tests.fuzz import targets

CORPUS = Path(__file__).resolve().parent / "corpus"
CLIENT_NONCE = "fyko+d2lbbFgONRv9qkxdawL"
HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_SM = "urn:xmpp:sm:3"


def write(target: str, name: str, data: bytes) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


def scram_exchange(hash_name: str, gs2: str = "n,,") -> tuple[bytes, bytes]:
    """A client-first and client-final message for the fuzz account (fixed server nonce)."""
    first = f"{gs2}n={targets.USER},r={CLIENT_NONCE}".encode()
    salt = base64.b64encode(targets.SALT).decode()
    server_first = f"r={CLIENT_NONCE}{targets.SERVER_NONCE},s={salt},i={targets.ITERATIONS}".encode()
    return first, targets.scram_client_final(first, server_first, hash_name)


def stream_seeds() -> None:
    first, final = scram_exchange("SHA-256")
    b64 = base64.b64encode
    session = (
        HEADER
        + f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{b64(first).decode()}</auth>"
        + f"<response xmlns='{NS_SASL}'>{b64(final).decode()}</response>\0"
        + HEADER
        + "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        + "<resource>fuzz</resource></bind></iq>"
        + f"<enable xmlns='{NS_SM}' resume='true' max='60'/>"
        + "<presence/><iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>"
        + "<message to='bob@localhost' type='chat' id='m1'><body>hello &amp; bye</body></message>"
        + f"<r xmlns='{NS_SM}'/><a xmlns='{NS_SM}' h='1'/>"
        + "</stream:stream>"
    ).encode()
    # The first byte is the read size minus one (tests.fuzz.targets._chunks): 255 = whole reads.
    write("stream", "scram-sha-256-session", b"\xff" + session)
    write("stream", "scram-session-in-small-reads", b"\x07" + session)
    plain = b64(f"\0{targets.USER}\0{targets.PASSWORD}".encode()).decode()
    write("stream", "plain-then-starttls-refused", b"\xff" + (
        HEADER + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\0" + HEADER
        + f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain}</auth>\0" + HEADER
        + f"<resume xmlns='{NS_SM}' previd='x' h='0'/>"
    ).encode())  # fmt: skip
    framed = [
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>",
        f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain}</auth>",
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>",
        "<iq type='set' id='b1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        "<message xmlns='jabber:client' to='bob@localhost'><body>hi</body></message>",
        "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
    ]
    # An even first byte below 64 selects RFC 7395 framing; frames are separated by NUL.
    write("stream", "websocket-framed-session", b"\x02" + "\0".join(framed).encode())


def sasl_seeds() -> None:
    for index, mechanism in enumerate(targets.MECHANISMS):
        hash_name = "SHA-256" if "256" in mechanism else "SHA-1"
        if mechanism.startswith("SCRAM"):
            gs2 = "p=tls-server-end-point,," if mechanism.endswith("PLUS") else "y,,"
            first, final = scram_exchange(hash_name, gs2)
            write("sasl", f"{mechanism.lower()}-login", bytes([index]) + first + b"\0\0\0" + final)
        elif mechanism == "PLAIN":
            write("sasl", "plain-login", bytes([index]) + f"\0{targets.USER}\0{targets.PASSWORD}".encode())
    first, _ = scram_exchange("SHA-1", "n,a=alice@localhost,")
    write("sasl", "scram-authzid", bytes([0]) + first + b"\0\0\0c=biws,r=x,p=AAAA")


def jid_seeds() -> None:
    for name, text in {
        "full": "alice@localhost/phone",
        "bare": "alice@localhost",
        "domain": "conference.localhost",
        "room-nick": "lobby@conference.localhost/Ann Other",
        "ipv4": "bob@127.0.0.1/x",
        "ipv6": "[::1]",
        "unicode": "ñandú@εχαμπλε.example/Ω ⚠",
        "resource-with-slash": "a@b/c/d@e",
        "trailing-dot": "juliet@example.com./balcony",
    }.items():
        write("jid", name, text.encode())


def mesh_seeds() -> None:
    stanza = [b"message", b"chat", b"alice@localhost/phone", b"bob@localhost", b"1", b"m1",
              b"<message from='alice@localhost/phone' to='bob@localhost' type='chat' id='m1'>"
              b"<body>hi</body></message>"]  # fmt: skip
    presence = [b"presence", b"", b"alice@localhost/phone", b"alice@localhost", b"0", b"", b"<presence/>"]
    session = [b"s42", b"1"]
    bodies: dict[str, list[bytes]] = {
        "Deliver": stanza,
        "Route": [b"c7", b"1", *stanza],
        "Bind": [b"1", b"phone", *session, b"r3"],
        "Rebind": [b"phone", *session, b"1", b"1", *presence, b"csi", b"active"],
        "Fanout": [*stanza, b"bob@localhost/a", b"carol@localhost/b"],
        "TakeOver": [b"1.abc", b"alice", b"12", *session, b"r4"],
        "Undelivered": [*stanza, *stanza],
        "BoshRequest": [b"<body rid='5' sid='1.x' xmlns='http://jabber.org/protocol/httpbind'/>", b"r5"],
    }
    frames = []
    for kind, fields in bodies.items():
        message = wire.ActorMessage("user", "bob", kind, pack(fields))
        frame = wire.encode(wire.Envelope(source=1, epoch=3, message=message))
        frames.append(frame)
        write("mesh", f"frame-{kind.lower()}", frame)
    beats = [
        wire.encode(wire.Envelope(1, 3, wire.Heartbeat(1, 3, 12.5))),
        wire.encode(wire.Envelope(0, 4, wire.MembershipChanged(4, (0, 1, 2)))),
    ]
    write("mesh", "batch", b"\xff\xfe\xfd".join(frames[:3] + beats))
    moved = [b"alice@localhost/phone", b"3", b"5", b"4", b"300", b"1", b"1", *presence,
             b"1", b"<message/>", b"0", b"1", b"csi", b"inactive", b"eve@localhost"]  # fmt: skip
    # A frame whose first byte names a reply kind in the codec-alone part of the target.
    kinds = [*targets.BODY_KINDS, *targets.REPLY_KINDS]
    write("mesh", "reply-movedsession", bytes([kinds.index("MovedSession")]) + pack(moved))
    write(
        "mesh", "reply-bound", bytes([kinds.index("Bound")]) + pack([b"alice@localhost/x", b"eve@localhost"])
    )


def socks5_seeds() -> None:
    key = hashlib.sha1(b"sid" + b"alice@localhost/pc" + b"bob@localhost/phone").hexdigest().encode()
    for name, data in {
        # The first byte picks the size of the reads (its value + 1).
        "connect": b"\xff\x05\x01\x00\x05\x01\x00\x03\x28" + key + b"\x00\x00",
        "connect-bytewise": b"\x00\x05\x02\x02\x00\x05\x01\x00\x03\x28" + key + b"\x00\x00early",
        "ipv4": b"\xff\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50",
        "no-method": b"\x03\x05\x01\x02",
        "socks4": b"\xff\x04\x01\x00\x50\x7f\x00\x00\x01\x00",
    }.items():
        write("socks5", name, data)


def component_seeds() -> None:
    header = (
        "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' "
        "to='gateway.test'>"
    )
    digest = hashlib.sha1(b"fuzz" + targets.COMPONENT_SECRETS["gateway.test"].encode()).hexdigest()
    session = (
        f"{header}<handshake>{digest}</handshake>"
        "<message from='bot@gateway.test' to='alice@localhost' id='m1'><body>hi</body></message>"
        "<presence from='bot@gateway.test/r' to='alice@localhost'/>"
        "<iq type='get' from='gateway.test' to='localhost' id='i1'><ping xmlns='urn:xmpp:ping'/></iq>"
        "<message from='bot@elsewhere.test' to='alice@localhost'/></stream:stream>"
    )
    for name, data in {
        # The first byte picks the size of the reads (its value + 1).
        "session": b"\xff" + session.encode(),
        "session-bytewise": b"\x00" + session.encode(),
        "wrong-secret": b"\x10" + f"{header}<handshake>{'0' * 40}</handshake>".encode(),
        "unknown-domain": b"\xff" + header.replace("gateway.test", "other.test").encode(),
    }.items():
        write("component", name, data)


def s2s_inbound_seeds() -> None:
    header = (
        "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
        "xmlns:db='jabber:server:dialback' from='remote.test' to='localhost' version='1.0'>"
    )
    tls = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    dialback = (
        "<db:result from='remote.test' to='localhost'>good</db:result>"
        "<message from='a@remote.test' to='alice@localhost' id='m1'><body>hi</body></message>"
        "<presence from='a@remote.test/r' to='alice@localhost' type='subscribe'/>"
        "<message from='a@forged.test' to='alice@localhost'/>"
    )
    # NUL separates the peer's writes: its header after TLS waits for <proceed/> (RFC 6120 §5.4.3.3).
    for name, data in {
        "dialback": b"\xff" + f"{header}{tls}\0{header}{dialback}</stream:stream>".encode(),
        "dialback-bytewise": b"\x00" + f"{header}{tls}\0{header}{dialback}".encode(),
        "bad-key": b"\xff" + f"{header}{tls}\0{header}".encode()
        + b"<db:result from='remote.test' to='localhost'>bad</db:result><message to='x@localhost'/>",
        "no-tls": b"\x20" + f"{header}<message from='a@remote.test' to='alice@localhost'/>".encode(),
    }.items():
        write("s2s_inbound", name, data)


def main() -> None:
    stream_seeds()
    sasl_seeds()
    jid_seeds()
    mesh_seeds()
    socks5_seeds()
    component_seeds()
    s2s_inbound_seeds()
    for directory in sorted(CORPUS.iterdir()):
        digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(directory.iterdir()))).hexdigest()
        print(f"{directory.name}: {len(list(directory.iterdir()))} seeds ({digest[:8]})")


if __name__ == "__main__":
    main()
