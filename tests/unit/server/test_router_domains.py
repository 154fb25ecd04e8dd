"""Which domains the router treats as another server's: the sessions run the `on_outgoing`
hooks (the sender's archive copy) for messages to those only."""

from __future__ import annotations

from imactor.actors import Registry
from imactor.server.router import Router
from imactor.xmpp.stanza import Stanza


async def _nothing(stanza: Stanza) -> None:
    del stanza


def test_only_domains_we_do_not_serve_are_external() -> None:
    router = Router("example.com", Registry())
    router.serve_rooms("conference.example.com", _nothing)
    router.serve("upload.example.com", _nothing)
    assert not router.is_external("example.com")
    assert not router.is_external("conference.example.com")
    assert not router.is_external("upload.example.com")
    assert router.is_external("other.example")
    assert router.is_external("sub.example.com")  # a component's, or another server's
