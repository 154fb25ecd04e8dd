"""What the node supervisor does once, before any worker starts, and how start failures read.

Workers must never race on shared first-time work, so the supervisor does it alone:

- generate the self-signed certificate when none is configured (two workers writing it at once
  could each present a different one);
- validate the module list and options (a typo fails here, with its message, not in N workers);
- open the database and close it: that creates or upgrades the schema (`Storage.open`), so
  workers never run migrations concurrently, and puts SQLite in WAL mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imactor import tls
from imactor.server.module_host import ModuleHost
from imactor.server.modules import ModuleConfigError
from imactor.storage import Storage, StorageError

if TYPE_CHECKING:
    from imactor.config import Config


async def prepare_node(config: Config) -> None:
    """Certificate, module options, schema (see the module doc).

    Raises:
        OSError, ModuleConfigError, StorageError: The node cannot start; `is_start_error` is true.
    """
    tls.ensure_certificate(config.tls_certificate, config.tls_key, config.server.domain)
    ModuleHost(config.server.modules, config.modules, str(config.source))
    storage = await Storage.open(config.storage_url)
    await storage.aclose()


def sole_cause(exc: BaseException) -> BaseException:
    """The one exception inside nested exception groups (Trio nurseries wrap what they raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def is_start_error(exc: BaseException) -> bool:
    """An expected failure to start (a port in use, a bad certificate, database or module
    option): reported in one line, not as a bug with its traceback."""
    return isinstance(exc, OSError | ModuleConfigError | StorageError)
