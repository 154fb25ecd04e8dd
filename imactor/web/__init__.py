"""Web clients: the HTTP listener with XMPP over WebSocket (RFC 7395), BOSH and host-meta."""
