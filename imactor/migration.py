"""`imactor export FILE` and `imactor import FILE...`: user data in XEP-0227 files.

An export writes every account of the server's domain as one document (`imactor.xmpp.pie_write`,
canonical order), created with mode 0600 (XEP-0227 §6: it holds credentials), in a temporary
file renamed into place. Each account is read in one transaction (consistent in itself; with
the server running, two accounts may be read a moment apart).

An import reads files of Prosody, ejabberd, Openfire or imactor:

- the whole input is read and checked before anything is written: a malformed element stops the
  import with its file, line and name, and nothing changes;
- each account is then compared with what the database holds, and only the differences are
  written, one transaction per account, so importing the same file again changes nothing and
  ``--dry-run`` lists exactly what a real run would do;
- what a file holds wins over what is stored for the same key (a roster item's JID, a private
  element's name, the vCard, the credentials); offline and archived messages are added when not
  there yet (archive: by id; offline: by content); nothing is deleted;
- every <host/> of a domain this server serves ([server] domain and [[hosts]]) is imported into
  that domain's accounts (a [[hosts]] domain's keyed by their bare JID, `imactor.hosts`); other
  hosts are skipped, and said so (§4.1). An export writes one <host/> per served domain.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from pathlib import Path

import trio
from lxml import etree

from imactor.config import Config
from imactor.hosts import account_key, split_account_key
from imactor.storage import Storage
from imactor.storage.xep0227 import AccountChanges, StoredAccount, StoredNode
from imactor.tls import write_atomically
from imactor.xmpp import dataforms, pie, pie_write
from imactor.xmpp import pubsub as ps
from imactor.xmpp.errors import StanzaError
from imactor.xmpp.jid import prep_password
from imactor.xmpp.scram import ScramCredentials, derive_credentials, verify_password

#: XInclude depth: the main file, a host file, a user file (§5.1), and one more for slack.
MAX_INCLUDE_DEPTH = 4
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)

Say = Callable[[str], None]


# ---- export --------------------------------------------------------------------------------------


#: What `imactor export --for` writes: the XEP's single file, or what a peer's importer reads.
FLAVOURS = ("xep0227", "ejabberd", "prosody")


async def export_accounts(storage: Storage, limits: ps.Limits) -> list[pie.Account]:
    """Every account, as the format's values, named by its account key (`imactor.hosts`: the
    localpart on the primary domain, the bare JID on a [[hosts]] domain)."""
    accounts = []
    for name in await storage.accounts.list_usernames():
        stored = await storage.xep0227.read(name)
        if stored is not None:
            accounts.append(_to_pie(stored, limits))
    return accounts


async def export_document(storage: Storage, domain: str, limits: ps.Limits) -> tuple[bytes, int]:
    """The XEP-0227 document of every account (`domain`: the primary), and how many there are."""
    accounts = await export_accounts(storage, limits)
    return pie_write.encode_hosts(by_host(accounts, domain)), len(accounts)


def by_host(accounts: Sequence[pie.Account], primary: str) -> dict[str, list[pie.Account]]:
    """`accounts` (named by account key) grouped by domain, each named by its localpart, as a
    <host/> holds its users; the primary domain first."""
    hosts: dict[str, list[pie.Account]] = {primary: []}
    for account in accounts:
        localpart, domain = split_account_key(account.name, primary)
        hosts.setdefault(domain, []).append(replace(account, name=localpart))
    return hosts


def export_files(accounts: Sequence[pie.Account], domain: str, path: Path, flavour: str) -> list[Path]:
    """Write `accounts` (named by account key; `domain`: the primary) for `flavour` (`FLAVOURS`):

    - "xep0227": one document, `path`, with a <host/> per domain;
    - "ejabberd": the same for `ejabberdctl import_piefxis`, SCRAM values encoded as ejabberd
      23.01 expects (`pie_write.encode`);
    - "prosody": `path` is a directory; one document per user, named ``user@domain.xml``, as
      Prosody's `xep0227` storage module reads them (its data path; `prosody-migrator`).
    """
    hosts = by_host(accounts, domain)
    if flavour != "prosody":
        write_private(path, pie_write.encode_hosts(hosts, scram_base64_twice=flavour == "ejabberd"))
        return [path]
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for host, users in hosts.items():
        for account in users:
            target = path / f"{account.name}@{host}.xml"
            write_private(target, pie_write.encode(host, [account]))
            written.append(target)
    return written


def _to_pie(stored: StoredAccount, limits: ps.Limits) -> pie.Account:
    return pie.Account(stored.name, credentials=stored.credentials, roster=stored.roster, vcard=stored.vcard,
                       private=stored.private, offline=stored.offline, archive=stored.archive,
                       pep=[pie.PepNode(n.node, _form_values(n.config, limits), n.items)
                            for n in stored.pep])  # fmt: skip


def _form_values(config: dict[str, object], limits: ps.Limits) -> dict[str, tuple[str, ...]]:
    """A node's configuration JSON as the values of its XEP-0060 node_config form."""
    scratch = etree.Element("scratch")
    form = ps.NodeConfig.from_json(config).form(scratch, limits, "submit")
    return {var: values for var, values in dataforms.parse(form).values.items() if values}


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by its owner only (XEP-0227 §6), replacing it atomically."""
    write_atomically(path.resolve(), data, mode=0o600)


# ---- reading files -----------------------------------------------------------------------------


def read_document(path: Path) -> etree._Element:
    """Parse a file and resolve its XIncludes (§5: relative hrefs, no parse or xpointer
    attribute) at the levels the XEP puts them: children of <server-data/>, <host/> and <user/>
    (§5 and §6: an include deeper inside a user's data is user data, never followed).

    Raises:
        PieError: The file, or a file it includes, is not well-formed, or an include is not one
            the XEP describes.
    """
    root = _parse(path)
    _resolve_includes(root, path.resolve().parent, 1)
    return root


def _parse(path: Path) -> etree._Element:
    try:
        return etree.parse(str(path), _PARSER).getroot()
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno else "?"
        raise pie.PieError(f"{path}:{line}: not well-formed XML: {exc.msg}") from None
    except OSError as exc:
        raise pie.PieError(f"{path}: {exc.strerror or exc}") from None


def _resolve_includes(parent: etree._Element, directory: Path, depth: int) -> None:
    if not (pie.is_pie(parent, "server-data") or pie.is_pie(parent, "host") or pie.is_pie(parent, "user")):
        return
    for child in list(parent):
        if child.tag == f"{{{pie.NS_XINCLUDE}}}include":
            child = _include(child, directory, depth)
        if not pie.is_pie(parent, "user"):  # a user's children are its data: nothing below them
            _resolve_includes(child, directory, depth)


def _include(include: etree._Element, directory: Path, depth: int) -> etree._Element:
    href = include.get("href", "")
    if include.get("parse", "xml") != "xml" or include.get("xpointer") is not None:
        raise pie.fail(include, "only XML includes without xpointer are supported (§5)")
    target = (directory / href).resolve()
    if not href or Path(href).is_absolute() or "://" in href or not target.is_relative_to(directory):
        raise pie.fail(include, f"href {href!r}: only files beside the main file or below it (§5)")
    if depth >= MAX_INCLUDE_DEPTH:
        raise pie.fail(include, f"more than {MAX_INCLUDE_DEPTH} levels of includes")
    included = _parse(target)
    _resolve_includes(included, directory, depth + 1)
    included.tail = include.tail
    parent = include.getparent()
    assert parent is not None
    parent.replace(include, included)
    return included


# ---- import ------------------------------------------------------------------------------------


def decode_files(
    paths: Sequence[Path], domain: str, say: Say, *, hosts: Collection[str] = ()
) -> list[pie.Account]:
    """Every account in the files of `domain` (the primary) and of the other served `hosts`, named
    by its account key (`imactor.hosts`); the last one wins for an account given twice."""
    accounts: dict[str, pie.Account] = {}
    served = {domain, *hosts}
    for path in paths:
        root = read_document(path)
        for host in pie.hosts(root):
            jid = pie.host_jid(host)
            if jid not in served:
                say(f"skipped host {jid} ({path}): this server serves {', '.join(sorted(served))}")
                continue
            for account in pie.decode_host(host):
                key = account_key(account.name, jid, domain)
                accounts[key] = replace(account, name=key)
    return list(accounts.values())


async def plan_changes(storage: Storage, account: pie.Account, config: Config) -> AccountChanges:
    """What importing `account` changes in the database (nothing: an empty `AccountChanges`)."""
    stored = await storage.xep0227.read(account.name)
    changes = AccountChanges(account.name, create=stored is None)
    changes.credentials = _credentials(account, stored, config.auth.scram_iterations)
    old_roster = {} if stored is None else {item.jid: item for item in stored.roster}
    changes.roster = [item for item in account.roster if old_roster.get(item.jid) != item]
    if account.vcard is not None and (stored is None or stored.vcard != account.vcard):
        changes.vcard = account.vcard
    old_private = {} if stored is None else stored.private
    changes.private = {k: v for k, v in account.private.items() if old_private.get(k) != v}
    waiting = Counter(() if stored is None else stored.offline)
    for message in account.offline:
        if waiting[message]:
            waiting[message] -= 1
        else:
            changes.offline.append(message)
    known = set() if stored is None else {item.stanza_id for item in stored.archive}
    for archived in account.archive:
        if archived.stanza_id not in known:  # and not twice: ids are unique in an archive
            known.add(archived.stanza_id)
            changes.archive.append(archived)
    old_nodes = {} if stored is None else {node.node: node for node in stored.pep}
    limits = pep_limits(config)
    for node in account.pep:
        wanted = _node_config(node, limits, account)
        old = old_nodes.get(node.node)
        old_items = dict(old.items) if old is not None else {}
        new_items = tuple((i, p) for i, p in node.items if old_items.get(i) != p)
        # Compared as values: the stored JSON has lists where the configuration has tuples.
        if old is None or ps.NodeConfig.from_json(old.config) != wanted or new_items:
            changes.pep.append((StoredNode(node.node, wanted.to_json(), new_items), wanted.max_items))
    return changes


def _credentials(
    account: pie.Account, stored: StoredAccount | None, iterations: int
) -> list[ScramCredentials] | None:
    old = [] if stored is None else stored.credentials
    if account.password is not None:
        password = prep_password(account.password)
        if old and all(verify_password(password, creds) for creds in old):
            return None
        # The plaintext of older exports (§4.2): both verifiers, with this server's settings.
        return [derive_credentials(h, password, iterations=iterations) for h in ("SHA-1", "SHA-256")]
    if not account.credentials:
        return None
    if sorted(old, key=lambda c: c.hash_name) == sorted(account.credentials, key=lambda c: c.hash_name):
        return None
    return list(account.credentials)


def pep_limits(config: Config) -> ps.Limits:
    """The PEP module's bounds from `[modules.pep]`, as the server applies them."""
    options = config.modules.get("pep", {})
    defaults = ps.Limits()
    max_items = options.get("max_items", defaults.max_items)
    return replace(defaults, max_items=max_items if isinstance(max_items, int) else defaults.max_items)


def _node_config(node: pie.PepNode, limits: ps.Limits, account: pie.Account) -> ps.NodeConfig:
    """The node's configuration from its form; a field imactor does not have, or a value out of
    its range, is left at the default and reported."""
    config = ps.NodeConfig()
    for var, values in sorted(node.config.items()):
        if var == "FORM_TYPE":
            continue
        one = dataforms.SubmittedForm("submit", {var: values})
        try:
            config = config.configured(one, limits)
        except StanzaError as exc:
            if var == "pubsub#max_items" and values[0].strip().isdigit():
                config = replace(config, max_items=min(int(values[0]), limits.max_items))  # clamp
                continue
            account.skipped.append(f"PEP node {node.node}: {var} = {', '.join(values)} not kept ({exc.text})")
    return config


def describe(changes: AccountChanges, account: pie.Account) -> str:
    """One line about what importing `account` changes."""
    if not changes:
        return f"{account.name}: unchanged"
    parts = ["new account"] if changes.create else []
    if changes.credentials is not None:
        kinds = ", ".join(f"SCRAM-{c.hash_name} ({c.iterations} iterations)" for c in changes.credentials)
        parts.append(f"credentials {kinds}" + (" from the password" if account.password else ""))
    counts = (("roster items", len(changes.roster)), ("vCard", int(changes.vcard is not None)),
              ("private elements", len(changes.private)), ("offline messages", len(changes.offline)),
              ("archived messages", len(changes.archive)), ("PEP nodes", len(changes.pep)))  # fmt: skip
    parts += [f"{what} {count}" for what, count in counts if count]
    return f"{account.name}: " + "; ".join(parts)


async def import_accounts(storage: Storage, config: Config, accounts: Sequence[pie.Account], *,
                          dry_run: bool, say: Say) -> int:  # fmt: skip
    """Import (or with `dry_run` only describe) every account; returns how many changed."""
    changed = 0
    for account in accounts:
        changes = await plan_changes(storage, account, config)
        say(("would change " if dry_run and changes else "") + describe(changes, account))
        for note in account.skipped:
            say(f"  not imported: {note}")
        if changes.create and changes.credentials is None:
            say(f"  {account.name} has no password or SCRAM-SHA-1/-256 verifier: it cannot log in "
                f"until `imactor user passwd {account.name}`")  # fmt: skip
        if changes:
            changed += 1
            if not dry_run:
                await storage.xep0227.apply(changes, config.server.domain)
    return changed


# ---- the commands ------------------------------------------------------------------------------


def export_command(config: Config, path: Path, flavour: str = "xep0227") -> int:
    """`imactor export [--for FLAVOUR] FILE`."""

    async def run() -> list[pie.Account]:
        async with await Storage.open(config.storage_url, partitions=config.storage.partitions) as storage:
            return await export_accounts(storage, pep_limits(config))

    accounts = trio.run(run)
    written = export_files(accounts, config.server.domain, path, flavour)
    where = path if len(written) == 1 or flavour != "prosody" else f"{len(written)} files in {path}"
    hosts = by_host(accounts, config.server.domain)
    of = ", ".join(f"{len(users)} of {host}" for host, users in hosts.items())
    print(f"exported {len(accounts)} accounts of {config.server.domain} to {where}" if len(hosts) == 1
          else f"exported {len(accounts)} accounts ({of}) to {where}")  # fmt: skip
    return 0


def import_command(config: Config, paths: Sequence[Path], *, dry_run: bool) -> int:
    """`imactor import [--dry-run] FILE...`; raises `PieError` for malformed input, before any write."""
    accounts = decode_files(paths, config.server.domain, print, hosts=config.domains)
    if _server_running(config):
        print("note: the server is running; an account logged in now sees the imported roster only "
              "after it logs in again (import with the server stopped to move a whole server)")  # fmt: skip

    async def run() -> int:
        async with await Storage.open(config.storage_url, partitions=config.storage.partitions) as storage:
            return await import_accounts(storage, config, accounts, dry_run=dry_run, say=print)

    changed = trio.run(run)
    print(f"{'would change' if dry_run else 'changed'} {changed} of {len(accounts)} accounts")
    return 0


def _server_running(config: Config) -> bool:
    from imactor.node.status import StatusUnavailable, request_status

    try:
        request_status(config.status_socket, timeout=2.0)
    except StatusUnavailable:
        return False
    return True
