"""The server-to-server wing: federation with other XMPP servers (RFC 6120 for servers).

`wing.S2SWing` is the worker's side of it: the router hands it every stanza for a domain that
is not ours (`Router.federate`), it keeps one outgoing stream per remote domain
(`outbound.Outgoing`) and serves the streams other servers open to us (`inbound`). The protocol
is the sans-IO core's (`imactor.xmpp.s2s`); this package does the sockets, TLS, DNS and timers.
"""
