"""[[hosts]] (virtual hosts) in imactor.config, and the account keys of imactor.hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from imactor.config import ConfigError, load_config
from imactor.hosts import Hosts, account_key, prep_account_key, split_account_key
from imactor.xmpp.jid import JID, InvalidJID
from tests.support.config_file import config_file

REPO = Path(__file__).resolve().parents[2]


TWO_HOSTS = """
[server]
domain = "a.example"
modules = ["disco", "ping", "version", "roster"]
[modules.version]
show_os = false
[[hosts]]
domain = "B.example"
certificate = "certs/b.crt"
key = "certs/b.key"
modules_disabled = ["version"]
modules_enabled = ["vcard"]
[hosts.modules.ping]
interval = 5
[[hosts]]
domain = "c.example"
"""


def test_hosts_are_read_with_their_certificates_and_modules(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, TWO_HOSTS))
    conf = tmp_path / "conf"
    assert config.domains == ("a.example", "b.example", "c.example")  # lower-cased
    b, _c = config.hosts
    assert (b.certificate, b.key) == (conf / "certs" / "b.crt", conf / "certs" / "b.key")
    assert config.certificate_of("b.example") == (b.certificate, b.key)
    # Without its own pair a host gets one generated beside [tls]'s, under its own name.
    assert config.certificate_of("c.example") == (conf / "data" / "tls" / "c.example.crt",
                                                  conf / "data" / "tls" / "c.example.key")  # fmt: skip
    assert config.certificate_of("a.example") == (config.tls_certificate, config.tls_key)
    assert config.modules_of("a.example") == ("disco", "ping", "version", "roster")
    assert config.modules_of("b.example") == ("disco", "ping", "roster", "vcard")
    assert config.modules_of("c.example") == config.server.modules
    assert dict(config.module_options_of("b.example")["ping"]) == {"interval": 5}
    assert dict(config.module_options_of("b.example")["version"]) == {"show_os": False}
    assert "ping" not in config.module_options_of("a.example")
    assert config.host("a.example") is None
    assert config.host("nowhere.example") is None


def test_without_hosts_nothing_changes(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, '[server]\ndomain = "a.example"\n'))
    assert config.hosts == ()
    assert config.domains == ("a.example",)
    assert config.certificates == {"a.example": (config.tls_certificate, config.tls_key)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[hosts]]\ncertificate = "x"\n', "hosts[1].domain: a host needs its domain"),
        ('[[hosts]]\ndomain = "bad domain"\n', 'hosts[1].domain: expected a domain name, got "bad domain"'),
        ('[[hosts]]\ndomain = "a..example"\n', "hosts[1].domain: expected a domain name"),
        ('[[hosts]]\ndomain = 3\n', "hosts[1].domain: expected a domain name, got 3"),
        ('[[hosts]]\ndomain = "A.example"\n',
         'hosts[1].domain: "A.example" is already served (by server.domain'),
        ('[[hosts]]\ndomain = "b.example"\n[[hosts]]\ndomain = "B.EXAMPLE"\n',
         'hosts[2].domain: "B.EXAMPLE" is already served (by hosts."b.example"'),
        ('[[hosts]]\ndomain = "conference.a.example"\n', "is already served (by muc.subdomain"),
        ('[components."gw.example"]\nsecret = "s"\n[[hosts]]\ndomain = "gw.example"\n',
         'is already served (by components."gw.example"'),
        ('[components."conference.b.example"]\nsecret = "s"\n[[hosts]]\ndomain = "b.example"\n',
         'hosts[1].domain: its chat service conference.b.example is already served (by components.'),
        ('[[hosts]]\ndomain = "b.example"\n[[hosts]]\ndomain = "conference.b.example"\n',
         '"conference.b.example" is already served (by hosts."b.example" (its chat service)'),
        ('[[hosts]]\ndomain = "b.example"\ncolour = "red"\n', 'hosts."b.example".colour: unknown key'),
        ('[[hosts]]\ndomain = "b.example"\ncertificate = "b.crt"\n',
         'hosts."b.example".key: certificate and key must be set together'),
        ('[[hosts]]\ndomain = "b.example"\nmodules_disabled = ["nothing"]\n',
         'hosts."b.example".modules_disabled: "nothing" is not in server.modules'),
        ('[[hosts]]\ndomain = "b.example"\nmodules_enabled = "vcard"\n',
         'hosts."b.example".modules_enabled: expected a list of non-empty strings'),
        ('[[hosts]]\ndomain = "b.example"\n[hosts.modules]\nping = 3\n',
         'hosts."b.example".modules.ping: expected a table, got 3'),
        ('hosts = "b.example"\n', "hosts: expected an array of tables ([[hosts]])"),
    ],
)  # fmt: skip
def test_bad_hosts_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = config_file(tmp_path, text + '[server]\ndomain = "a.example"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: "), caught.value
    assert message in str(caught.value)


def test_shipped_config_documents_every_host_key() -> None:
    text = (REPO / "conf" / "imactor.toml").read_text(encoding="utf-8")
    assert "\n# [[hosts]]\n" in text
    for key in ("domain", "certificate", "key", "modules_disabled", "modules_enabled"):
        assert f"\n# {key} = " in text, key
    assert "\n# [hosts.modules." in text


def test_account_keys() -> None:
    hosts = Hosts("a.example", frozenset({"a.example", "b.example"}))
    # The primary domain's accounts keep their bare localpart: existing data needs no migration.
    assert hosts.key(JID.parse("alice@a.example/pc")) == "alice"
    assert hosts.key(JID.parse("alice@b.example")) == "alice@b.example"
    assert hosts.key(JID.parse("alice@elsewhere.example")) is None
    assert hosts.key(JID.parse("b.example")) is None
    assert hosts.jid("alice") == JID.parse("alice@a.example")
    assert hosts.jid("alice@b.example") == JID.parse("alice@b.example")
    assert account_key("bob", "b.example", "a.example") == "bob@b.example"
    assert split_account_key("bob@b.example", "a.example") == ("bob", "b.example")
    assert split_account_key("bob", "a.example") == ("bob", "a.example")
    assert prep_account_key("Alice@B.Example") == "alice@b.example"
    assert hosts.parse_account("Alice") == "alice"
    assert hosts.parse_account("alice@A.example") == "alice"  # the primary's, named in full
    assert hosts.parse_account("alice@b.example") == "alice@b.example"
    with pytest.raises(InvalidJID, match="not a domain of this server"):
        hosts.parse_account("alice@c.example")
    with pytest.raises(InvalidJID):
        hosts.parse_account("al ice@b.example")
