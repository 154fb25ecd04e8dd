"""SIGHUP reload (`imactor.worker.reload`) against a fake worker: what changes, what stays, and a
bad file that changes nothing."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest

from imactor import tls
from imactor.config import Config, load_config
from imactor.server.module_host import ModuleHost
from imactor.server.services import FailureThrottle, LoginThrottle
from imactor.worker.reload import reload_config

BASE = """
[server]
domain = "{domain}"
data_dir = "data"

[tls]
certificate = "cert.pem"
key = "key.pem"

[limits]
max_stanza_size = {size}
login_failures = 5

[modules.mam]
max_page_size = {page}
"""


class FakeServices:
    """The attributes of `Services` that a reload reads and replaces."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.modules = ModuleHost(config.server.modules, config.modules, str(config.source))
        self.ssl_context: ssl.SSLContext | None = None
        self.endpoint_binding = b""
        self.login_throttle = LoginThrottle(FailureThrottle(5, 300.0), FailureThrottle(20, 300.0))
        self.registration_throttle = FailureThrottle(5, 3600.0)
        self.host_views: dict[str, object] = {}  # [[hosts]]: none here


def write(path: Path, *, domain: str = "localhost", size: int = 1000, page: int = 50) -> None:
    path.write_text(BASE.format(domain=domain, size=size, page=page))


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    cert, key = tls.generate_self_signed("localhost")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    path = tmp_path / "imactor.toml"
    write(path)
    return path


def test_limits_tls_and_module_options_change_the_rest_stays(
    config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    services = FakeServices(load_config(config_path))
    modules = services.modules
    write(config_path, domain="example.org", size=2000, page=70)
    new_cert, new_key = tls.generate_self_signed("localhost")
    (config_path.parent / "cert.pem").write_bytes(new_cert)
    (config_path.parent / "key.pem").write_bytes(new_key)
    with caplog.at_level(logging.INFO, "imactor.reload"):
        assert reload_config(services)  # type: ignore[arg-type]
    assert services.config.limits.max_stanza_size == 2000
    assert services.config.server.domain == "localhost"  # [server] needs a restart
    assert "[server] changed; that takes effect at the next start" in caplog.text
    assert isinstance(services.ssl_context, ssl.SSLContext)
    assert services.endpoint_binding == tls.server_end_point_binding(config_path.parent / "cert.pem")
    assert services.modules is not modules
    assert services.modules.options("mam").max_page_size == 70
    assert services.modules.started_at == modules.started_at


def test_unchanged_module_options_keep_the_module_host(config_path: Path) -> None:
    services = FakeServices(load_config(config_path))
    modules = services.modules
    write(config_path, size=3000)
    assert reload_config(services)  # type: ignore[arg-type]
    assert services.modules is modules
    assert services.config.limits.max_stanza_size == 3000


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (lambda path: path.write_text("not [toml"), "invalid TOML"),
        (lambda path: (path.parent / "key.pem").unlink(), "No such file"),
        (lambda path: write(path, page=0), "modules.mam"),
    ],
)
def test_a_bad_reload_keeps_everything(
    config_path: Path, caplog: pytest.LogCaptureFixture, breakage: object, reason: str
) -> None:
    services = FakeServices(load_config(config_path))
    before = (services.config, services.ssl_context, services.modules, services.endpoint_binding)
    write(config_path, size=5000)
    breakage(config_path)  # type: ignore[operator]
    assert not reload_config(services)  # type: ignore[arg-type]
    assert (services.config, services.ssl_context, services.modules, services.endpoint_binding) == before
    assert "reload failed, keeping the running configuration" in caplog.text
    assert reason in caplog.text
