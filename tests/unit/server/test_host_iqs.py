"""IQs to the server's domain that reach the router (from other servers, components, accounts'
actors): the real router, module host and handlers; only the way out to other servers is a list."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
from lxml import etree

from imactor.actors import Registry
from imactor.config import Config
from imactor.server.contexts import Contexts
from imactor.server.host_iqs import HostIqHandler, answer_host_iq
from imactor.server.module_host import ModuleHost
from imactor.server.modules import Scope
from imactor.server.router import Router
from imactor.server.server_api import ServerFacade
from imactor.server.throttles import FailureThrottle
from imactor.xmpp import stanza as st
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import JID
from imactor.xmpp.namespaces import NS_DISCO_INFO, NS_PING, NS_REGISTER, NS_VERSION
from imactor.xmpp.stanza import Stanza

DOMAIN = "example.test"
MODULES = ["disco", "ping", "version", "entity_time", "register", "roster", "presence"]


@dataclass
class Source:
    """What the contexts read (the worker's `Services` in the server)."""

    server: ServerFacade
    config: Config = field(default_factory=Config)
    storage: object = None  # none of these handlers touches storage


@dataclass
class Host:
    router: Router
    modules: ModuleHost
    federated: list[Stanza]
    contexts: Contexts

    async def ask(self, xml: str) -> st.Element:
        """Route `xml` and return the one stanza that went back to the other server."""
        self.federated.clear()
        await self.router.route(Stanza.from_element(etree.fromstring(xml)), wait=False)
        (reply,) = self.federated
        return reply.element()


@pytest.fixture
def host() -> Host:
    modules = ModuleHost(MODULES, {}, "test.toml")
    router = Router(DOMAIN, Registry())
    throttle = FailureThrottle(5, 60.0)
    server = ServerFacade(domain=DOMAIN, router=router, modules=modules, registrations=throttle,
                          room_domain=None, started_at=time.time())  # fmt: skip
    contexts = Contexts(Source(server))  # type: ignore[arg-type]
    handler = HostIqHandler(DOMAIN, lambda: modules, contexts, router)
    router.serve_host(handler.handle)
    federated: list[Stanza] = []

    async def federate(stanza: Stanza) -> None:
        federated.append(stanza)

    router.federate(federate)
    return Host(router, modules, federated, contexts)


def iq(payload: str, *, type_: str = "get", sender: str = "juliet@remote.test/balcony") -> str:
    return f"<iq xmlns='jabber:server' type='{type_}' id='q1' from='{sender}' to='{DOMAIN}'>{payload}</iq>"


def test_only_handlers_opened_to_other_domains_answer_them() -> None:
    modules = ModuleHost(MODULES, {}, "test.toml")
    ping = etree.Element(f"{{{NS_PING}}}ping")
    form = etree.Element(f"{{{NS_REGISTER}}}query")
    assert modules.iq_handler("get", ping, Scope.HOST, remote=True) is not None
    assert modules.iq_handler("get", form, Scope.HOST) is not None
    assert modules.iq_handler("get", form, Scope.HOST, remote=True) is None


async def test_a_remote_user_pings_the_server(host: Host) -> None:
    reply = await host.ask(iq(f"<ping xmlns='{NS_PING}'/>"))
    assert (reply.get("type"), reply.get("id")) == ("result", "q1")
    assert (reply.get("from"), reply.get("to")) == (DOMAIN, "juliet@remote.test/balcony")


async def test_a_remote_server_asks_disco_info_and_version(host: Host) -> None:
    info = await host.ask(iq(f"<query xmlns='{NS_DISCO_INFO}'/>", sender="remote.test"))
    assert info.get("type") == "result"
    features = {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
    assert {NS_PING, NS_VERSION, NS_DISCO_INFO} <= features
    identity = info.find(f".//{{{NS_DISCO_INFO}}}identity")
    assert identity is not None
    assert identity.get("category") == "server"
    version = await host.ask(iq(f"<query xmlns='{NS_VERSION}'/>"))
    assert version.findtext(f".//{{{NS_VERSION}}}name") == "imactor"


async def test_account_features_stay_local(host: Host) -> None:
    """XEP-0077 on the server answers for the sender's own account: never for another domain's
    user (a <remove/> from juliet@remote.test must not reach juliet@example.test)."""
    for type_, payload in (("get", "<query xmlns='jabber:iq:register'/>"),
                           ("set", "<query xmlns='jabber:iq:register'><remove/></query>")):  # fmt: skip
        reply = await host.ask(iq(payload, type_=type_))
        assert reply.get("type") == "error"
        assert reply.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None


async def test_unknown_payloads_and_bad_iqs_get_errors(host: Host) -> None:
    unknown = await host.ask(iq("<query xmlns='urn:example:nothing'/>"))
    assert unknown.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
    two = await host.ask(iq(f"<ping xmlns='{NS_PING}'/><ping xmlns='{NS_PING}'/>"))
    assert two.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}bad-request") is not None


async def test_answers_and_messages_to_the_server_get_nothing_back(host: Host) -> None:
    for xml in (
        iq("", type_="result"),
        iq("<error type='cancel'/>", type_="error"),
        f"<message xmlns='jabber:server' from='juliet@remote.test' to='{DOMAIN}'><body>hi</body></message>",
    ):
        host.federated.clear()
        await host.router.route(Stanza.from_element(etree.fromstring(xml)), wait=False)
        assert host.federated == []


async def test_an_account_of_ours_reaches_every_host_handler(host: Host) -> None:
    """The same dispatch as a session's: for our own accounts, XEP-0077 answers for the account."""
    juliet, server = JID.parse(f"juliet@{DOMAIN}/balcony"), JID.parse(DOMAIN)
    request = etree.fromstring(iq("<query xmlns='jabber:iq:register'/>", sender=str(juliet)))
    reply = await answer_host_iq(host.modules, host.contexts, request, juliet, server, remote=False)
    assert reply is not None
    assert reply.findtext(f"{{{NS_REGISTER}}}query/{{{NS_REGISTER}}}username") == "juliet"
    with pytest.raises(StanzaError) as refused:
        await answer_host_iq(host.modules, host.contexts, request, juliet, server, remote=True)
    assert refused.value.condition == "service-unavailable"
