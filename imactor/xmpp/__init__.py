"""The sans-IO XMPP core: bytes in, events out; no trio, no sockets, no clock, no storage."""
