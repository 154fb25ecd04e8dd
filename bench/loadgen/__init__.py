"""The load generator: a raw XMPP client for load, scenarios, a multi-process driver."""
