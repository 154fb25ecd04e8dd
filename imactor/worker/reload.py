"""SIGHUP: a worker re-reads its config file and applies what it can without dropping sessions.

What changes at once, for what comes next (open sessions keep what they started with):

- ``[tls]``: a new TLS context (certificate, key, min_version) for new connections and new
  STARTTLS handshakes, and the matching ``tls-server-end-point`` channel binding;
- ``[limits]``, ``[auth]``, ``[registration]``, ``[resources]``: read through ``services.config``
  by sessions and user actors as they start (and by the login and registration throttles);
- ``[modules.*]`` options, when ``server.modules`` (the set of enabled modules) is unchanged: a
  new `ModuleHost` answers the next IQ and message hooks.

The rest (``[server]``, ``[listen.*]``, ``[storage]``, ``[status]``, ``[supervision]``, ``[log]``,
``[proxy65]``: its relay and its listener are built once; ``[components]``; ``[[hosts]]``, whose
certificate files are re-read with ``[tls]``'s and whose modules take new ``[modules.*]`` options)
is fixed by the node supervisor or by open resources: a change is logged as needing a restart
and the running value is kept.

Then (and on the status socket's ``reload-modules`` command, `reload_modules`) the modules'
reload hooks run (`Module.on_reload`): modules that cache what storage holds read it again (the
word filter's lists).

Error handling: a file that does not load (`ConfigError`), a certificate or key that does not
load, or module options that do not validate are logged with the reason, and the running
configuration stays as it was, whole.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from typing import TYPE_CHECKING

import trio

from imactor import messages as m
from imactor import tls
from imactor.actors import ActorGone
from imactor.config import Config, ConfigError, load_config
from imactor.server.module_host import ModuleHost

if TYPE_CHECKING:
    from imactor.server.services import Services

log = logging.getLogger("imactor.reload")

#: Config sections a running worker cannot change (the running value is kept).
RESTART_ONLY = (
    "server", "listen", "storage", "status", "supervision", "log", "proxy65", "components", "hosts",
)  # fmt: skip


def reload_config(services: Services) -> bool:
    """Re-read ``services.config.source`` and apply it (see the module doc).

    Returns:
        Whether the new configuration was applied.
    """
    old = services.config
    try:
        new = load_config(old.source)
    except ConfigError as exc:
        log.error("reload failed, keeping the running configuration: %s", exc)
        return False
    fixed = [name for name in RESTART_ONLY if getattr(new, name) != getattr(old, name)]
    if fixed:
        log.warning("reload: [%s] changed; that takes effect at the next start", "], [".join(fixed))
    merged = dataclasses.replace(new, **{name: getattr(old, name) for name in RESTART_ONLY})
    try:
        contexts = tls.make_host_contexts(merged.certificates, merged.server.domain, merged.tls.min_version)
        context, binding = contexts.default, contexts.bindings[contexts.default]
        modules = _modules(services, merged)
        for domain in merged.domains[1:]:  # each [[hosts]] host's options over the new [modules.*]
            ModuleHost(merged.modules_of(domain), merged.module_options_of(domain), str(merged.source))
    except (OSError, ssl.SSLError, ValueError) as exc:  # ModuleConfigError is a ValueError
        log.error("reload failed, keeping the running configuration: %s", exc)
        return False
    services.config = merged
    services.ssl_context = context
    services.endpoint_binding = binding
    services.endpoint_bindings = contexts.bindings
    if modules is not services.modules:
        services.modules = modules
        for view in services.host_views.values():
            view.reload()
    limits = merged.limits
    for throttle, limit in (
        (services.login_throttle.per_account, limits.login_failures),
        (services.login_throttle.per_address, limits.login_failures * 4),
    ):
        throttle.limit, throttle.window = limit, limits.login_failure_window
    services.registration_throttle.limit = limits.registrations_per_address
    services.registration_throttle.window = limits.registration_window
    log.info("configuration reloaded from %s", merged.source)
    return True


def _modules(services: Services, config: Config) -> ModuleHost:
    """The module host for `config`: a new one if module options changed, else the running one.

    Raises:
        ModuleConfigError: The new options do not validate.
    """
    if config.modules == services.config.modules:
        return services.modules
    host = ModuleHost(config.server.modules, config.modules, str(config.source))
    host.started_at = services.modules.started_at  # the modules have not restarted
    return host


async def reload_modules(services: Services) -> int:
    """Run every enabled module's reload hook (`Module.on_reload`), then, with modules that share
    roster contacts (`Module.shared_roster`), tell every user actor of this worker to read them
    again (`m.SharedRosterChanged`: pushes and presence for what changed); returns how many
    hooks ran."""
    hooks = services.modules.reload_hooks
    for hook, options in hooks:
        await hook(services.contexts.reload(options))
    if services.modules.shared_roster_hooks:
        _shared_rosters_changed(services)
    return len(hooks)


def _shared_rosters_changed(services: Services) -> None:
    skipped = 0
    for _username, ref in services.registry.refs("user"):
        try:
            ref.send_nowait(m.SharedRosterChanged())
        except ActorGone:
            pass  # stopped meanwhile: it reads the shared contacts afresh when it starts again
        except trio.WouldBlock:
            skipped += 1  # a full mailbox: its account is flooded; it sees the change at its next start
    if skipped:
        log.warning("reload: %d busy accounts keep their shared roster until they start again", skipped)
