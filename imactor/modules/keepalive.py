"""Keepalives: whitespace and XEP-0199 pings with idle timeouts (XEP-0199 §4.2, RFC 6120 §4.6.1).

A client silent for `[limits] idle_timeout` seconds gets a ping from the server; one that stays
silent `ping_timeout` more seconds is disconnected with `connection-timeout`. Any bytes count as
activity, so whitespace keepalives from clients work. The logic lives in the session.
"""

from __future__ import annotations

from imactor.server.modules import Module

module = Module(name="keepalive", summary="Keepalives and idle timeouts")
