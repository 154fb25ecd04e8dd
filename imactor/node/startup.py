"""What the node supervisor does once, before any worker starts, and how start failures read.

Workers must never race on shared first-time work, so the supervisor does it alone:

- create the data directory, private (`imactor.storage.files`), before anything is put in it;
- generate the self-signed certificate when none is configured (two workers writing it at once
  could each present a different one);
- validate the module list and options (a typo fails here, with its message, not in N workers);
- open the database and close it: that creates or upgrades the schema (`Storage.open`), so
  workers never run migrations concurrently, and puts SQLite in WAL mode;
- warn about every file with secrets or personal data that others than the server's user may
  read (an administrator loosened its mode, or an older version created it so): the node starts
  anyway, since refusing would turn a privacy problem into an outage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from imactor import tls
from imactor.cluster.keys import KeyFileError
from imactor.server.module_host import ModuleHost
from imactor.server.modules import ModuleConfigError
from imactor.storage import Storage, StorageError
from imactor.storage.cluster import NodeNameInUse
from imactor.storage.db import sqlite_path
from imactor.storage.files import loose_modes, private_directory, sqlite_files

if TYPE_CHECKING:
    from imactor.config import Config

log = logging.getLogger("imactor.node")


async def prepare_node(config: Config) -> None:
    """Data directory, certificate, module options, schema, file modes (see the module doc).

    Raises:
        OSError, ModuleConfigError, StorageError: The node cannot start; `is_start_error` is true.
    """
    private_directory(config.server.data_dir)
    for domain, (cert, key) in config.certificates.items():
        tls.ensure_certificate(cert, key, domain)
    ModuleHost(config.server.modules, config.modules, str(config.source))
    for domain in config.domains[1:]:  # each [[hosts]] host: its modules and its options over [modules.*]
        ModuleHost(config.modules_of(domain), config.module_options_of(domain), str(config.source))
    storage = await Storage.open(config.storage_url, partitions=config.storage.partitions)
    await storage.aclose()
    warn_loose_modes(config)


def private_paths(config: Config) -> dict[Path, str]:
    """The files and directories only the server's user should read, with what each holds."""
    data = "account credentials (SCRAM verifiers) and messages"
    paths = {config.server.data_dir: f"the data directory: {data}", config.tls_key: "the TLS private key"}
    for domain, (_cert, key) in config.certificates.items():
        paths.setdefault(key, f"the TLS private key of {domain}")
    database = sqlite_path(config.storage_url)
    if database is not None:
        paths.setdefault(database.parent, f"the database's directory: {data}")
        for path in sqlite_files(database):
            paths[path] = f"the database: {data}"
    for domain, component in config.components.items():
        if component.secret_file is not None:
            paths[component.secret_file] = f"the shared secret of the component {domain}"
    return paths


def warn_loose_modes(config: Config) -> None:
    """One warning per private path whose mode lets others read it (`private_paths`)."""
    for loose in loose_modes(private_paths(config)):
        log.warning("%s", loose.describe())


def sole_cause(exc: BaseException) -> BaseException:
    """The one exception inside nested exception groups (Trio nurseries wrap what they raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def is_start_error(exc: BaseException) -> bool:
    """An expected failure to start (a port in use, a bad certificate, database or module
    option): reported in one line, not as a bug with its traceback."""
    return isinstance(exc, OSError | ModuleConfigError | StorageError | NodeNameInUse | KeyFileError)
