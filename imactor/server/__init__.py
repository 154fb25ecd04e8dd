"""XMPP-aware actors and the I/O shell: sessions, users, routing, modules, listeners."""
