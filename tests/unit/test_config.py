"""imactor.config: defaults, every validation error (file + dotted key), paths, the shipped file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from imactor.config import DEFAULT_MODULES, Config, ConfigError, LimitsConfig, Rate, load_config, parse_config
from tests.support.config_file import config_file

HOSTS_EXPECTED = "expected a host name or address, or a list of them"

REPO = Path(__file__).resolve().parents[2]


def test_empty_file_gives_every_default(tmp_path: Path) -> None:
    path = config_file(tmp_path, "")
    config = load_config(path)
    conf_dir = tmp_path / "conf"
    assert config.source == path
    assert config.server.domain == "localhost"
    assert config.server.data_dir == conf_dir / "data"
    assert config.server.workers == 1
    assert config.server.worker_count == 1
    assert config.server.modules == DEFAULT_MODULES
    assert "roster" in config.server.modules
    assert config.server.admins == ()
    assert (config.listen.c2s.host, config.listen.c2s.port, config.listen.c2s.starttls_required) == (
        ("127.0.0.1", "::1"), 5222, True,
    )  # fmt: skip
    assert (config.listen.c2s_tls.port, config.listen.c2s_tls.enabled) == (5223, True)
    assert (config.tls.certificate, config.tls.key, config.tls.min_version) == (None, None, "1.2")
    assert config.tls_certificate == conf_dir / "data" / "tls" / "localhost.crt"
    assert config.tls_key == conf_dir / "data" / "tls" / "localhost.key"
    assert config.storage_url == f"sqlite:///{conf_dir / 'data' / 'imactor.sqlite3'}"
    assert config.storage_url.startswith("sqlite:////")  # absolute
    assert config.limits == LimitsConfig()
    assert config.limits.max_stanza_size == 262144
    assert config.limits.handshake_timeout == 30.0
    assert config.limits.stanza_burst == 400
    assert config.limits.resume_timeout == 300.0
    assert (config.auth.scram_iterations, config.auth.allow_plain) == (4096, True)
    assert config.registration.enabled is False
    assert config.resources.conflict == "kick_old"
    assert config.status_socket == conf_dir / "data" / "imactor.sock"
    assert (config.supervision.intensity, config.supervision.period) == (5, 30.0)
    assert (config.log.level, config.log.format) == ("info", "text")
    assert dict(config.modules) == {}


def test_values_are_read_and_typed(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        """
        [server]
        domain = "Example.ORG"
        workers = "auto"
        modules = ["ping"]
        admins = ["admin@example.org"]
        [listen.c2s]
        port = 0
        [listen.c2s_tls]
        enabled = false
        [tls]
        min_version = "1.3"
        [limits]
        idle_timeout = 10       # an integer is accepted where seconds are expected
        stanzas_per_second = 2.5
        [auth]
        scram_iterations = 10000
        [resources]
        conflict = "refuse"
        [supervision]
        intensity = 0
        [log]
        level = "debug"
        format = "json"
        [modules.ping]
        interval = 5
        [modules.muc]
        """,
    )
    config = load_config(path)
    assert config.server.domain == "example.org"
    assert config.server.workers == "auto"
    assert config.server.worker_count >= 1
    assert config.server.modules == ("ping",)
    assert config.server.admins == ("admin@example.org",)
    assert config.listen.c2s.port == 0
    assert config.listen.c2s_tls.enabled is False
    assert config.tls.min_version == "1.3"
    assert config.limits.idle_timeout == 10.0
    assert isinstance(config.limits.idle_timeout, float)
    assert config.limits.stanzas_per_second == 2.5
    assert config.auth.scram_iterations == 10000
    assert config.resources.conflict == "refuse"
    assert config.supervision.intensity == 0
    assert (config.log.level, config.log.format) == ("debug", "json")
    assert config.modules == {"ping": {"interval": 5}, "muc": {}}
    assert config.tls_certificate.name == "example.org.crt"


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, ""))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.domain = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.modules["x"] = {}  # type: ignore[index]


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        """
        [server]
        data_dir = "../var/imactor"
        [tls]
        certificate = "certs/server.pem"
        key = "/etc/keys/server.key"
        [storage]
        url = "sqlite:///db/x.sqlite3?timeout=5"
        [status]
        socket = "run/status.sock"
        """,
    )
    config = load_config(path)
    assert config.server.data_dir == tmp_path / "var" / "imactor"
    assert config.tls_certificate == tmp_path / "conf" / "certs" / "server.pem"
    assert config.tls_key == Path("/etc/keys/server.key")
    assert config.storage_url == f"sqlite:///{tmp_path / 'conf' / 'db' / 'x.sqlite3'}?timeout=5"
    assert config.status_socket == tmp_path / "var" / "imactor" / "run" / "status.sock"


def test_absolute_and_non_sqlite_urls_are_kept(tmp_path: Path) -> None:
    for url in ("sqlite:////srv/imactor.sqlite3", "postgresql+psycopg://u:p@db/imactor"):
        assert load_config(config_file(tmp_path, f'[storage]\nurl = "{url}"\n')).storage_url == url


def test_relative_config_path_still_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file(tmp_path, "")
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("conf/imactor.toml"))
    assert config.server.data_dir == tmp_path / "conf" / "data"
    assert config.source == Path("conf/imactor.toml")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[limits]\nmax_stanza_size = "big"',
            'limits.max_stanza_size: expected a positive integer, got "big"',
        ),
        ("[limits]\nmax_stanza_size = 0", "limits.max_stanza_size: expected a positive integer, got 0"),
        ("[limits]\nstanza_burst = 1.5", "limits.stanza_burst: expected a positive integer, got 1.5"),
        ("[limits]\nmailbox_size = true", "limits.mailbox_size: expected a positive integer, got true"),
        ("[limits]\nidle_timeout = -1", "limits.idle_timeout: expected a positive number, got -1"),
        ("[limits]\nping_timeout = false", "limits.ping_timeout: expected a positive number, got false"),
        (
            "[limits]\nhandshake_timeout = inf",
            "limits.handshake_timeout: expected a positive number, got Infinity",
        ),
        ("[server]\ndomain = 42", "server.domain: expected a domain name, got 42"),
        ('[server]\ndomain = "a b"', 'server.domain: expected a domain name, got "a b"'),
        ('[server]\ndomain = "user@host"', 'server.domain: expected a domain name, got "user@host"'),
        ('[server]\ndata_dir = ""', 'server.data_dir: expected a non-empty path, got ""'),
        ("[server]\nworkers = 0", 'server.workers: expected "auto" or a positive integer, got 0'),
        ('[server]\nworkers = "many"', 'server.workers: expected "auto" or a positive integer, got "many"'),
        ('[server]\nmodules = "ping"', 'server.modules: expected a list of non-empty strings, got "ping"'),
        (
            '[server]\nmodules = ["ping", 3]',
            'server.modules: expected a list of non-empty strings, got ["ping", 3]',
        ),
        ('[server]\nmodules = ["ping", "ping"]', 'server.modules: "ping" is listed twice'),
        ('[server]\nadmins = ["example.org"]', "server.admins: expected a list of bare JIDs (user@domain)"),
        ('[server]\nadmins = ["a@b/res"]', "server.admins: expected a list of bare JIDs (user@domain)"),
        ("[listen.c2s]\nport = 65536", "listen.c2s.port: expected an integer from 0 to 65535, got 65536"),
        ("[listen.c2s_tls]\nport = -1", "listen.c2s_tls.port: expected an integer from 0 to 65535, got -1"),
        ('[listen.c2s]\nhost = ""', f'listen.c2s.host: {HOSTS_EXPECTED}, got ""'),
        ("[listen.c2s]\nhost = []", f"listen.c2s.host: {HOSTS_EXPECTED}, got []"),
        ('[listen.c2s_tls]\nhost = ["::1", "::1"]', 'listen.c2s_tls.host: "::1" is listed twice'),
        (
            '[listen.c2s]\nstarttls_required = "yes"',
            'listen.c2s.starttls_required: expected true or false, got "yes"',
        ),
        ("[listen.c2s_tls]\nenabled = 1", "listen.c2s_tls.enabled: expected true or false, got 1"),
        ("listen = 3", "listen: expected a table, got 3"),
        ("[listen]\nc2s = 3", "listen.c2s: expected a table, got 3"),
        ("[tls]\nmin_version = 1.2", 'tls.min_version: expected one of "1.2", "1.3", got 1.2'),
        ('[tls]\ncertificate = "c.pem"', "tls.key: certificate and key must be set together"),
        ('[tls]\nkey = "k.pem"', "tls.certificate: certificate and key must be set together"),
        (
            '[storage]\nurl = "imactor.sqlite3"',
            'storage.url: expected a database URL such as "sqlite:////path/db"',
        ),
        ("[auth]\nscram_iterations = 4095", "auth.scram_iterations: expected an integer >= 4096, got 4095"),
        ('[auth]\nallow_plain = "no"', 'auth.allow_plain: expected true or false, got "no"'),
        ("[auth]\nsasl_retries = 6", "auth.sasl_retries: expected an integer from 2 to 5, got 6"),
        ('[registration]\nenabled = "true"', 'registration.enabled: expected true or false, got "true"'),
        (
            '[resources]\nconflict = "kick"',
            'resources.conflict: expected one of "kick_old", "refuse", "random"',
        ),
        ('[status]\nsocket = ""', 'status.socket: expected a non-empty path, got ""'),
        ("[supervision]\nintensity = -1", "supervision.intensity: expected a non-negative integer, got -1"),
        ("[supervision]\nperiod = 0", "supervision.period: expected a positive number, got 0"),
        (
            '[log]\nlevel = "verbose"',
            'log.level: expected one of "debug", "info", "warning", "error", "critical"',
        ),
        ('[log]\nformat = "xml"', 'log.format: expected one of "text", "json", got "xml"'),
        ("modules = 1", "modules: expected a table, got 1"),
        (
            '[listen.metrics]\nallow = ["10.0.0.0/33"]',
            'listen.metrics.allow: "10.0.0.0/33" is not an address or a network',
        ),
        ('[listen.metrics]\nallow = "::1"', "listen.metrics.allow: expected a list of addresses or networks"),
        ("[modules]\nping = 1", "modules.ping: expected a table, got 1"),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path: Path, toml: str, message: str) -> None:
    path = config_file(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("colour = 1", "colour"),
        ("[serverr]\ndomain = 'x'", "serverr"),
        ("[server]\ndomian = 'x'", "server.domian"),
        ("[listen.s2s]\nprot = 5269", "listen.s2s.prot"),
        ("[s2s]\nroute = {}", "s2s.route"),
        ("[listen.c2s]\nprot = 5222", "listen.c2s.prot"),
        ("[limits]\nmax_stanza = 1", "limits.max_stanza"),
        ("source = 'x'", "source"),  # a field of Config, but not a key of the file
    ],
)
def test_unknown_keys_are_errors(tmp_path: Path, toml: str, key: str) -> None:
    path = config_file(tmp_path, toml)
    with pytest.raises(ConfigError, match=r".") as info:
        load_config(path)
    assert str(info.value) == f"{path}: {key}: unknown key"


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^{missing}: cannot read: No such file or directory$"):
        load_config(missing)
    broken = config_file(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match=rf"^{broken}: invalid TOML: "):
        load_config(broken)


def test_s2s_defaults_routes_and_policy(tmp_path: Path) -> None:
    assert Config().s2s.enabled is False  # a closed deployment federates only when told to
    assert Config().listen.s2s.port == 5269
    path = config_file(
        tmp_path,
        '[s2s]\nenabled = true\nca_file = "cas.pem"\ndeny = ["evil.example"]\n'
        'routes = { "Partner.Example" = "127.0.0.1:5270", "v6.example" = "[::1]:5269" }\n',
    )
    s2s = load_config(path).s2s
    assert s2s.routes == {"partner.example": ("127.0.0.1", 5270), "v6.example": ("::1", 5269)}
    assert s2s.ca_file == tmp_path / "conf" / "cas.pem"
    assert s2s.permits("partner.example")
    assert not s2s.permits("evil.example")
    only = load_config(config_file(tmp_path, '[s2s]\nallow = ["a.example"]\n')).s2s
    assert only.permits("a.example")
    assert not only.permits("b.example")


def test_s2s_rates(tmp_path: Path) -> None:
    assert Config().s2s.rate_of("any.example") == Rate(100.0, 500)
    path = config_file(
        tmp_path,
        "[s2s]\nrate = 0\nburst = 20\n"
        'rate_overrides = { "Slow.Example" = { rate = 2 }, "b.example" = { rate = 0.5, burst = 9 } }\n',
    )
    s2s = load_config(path).s2s
    assert s2s.rate_of("other.example") == Rate(0.0, 20)  # 0: no limit
    assert s2s.rate_of("slow.example") == Rate(2.0, 10)  # burst: five seconds' worth
    assert s2s.rate_of("b.example") == Rate(0.5, 9)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("rate = -1", "s2s.rate: expected a non-negative number (0: no limit), got -1"),
        ("burst = 0", "s2s.burst: expected a positive integer, got 0"),
        (
            'rate_overrides = { "a.example" = 5 }',
            "s2s.rate_overrides.a.example: expected { rate = ..., burst = ... }, got 5",
        ),
        (
            'rate_overrides = { "a.example" = { rate = "fast" } }',
            's2s.rate_overrides.a.example.rate: expected a non-negative number (0: no limit), got "fast"',
        ),
        (
            'rate_overrides = { "a.example" = { rate = 1, burst = 0 } }',
            "s2s.rate_overrides.a.example.burst: expected a positive integer, got 0",
        ),
        (
            'rate_overrides = { "a.example" = { rate = 1, per = 2 } }',
            "s2s.rate_overrides.a.example.per: unknown key",
        ),
        ('routes = { "a.example" = "nohost" }', 's2s.routes.a.example: expected "host:port", got "nohost"'),
        (
            'routes = { "a.example" = "h:70000" }',
            "s2s.routes.a.example: expected a port from 1 to 65535, got 70000",
        ),
        ('routes = { "a.example" = 5269 }', 's2s.routes.a.example: expected "host:port", got 5269'),
        ("routes = 1", 's2s.routes: expected a table of domain = "host:port", got 1'),
        ('deny = ["a b"]', 's2s.deny: expected a list of domains, got ["a b"]'),
        ('enabled = "yes"', 's2s.enabled: expected true or false, got "yes"'),
    ],
)
def test_s2s_errors_name_the_key_and_the_file(tmp_path: Path, toml: str, message: str) -> None:
    path = config_file(tmp_path, f"[s2s]\n{toml}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"


def test_components_secrets_and_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "conf" / "bot.secret"
    secret_file.parent.mkdir()
    secret_file.write_text("from a file\n")
    path = config_file(tmp_path, '[listen.component]\nport = 0\n'
                            '[components."Gateway.example"]\nsecret = "s"\n'
                            '[components."bot.example"]\nsecret_file = "bot.secret"\n')  # fmt: skip
    config = load_config(path)
    assert config.listen.component.port == 0
    assert config.listen.component.host == ("127.0.0.1", "::1")  # loopback unless told
    assert config.components["gateway.example"].secret == "s"
    assert config.components["bot.example"].secret == "from a file"
    assert config.components["bot.example"].secret_file == secret_file
    assert load_config(config_file(tmp_path, "")).components == {}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[components."g.example"]\n', 'components."g.example": set one of secret and secret_file'),
        ('[components."g.example"]\nsecret = "a"\nsecret_file = "f"\n',
         'components."g.example": set one of secret and secret_file'),
        ('[components."g.example"]\nsecret = 5\n', 'components."g.example".secret: expected a string, got 5'),
        ('[components."g.example"]\npassword = "x"\n', 'components."g.example".password: unknown key'),
        ('[components."a b"]\nsecret = "x"\n', 'components."a b": expected a domain name'),
        ('[components."g.example"]\nsecret_file = "missing"\n',
         'components."g.example".secret_file: cannot read '),
        ('[server]\ndomain = "g.example"\n[components."g.example"]\nsecret = "x"\n',
         'components."g.example": the same domain as server.domain'),
        ('[components."conference.localhost"]\nsecret = "x"\n',
         'components."conference.localhost": the same domain as muc.subdomain'),
        ("components = 1\n", "components: expected a table of component domains, got 1"),
        ('[listen.component]\nhandshake_timeout = 0\n',
         "listen.component.handshake_timeout: expected a positive number, got 0"),
    ],
)  # fmt: skip
def test_component_errors_name_the_key_and_the_file(tmp_path: Path, toml: str, message: str) -> None:
    path = config_file(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_parse_config_for_tests(tmp_path: Path) -> None:
    config = parse_config({"server": {"data_dir": "d"}}, source=Path("<test>"), base_dir=tmp_path)
    assert config.server.data_dir == tmp_path / "d"
    with pytest.raises(ConfigError, match=r"^<test>: server.workers: "):
        parse_config({"server": {"workers": -1}}, source=Path("<test>"), base_dir=tmp_path)
    assert Config().storage_url == "sqlite:///data/imactor.sqlite3"


def test_shipped_config_loads_with_every_key(tmp_path: Path) -> None:
    path = REPO / "conf" / "imactor.toml"
    config = load_config(path)
    assert config.server.domain == "localhost"
    assert config.server.data_dir == REPO / "data"  # gitignored (/data/)
    assert config.registration.enabled is True
    assert (config.listen.c2s.port, config.listen.c2s_tls.port) == (5222, 5223)
    assert config.storage_url == f"sqlite:///{REPO / 'data' / 'imactor.sqlite3'}"
    # Apart from the documented development choices, the shipped values are the defaults.
    defaults = parse_config({}, source=path, base_dir=REPO / "conf")
    assert (
        dataclasses.replace(
            config,
            server=dataclasses.replace(config.server, data_dir=defaults.server.data_dir),
            registration=defaults.registration,
        )
        == defaults
    )
    # Every key of every table is present in the file (so it documents them all).
    text = path.read_text(encoding="utf-8")
    for table in dataclasses.fields(Config):
        if table.name in ("source", "modules", "components", "hosts"):
            continue
        section = getattr(config, table.name)
        for sub in dataclasses.fields(section):
            value = getattr(section, sub.name)
            if dataclasses.is_dataclass(value):
                assert f"[{table.name}.{sub.name}]" in text
                for leaf in dataclasses.fields(value):
                    assert f"\n{leaf.name} = " in text, f"{table.name}.{sub.name}.{leaf.name}"
            else:
                assert f"[{table.name}]" in text
                assert f"\n{sub.name} = " in text, f"{table.name}.{sub.name}"


def test_listener_host_is_one_address_or_a_list(tmp_path: Path) -> None:
    config_file = tmp_path / "imactor.toml"
    config_file.write_text('[listen.c2s]\nhost = "0.0.0.0"\n[listen.c2s_tls]\nhost = ["10.0.0.1", "::"]\n')
    config = load_config(config_file)
    assert config.listen.c2s.host == ("0.0.0.0",)
    assert config.listen.c2s_tls.host == ("10.0.0.1", "::")
