"""Virtual hosts in the sans-IO client stream: the header's `to` picks the host ([[hosts]])."""

from __future__ import annotations

from imactor.xmpp import events as ev
from imactor.xmpp.namespaces import NS_TLS, qname
from imactor.xmpp.stream import State, StreamConfig
from tests.unit.xmpp.test_stream import (
    STARTTLS,
    Client,
    assert_stream_error,
    header,
    plain,
    tags,
)

HOSTS = StreamConfig(domain="example.com", hosts=frozenset({"other.example"}))


def test_the_header_names_the_host_and_ours_answers_from_it() -> None:
    client = Client(HOSTS)
    assert client.send(header(to="Other.Example.")) == []
    client.read()
    assert client.out.headers[0]["from"] == "other.example"
    assert client.stream.domain == "other.example"
    assert client.stream.state is State.WAIT_FOR_STARTTLS


def test_the_primary_domain_still_works_with_hosts() -> None:
    client = Client(HOSTS)
    client.open()
    assert client.out.headers[0]["from"] == "example.com"
    assert client.stream.domain == "example.com"


def test_a_name_no_host_has_is_host_unknown() -> None:
    client = Client(HOSTS)
    assert_stream_error(client, client.send(header(to="third.example")), "host-unknown")
    assert client.out.headers[0]["from"] == "example.com"


def test_a_restart_may_not_switch_hosts() -> None:
    """After TLS (whose certificate was the first host's) the stream stays that host's."""
    client = Client(HOSTS)
    client.send(header(to="other.example"))
    client.read()
    assert client.send(STARTTLS) == [ev.StartTLSRequested()]
    assert tags(client.read()) == [qname(NS_TLS, "proceed")]
    client.stream.tls_established({})
    assert_stream_error(client, client.send(header(to="example.com")), "host-unknown")


def test_sasl_names_the_localpart_and_the_shell_reads_the_host() -> None:
    client = Client(HOSTS, tls_active=True)
    client.send(header(to="other.example"))
    client.read()
    assert client.send(plain()) == [ev.CredentialsNeeded("juliet")]
    assert client.stream.domain == "other.example"
