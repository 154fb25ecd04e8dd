"""The ``imactor`` command: run the server, check a config file, manage accounts.

    imactor supervise --config FILE        run the master and its workers
    imactor check-config --config FILE     validate a config file
    imactor status [--json]                show the running server's status (exit 1: unreachable)
    imactor user add USER [--password P]   create an account (password from stdin or a prompt)
    imactor user add --file FILE           create accounts in bulk: "user:password" lines
    imactor user passwd USER               change a password
    imactor user del USER                  delete an account and all its data
    imactor user list                      list usernames
    imactor filter list|add|remove|set|import|drop   sensitive-word lists (docs/word-filter.md)
    imactor org import FILE [--dry-run]    replace the company directory (CSV or JSON, docs/directory.md)
    imactor org export [FILE] [--format F] write the company directory (JSON by default, or CSV)
    imactor db migrate                     create or upgrade the schema (safe on several nodes at once)
    imactor backup DEST                    online backup of the SQLite database (file or directory)
    imactor restore SRC                    replace the database with a backup (server stopped)

USER is a name on ``[server] domain`` (``alice``) or a bare JID of any served domain
(``alice@other.example``, ``[[hosts]]``); ``user list`` prints them the same way.

``imactor worker ...`` is internal: the node supervisor runs one per worker process (see
`imactor.worker.process`); it is left out of the help listing.

``--config`` defaults to ``conf/imactor.toml`` and may be given before or after the command.
Expected failures (invalid config, bad username, existing or missing account, unreadable file)
print one line on stderr and exit with status 1, never a traceback. User commands open the
database directly, so they work whether or not the server runs (SQLite lets both write).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from imactor.config import Config, ConfigError, load_config
from imactor.node.cluster_cli import ClusterCommandError, add_cluster_parser

if TYPE_CHECKING:
    from imactor.storage import Storage

DEFAULT_CONFIG = Path("conf/imactor.toml")
T = TypeVar("T")


class CommandError(Exception):
    """An expected failure of a command, reported as one line on stderr."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, Path], int] = args.handler
    config_path = Path(getattr(args, "config", None) or DEFAULT_CONFIG)
    try:
        return handler(args, config_path)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _describe(exc)
        if message is None:
            raise
        print(f"imactor: error: {message}", file=sys.stderr)
        return 1


def _describe(exc: Exception) -> str | None:
    """The one-line message for an expected failure, or None for a bug (keep the traceback)."""
    if isinstance(exc, CommandError | ConfigError | ClusterCommandError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    if "imactor.storage" not in sys.modules:  # not loaded: cannot be one of its errors
        return None
    from imactor.storage import AccountExists, AccountNotFound, StorageError

    if isinstance(exc, StorageError):
        return str(exc)
    if isinstance(exc, AccountExists):
        return f"account {exc} already exists"
    if isinstance(exc, AccountNotFound):
        return f"no account {exc}"
    return None


def _parser() -> argparse.ArgumentParser:
    # --config on the top parser and on each command: SUPPRESS keeps a command's unset option from
    # overwriting a value given before the command.
    parser = argparse.ArgumentParser(prog="imactor", description="imactor XMPP server")
    parser.add_argument("--config", type=Path, help=f"config file (default: {DEFAULT_CONFIG})")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config file")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run = commands.add_parser("supervise", parents=[common], help="run the server")
    run.set_defaults(handler=_supervise)
    check = commands.add_parser("check-config", parents=[common], help="validate a config file")
    check.set_defaults(handler=_check_config)
    status = commands.add_parser("status", parents=[common], help="show the running server's status")
    status.add_argument("--json", action="store_true", help="print the raw JSON document")
    status.set_defaults(handler=_status)
    # Internal: no `help=`, so argparse leaves it out of the command listing.
    worker = commands.add_parser("worker", parents=[common], description="internal: one worker of a node")
    worker.add_argument("--index", type=_non_negative, required=True, help="this worker's number")
    worker.add_argument("--workers", type=_positive, required=True, help="how many workers the node runs")
    worker.add_argument("--run-dir", type=Path, required=True, help="the node's private run directory")
    worker.add_argument("--node-started", type=float, default=None, help="when the node started (epoch s)")
    worker.add_argument("--node-id", type=_non_negative, default=0, help="this node's number in its cluster")
    worker.add_argument("--mesh-endpoint", default=None, help="where to bind the socket for other nodes")
    worker.add_argument(
        "--listen", action="append", default=[], metavar="NAME=FD[,FD...]", help="inherited listening sockets"
    )
    worker.set_defaults(handler=_worker)

    user = commands.add_parser("user", help="manage accounts").add_subparsers(
        title="user commands", required=True, metavar="ACTION"
    )
    add = user.add_parser("add", parents=[common], help="create one account, or many with --file")
    add.add_argument("username", nargs="?", help="alice (the primary domain) or alice@<a [[hosts]] domain>")
    add.add_argument("--password", help="the password (default: read from stdin or prompt)")
    add.add_argument(
        "--file", type=Path, help='bulk: "user:password" or "user<TAB>password" lines; - for stdin'
    )
    add.set_defaults(handler=_user_add)
    passwd = user.add_parser("passwd", parents=[common], help="change a password")
    passwd.add_argument("username")
    passwd.add_argument("--password", help="the new password (default: read from stdin or prompt)")
    passwd.set_defaults(handler=_user_passwd)
    delete = user.add_parser("del", parents=[common], help="delete an account and all its data")
    delete.add_argument("username")
    delete.set_defaults(handler=_user_del)
    listing = user.add_parser("list", parents=[common], help="list usernames")
    listing.set_defaults(handler=_user_list)
    logout = user.add_parser("logout-everywhere", parents=[common],
                             help="revoke an account's FAST tokens and end its sessions")  # fmt: skip
    logout.add_argument("username")
    logout.set_defaults(handler=_user_logout_everywhere)
    notify = user.add_parser("notify", parents=[common],
                             help="turn an account's email digests on or off, or show them")  # fmt: skip
    notify.add_argument("username")
    notify.add_argument("state", nargs="?", choices=("on", "off"), help="omit to show the setting")
    notify.set_defaults(handler=_user_notify)

    room = commands.add_parser("room", help="manage multi-user chat rooms").add_subparsers(
        title="room commands", required=True, metavar="ACTION"
    )
    rooms = room.add_parser("list", parents=[common], help="list the rooms that exist")
    rooms.add_argument("--json", action="store_true", help="one JSON object per room")
    rooms.set_defaults(handler=_room_list)
    destroy = room.add_parser("destroy", parents=[common], help="destroy a room (its occupants are told)")
    destroy.add_argument("name", help="the room's name (the localpart of its JID)")
    destroy.add_argument("--reason", default="", help="told to the occupants")
    destroy.add_argument("--alternate", default="", metavar="JID", help="a room to go to instead")
    destroy.set_defaults(handler=_room_destroy)

    _filter_parser(commands, common)
    _org_parser(commands, common)
    add_cluster_parser(commands, common)

    export = commands.add_parser(
        "export", parents=[common], help="write every account's data to a XEP-0227 file"
    )
    export.add_argument("file", type=Path, help="the file (mode 0600); a directory with --for prosody")
    export.add_argument("--for", dest="flavour", choices=("xep0227", "ejabberd", "prosody"),
                        default="xep0227",
                        help="what the importing server reads (default: the XEP's single file)")  # fmt: skip
    export.set_defaults(handler=_export)
    load = commands.add_parser("import", parents=[common], help="import accounts from XEP-0227 files")
    load.add_argument(
        "files", type=Path, nargs="+", metavar="FILE", help="Prosody, ejabberd, Openfire or imactor"
    )
    load.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    load.set_defaults(handler=_import)
    database = commands.add_parser("db", help="manage the database").add_subparsers(
        title="db commands", required=True, metavar="ACTION"
    )
    migrate = database.add_parser(
        "migrate", parents=[common], help="create or upgrade the schema (server running or not)"
    )
    migrate.set_defaults(handler=_db_migrate)
    backup = commands.add_parser("backup", parents=[common], help="back up the database (online)")
    backup.add_argument("destination", type=Path, help="a file, or a directory for a time-stamped file")
    backup.set_defaults(handler=_backup)
    restore = commands.add_parser("restore", parents=[common], help="restore the database from a backup")
    restore.add_argument("source", type=Path, help="a file written by `imactor backup`")
    restore.set_defaults(handler=_restore)
    return parser


def _filter_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                   common: argparse.ArgumentParser) -> None:  # fmt: skip
    """``imactor filter ...``: the named word lists of the sensitive-word filter (word_filter)."""
    settings = argparse.ArgumentParser(add_help=False)
    settings.add_argument("--scope", default=None,
                          help='"server" (default of a new list), "domain:DOMAIN" or "room:ROOM"')
    settings.add_argument("--action", default=None, choices=("mask", "reject", "alert"),
                          help="what the list does (a new list's default: mask)")  # fmt: skip
    actions = commands.add_parser("filter", help="manage the sensitive-word lists").add_subparsers(
        title="filter commands", required=True, metavar="ACTION"
    )
    listing = actions.add_parser("list", parents=[common], help="the lists: scope, action, words")
    listing.add_argument("name", nargs="?", help="only this list")
    listing.add_argument("--json", action="store_true", help="one JSON object per list")
    listing.set_defaults(handler=_filter_list)
    add = actions.add_parser("add", parents=[common, settings], help="add words to a list (created if new)")
    add.add_argument("name", help="the list's name, e.g. profanity")
    add.add_argument("words", nargs="+", metavar="WORD")
    add.set_defaults(handler=_filter_add)
    remove = actions.add_parser("remove", parents=[common], help="remove words from a list")
    remove.add_argument("name")
    remove.add_argument("words", nargs="+", metavar="WORD")
    remove.set_defaults(handler=_filter_remove)
    configure = actions.add_parser("set", parents=[common, settings], help="set a list's scope or action")
    configure.add_argument("name")
    configure.set_defaults(handler=_filter_set)
    load = actions.add_parser("import", parents=[common, settings], help="add a file's words, one a line")
    load.add_argument("name")
    load.add_argument("file", type=Path, help="UTF-8, one word or phrase a line, # comments; - for stdin")
    load.set_defaults(handler=_filter_import)
    drop = actions.add_parser("drop", parents=[common], help="delete a list and its words")
    drop.add_argument("name")
    drop.set_defaults(handler=_filter_drop)


def _org_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                common: argparse.ArgumentParser) -> None:  # fmt: skip
    """``imactor org ...``: the company directory (the directory module, docs/directory.md)."""
    actions = commands.add_parser("org", help="manage the company directory").add_subparsers(
        title="org commands", required=True, metavar="ACTION"
    )
    load = actions.add_parser("import", parents=[common], help="replace the directory with a file's")
    load.add_argument("file", help="a .csv or .json file (docs/directory.md); - for stdin")
    load.add_argument("--format", choices=("csv", "json"), default=None, help="default: from the extension")
    load.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    load.set_defaults(handler=_org_import)
    export = actions.add_parser("export", parents=[common], help="write the directory as a file")
    export.add_argument("file", nargs="?", default="-", help="default: standard output")
    export.add_argument("--format", choices=("csv", "json"), default=None,
                        help="default: from the extension, else JSON")  # fmt: skip
    export.set_defaults(handler=_org_export)


def _supervise(args: argparse.Namespace, config_path: Path) -> int:
    config = load_config(config_path)
    # Imported here: the master pulls in the whole server, which the other commands never need.
    from imactor.node.master import supervise

    return supervise(config)


def _worker(args: argparse.Namespace, config_path: Path) -> int:
    from imactor.worker.process import parse_listen, run

    try:
        listen = parse_listen(args.listen)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.index >= args.workers:
        raise CommandError(f"--index {args.index}: a node of {args.workers} workers numbers them from 0")
    return run(config_path, args.index, args.workers, args.run_dir, listen, node_started=args.node_started,
               node_id=args.node_id, mesh_endpoint=args.mesh_endpoint)  # fmt: skip


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _check_config(args: argparse.Namespace, config_path: Path) -> int:
    config = load_config(config_path)
    # Module names and [modules.*] options are checked by the loader the server itself uses.
    from imactor.server.module_host import ModuleHost
    from imactor.server.modules import ModuleConfigError

    try:
        ModuleHost(config.server.modules, config.modules, str(config.source))
    except ModuleConfigError as exc:
        raise CommandError(str(exc)) from exc
    print(f"ok: {config_path}")
    return 0


def _status(args: argparse.Namespace, config_path: Path) -> int:
    config = load_config(config_path)
    from imactor.node.status.client import StatusUnavailable, request_status
    from imactor.node.status.render import format_status

    try:
        document = request_status(config.status_socket)
    except StatusUnavailable as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps(document, indent=2) if args.json else format_status(document))
    return 0


def _user_add(args: argparse.Namespace, config_path: Path) -> int:
    if args.file is not None:
        if args.username is not None or args.password is not None:
            raise CommandError("user add: give either USER or --file, not both")
        return _user_add_file(args.file, config_path)
    if args.username is None:
        raise CommandError("user add: give a USER or --file FILE")
    config = load_config(config_path)  # first: do not ask for a password only to fail on the config
    username = _username(args.username, config)
    password = _password(args.password)

    async def add(storage: Storage) -> None:
        await storage.accounts.create(username, password, iterations=config.auth.scram_iterations)

    _with_storage(config, add)
    print(f"created {_jid(username, config)}")
    return 0


def _user_add_file(path: Path, config_path: Path) -> int:
    config = load_config(config_path)
    if str(path) == "-":
        accounts = parse_accounts(sys.stdin, "<stdin>", config)
    else:
        with open(path, encoding="utf-8") as f:
            accounts = parse_accounts(f, str(path), config)
    unique = len({name for name, _ in accounts})

    async def add(storage: Storage) -> int:
        return await storage.accounts.create_many(accounts, iterations=config.auth.scram_iterations)

    created = _with_storage(config, add)
    print(f"created {created} accounts, skipped {unique - created} that already exist")
    return 0


def parse_accounts(lines: Iterable[str], source: str, config: Config | None = None) -> list[tuple[str, str]]:
    """Parse bulk account lines into prepared ``(username, password)`` pairs.

    Each line is ``username:password`` or ``username<TAB>password``, split at the first colon or
    tab (a username cannot contain either); the password is everything after it, spaces
    included. A username may be a bare JID of one of `config`'s domains (`imactor.hosts`). Blank
    lines and lines starting with ``#`` are skipped.

    Raises:
        CommandError: A line is malformed, naming the source and the line number.
    """
    accounts = []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cuts = [i for i in (line.find(":"), line.find("\t")) if i >= 0]
        if not cuts:
            raise CommandError(f"{source}:{number}: expected username:password or username<TAB>password")
        user, password = line[: min(cuts)].strip(), line[min(cuts) + 1 :]
        try:
            accounts.append((_username(user, config or Config()), _check_password(password)))
        except CommandError as exc:
            raise CommandError(f"{source}:{number}: {exc}") from None
    return accounts


def _user_passwd(args: argparse.Namespace, config_path: Path) -> int:
    config = load_config(config_path)
    username = _username(args.username, config)
    password = _password(args.password)

    async def change(storage: Storage) -> None:
        await storage.accounts.set_password(username, password, iterations=config.auth.scram_iterations)

    _with_storage(config, change)
    print(f"changed the password of {_jid(username, config)}")
    return 0


def _user_del(args: argparse.Namespace, config_path: Path) -> int:
    config = load_config(config_path)
    username = _username(args.username, config)

    async def delete(storage: Storage) -> None:
        await storage.accounts.delete(username)

    _with_storage(config, delete)
    print(f"deleted {_jid(username, config)}")
    return 0


def _user_list(args: argparse.Namespace, config_path: Path) -> int:
    config = load_config(config_path)

    async def names(storage: Storage) -> list[str]:
        return await storage.accounts.list_usernames()

    for name in _with_storage(config, names):
        print(name)
    return 0


def _user_logout_everywhere(args: argparse.Namespace, config_path: Path) -> int:
    """Revoke every XEP-0484 FAST token of the account (in the database, running server or not),
    then end its sessions on every worker of the running node, if one runs."""
    from imactor.node.status.client import ServerNotRunning, StatusUnavailable, request_command

    config = load_config(config_path)
    username = _username(args.username, config)
    jid = _jid(username, config)

    async def revoke(storage: Storage) -> int | None:
        if not await storage.accounts.exists(username):
            return None
        return await storage.fast_tokens.revoke_all(username)

    revoked = _with_storage(config, revoke)
    if revoked is None:
        raise CommandError(f"no such account: {jid}")
    try:
        answer = request_command(config.status_socket, {"command": "logout-user", "user": username})
    except ServerNotRunning:
        print(f"revoked {revoked} FAST token(s) of {jid}; the server is not running")
        return 0
    except StatusUnavailable as exc:
        raise CommandError(f"revoked {revoked} FAST token(s) of {jid}; sessions not ended: {exc}") from None
    workers = answer.get("workers", [])
    errors = [w["error"] for w in workers if isinstance(w, dict) and "error" in w]
    ended = sum(int(w.get("sessions", 0)) for w in workers if isinstance(w, dict))
    print(f"revoked {revoked} FAST token(s) of {jid}; ended {ended} session(s)")
    if errors:
        print(f"imactor: error: some workers did not answer: {'; '.join(map(str, errors))}", file=sys.stderr)
        return 1
    return 0


def _user_notify(args: argparse.Namespace, config_path: Path) -> int:
    """The account's email digests (docs/email.md): on, off, or what they are."""
    config = load_config(config_path)
    username = _username(args.username, config)
    jid = _jid(username, config)

    async def change(storage: Storage) -> bool | None:
        if args.state is None:
            return await storage.email.enabled(username) if await storage.accounts.exists(username) else None
        return (args.state == "on") if await storage.email.set_enabled(username, args.state == "on") else None

    enabled = _with_storage(config, change)
    if enabled is None:
        raise CommandError(f"no such account: {jid}")
    print(f"email digests of {jid}: {'on' if enabled else 'off'}")
    return 0


def _room_list(args: argparse.Namespace, config_path: Path) -> int:
    import json

    from imactor.storage.rooms import StoredRoom

    config = load_config(config_path)

    async def rooms(storage: Storage) -> list[StoredRoom]:
        return await storage.rooms.listing()

    domain = f"{config.muc.subdomain}.{config.server.domain}"
    for room in _with_storage(config, rooms):
        raw = room.state.get("config")
        settings = raw if isinstance(raw, dict) else {}
        # A [[hosts]] host's room is stored under its bare JID (rooms/service.py: `MucService.key`).
        jid = room.name if "@" in room.name else f"{room.name}@{domain}"
        if args.json:
            print(json.dumps({"jid": jid, "name": settings.get("name", ""),
                              "public": room.public, "persistent": room.persistent,
                              "creator": room.creator}))  # fmt: skip
        else:
            kind = ("public" if room.public else "hidden") + (", persistent" if room.persistent else "")
            print(f"{jid}\t{kind}\t{settings.get('name', '')}")
    return 0


def _room_destroy(args: argparse.Namespace, config_path: Path) -> int:
    """Through the running server (the room's actor tells its occupants), or in the database
    when the server is not running."""
    from imactor.node.status.client import ServerNotRunning, StatusUnavailable, request_command
    from imactor.xmpp.jid import prep_localpart

    config = load_config(config_path)
    try:
        name = prep_localpart(args.name)
    except ValueError as exc:
        raise CommandError(f"invalid room name {args.name!r}: {exc}") from None
    domain = f"{config.muc.subdomain}.{config.server.domain}"
    command = {"command": "destroy-room", "room": name, "reason": args.reason, "alternate": args.alternate}
    try:
        answer = request_command(config.status_socket, command)
        destroyed = bool(answer.get("destroyed"))
    except ServerNotRunning:

        async def delete(storage: Storage) -> bool:
            return await storage.rooms.delete(name)

        destroyed = _with_storage(config, delete)
    except StatusUnavailable as exc:  # the server refused it, e.g. the deletion could not be stored
        raise CommandError(str(exc)) from None
    if not destroyed:
        print(f"imactor: error: no room {name}@{domain}", file=sys.stderr)
        return 1
    print(f"destroyed {name}@{domain}")
    return 0


def filter_scope(raw: str, config: Config) -> str:
    """A list's scope as stored (`imactor.storage.word_lists.parse_scope`).

    Raises:
        CommandError: not one of those forms, or not a valid domain or room.
    """
    from imactor.storage.word_lists import parse_scope

    try:
        return parse_scope(raw, config.server.domain, f"{config.muc.subdomain}.{config.server.domain}")
    except ValueError as exc:
        raise CommandError(f"--scope {exc}") from None


def parse_word_file(lines: Iterable[str], source: str) -> list[str]:
    """The words of a word file: one word or phrase a line; blank lines and # comments skipped.

    Raises:
        CommandError: a line is not a usable word (no letter or digit, too long), naming the
            source and the line number.
    """
    from imactor.wordmatch import BadWord, fold_word

    words = []
    for number, raw in enumerate(lines, 1):
        word = raw.strip()
        if not word or word.startswith("#"):
            continue
        try:
            fold_word(word)
        except BadWord as exc:
            raise CommandError(f"{source}:{number}: {exc}") from None
        words.append(word)
    return words


def _filter_change(
    config_path: Path, args: argparse.Namespace, change: Callable[[Storage, FilterSettings], Awaitable[str]]
) -> int:
    """Run one change of a word list, print what it did, and tell a running server."""
    from imactor.storage.word_lists import NoSuchList, check_name
    from imactor.wordmatch import BadWord

    config = load_config(config_path)
    scope = getattr(args, "scope", None)
    try:
        name = check_name(args.name)
        settings = FilterSettings(name, None if scope is None else filter_scope(scope, config),
                                  getattr(args, "action", None))  # fmt: skip
    except ValueError as exc:
        raise CommandError(str(exc)) from None

    async def run(storage: Storage) -> str:
        try:
            return await change(storage, settings)
        except (BadWord, ValueError) as exc:
            raise CommandError(str(exc)) from None
        except NoSuchList:
            raise CommandError(f"no word list {settings.name!r} (imactor filter list)") from None

    print(_with_storage(config, run))
    if "word_filter" not in config.server.modules:
        print("note: the word_filter module is not in server.modules: no list applies", file=sys.stderr)
    _tell_server_reload(config, "lists")
    return 0


@dataclass(frozen=True)
class FilterSettings:
    """What an `imactor filter` command names: the list, and the scope and action it sets."""

    name: str
    scope: str | None
    action: str | None


def _tell_server_reload(config: Config, what: str) -> None:
    """Ask the running server's workers to read `what` (the word lists, the directory) now
    (`reload-modules`); without an answer they still see the change by themselves within the
    module's check_interval."""
    from imactor.node.status.client import ServerNotRunning, StatusUnavailable, request_command

    try:
        answer = request_command(config.status_socket, {"command": "reload-modules"})
    except ServerNotRunning:
        return  # a server started later reads the lists as they are
    except StatusUnavailable as exc:
        print(f"note: the running server did not confirm ({exc}); it reads the {what} within "
              "check_interval seconds", file=sys.stderr)  # fmt: skip
        return
    workers = answer.get("workers", [answer])  # a lone worker answers for itself
    failed = [worker for worker in workers if "error" in worker]
    if failed:
        print(f"note: not every worker confirmed ({failed}); they read the {what} within "
              "check_interval seconds", file=sys.stderr)  # fmt: skip
    else:
        print(f"the running server uses the new {what} ({len(workers)} workers)")


def _filter_add(args: argparse.Namespace, config_path: Path) -> int:
    async def add(storage: Storage, the: FilterSettings) -> str:
        added = await storage.word_lists.add_words(the.name, args.words, scope=the.scope, action=the.action)
        return f"{the.name}: added {added} words ({len(args.words) - added} were there)"

    return _filter_change(config_path, args, add)


def _filter_remove(args: argparse.Namespace, config_path: Path) -> int:
    async def remove(storage: Storage, the: FilterSettings) -> str:
        removed = await storage.word_lists.remove_words(the.name, args.words)
        return f"{the.name}: removed {removed} words ({len(args.words) - removed} were not there)"

    return _filter_change(config_path, args, remove)


def _filter_set(args: argparse.Namespace, config_path: Path) -> int:
    if args.scope is None and args.action is None:
        raise CommandError("filter set: give --scope and/or --action")

    async def configure(storage: Storage, the: FilterSettings) -> str:
        await storage.word_lists.configure(the.name, scope=the.scope, action=the.action)
        changed = ", ".join(f"{key} {value}" for key, value in (("scope", the.scope), ("action", the.action))
                            if value is not None)  # fmt: skip
        return f"{the.name}: {changed}"

    return _filter_change(config_path, args, configure)


def _filter_import(args: argparse.Namespace, config_path: Path) -> int:
    source = str(args.file)
    try:
        if source == "-":
            words = parse_word_file(sys.stdin, "<stdin>")
        else:
            with open(args.file, encoding="utf-8") as f:
                words = parse_word_file(f, source)
    except UnicodeDecodeError as exc:
        reason = f"{exc.reason} at byte {exc.start}"
        raise CommandError(f"{source}: not UTF-8 ({reason}); nothing imported") from None

    async def add(storage: Storage, the: FilterSettings) -> str:
        added = await storage.word_lists.add_words(the.name, words, scope=the.scope, action=the.action)
        return f"{the.name}: imported {len(words)} words from {source}, {added} new"

    return _filter_change(config_path, args, add)


def _filter_drop(args: argparse.Namespace, config_path: Path) -> int:
    async def drop(storage: Storage, the: FilterSettings) -> str:
        if not await storage.word_lists.drop(the.name):
            raise CommandError(f"no word list {the.name!r}")
        return f"{the.name}: deleted"

    return _filter_change(config_path, args, drop)


def _filter_list(args: argparse.Namespace, config_path: Path) -> int:
    from imactor.storage.word_lists import WordLists

    config = load_config(config_path)

    async def load(storage: Storage) -> WordLists:
        return await storage.word_lists.load()

    found = [wl for wl in _with_storage(config, load).lists if args.name in (None, wl.name)]
    if args.name is not None and not found:
        raise CommandError(f"no word list {args.name!r}")
    for word_list in found:
        if args.json:
            print(json.dumps({"name": word_list.name, "scope": word_list.scope, "action": word_list.action,
                              "words": list(word_list.words)}, ensure_ascii=False))  # fmt: skip
        else:
            print(f"{word_list.name}\t{word_list.scope}\t{word_list.action}\t{len(word_list.words)} words: "
                  + " ".join(word_list.words))  # fmt: skip
    return 0


def _org_import(args: argparse.Namespace, config_path: Path) -> int:
    """Replace the directory with the file's, all or nothing; print each change (``--dry-run``:
    only print). The same file twice changes nothing the second time."""
    from imactor.directory.files import OrgFileError, detect_format, parse
    from imactor.directory.org import Org, changes

    config = load_config(config_path)
    source = str(args.file)
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        org = parse(data, "<stdin>" if source == "-" else source, args.format or detect_format(source))
    except OSError as exc:
        raise CommandError(f"{source}: {exc.strerror or exc}") from None
    except OrgFileError as exc:
        raise CommandError(f"{exc}; nothing imported") from None

    async def replace(storage: Storage) -> tuple[list[str], Org]:
        _, current = await storage.org.load()
        lines = changes(current, org)
        if lines and not args.dry_run:
            await storage.org.replace(org)
        return lines, current

    lines, _ = _with_storage(config, replace)
    for line in lines:
        print(line)
    people, departments = len(org.people), len(org.departments)
    if not lines:
        print(f"no changes ({departments} departments, {people} people)")
        return 0
    if args.dry_run:
        print(f"dry run: {len(lines)} changes not made")
        return 0
    print(f"imported {departments} departments, {people} people: {len(lines)} changes")
    if "directory" not in config.server.modules:
        print("note: the directory module is not in server.modules: no one sees it", file=sys.stderr)
    _tell_server_reload(config, "directory")
    return 0


def _org_export(args: argparse.Namespace, config_path: Path) -> int:
    from imactor.directory.files import OrgFileError, detect_format, write
    from imactor.directory.org import Org

    config = load_config(config_path)

    async def load(storage: Storage) -> Org:
        return (await storage.org.load())[1]

    file_format = args.format or (detect_format(args.file) if args.file != "-" else "json")
    try:
        text = write(_with_storage(config, load), file_format)
    except OrgFileError as exc:
        raise CommandError(str(exc)) from None
    if args.file == "-":
        sys.stdout.write(text)
        return 0
    try:
        Path(args.file).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"{args.file}: {exc.strerror or exc}") from None
    print(f"wrote {args.file}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace, config_path: Path) -> int:
    from imactor.migration import export_command

    return export_command(load_config(config_path), args.file, args.flavour)


def _import(args: argparse.Namespace, config_path: Path) -> int:
    from imactor.migration import import_command
    from imactor.xmpp.pie import PieError

    try:
        return import_command(load_config(config_path), args.files, dry_run=args.dry_run)
    except PieError as exc:  # malformed input: the file, line and element, and no traceback
        raise CommandError(f"{exc}; nothing imported") from None


def _with_storage(config: Config, fn: Callable[[Storage], Awaitable[T]]) -> T:
    """Open the configured database, run ``await fn(storage)`` under Trio, close it."""
    import trio

    from imactor.storage import Storage

    async def run() -> T:
        async with await Storage.open(config.storage_url, partitions=config.storage.partitions) as storage:
            return await fn(storage)

    return trio.run(run)


def _username(raw: str, config: Config) -> str:
    """The account key of USER: ``alice`` on the primary domain, or a bare JID of any served
    domain (``alice@other.example``, [[hosts]])."""
    from imactor.hosts import Hosts

    try:
        return Hosts.of(config).parse_account(raw)
    except ValueError as exc:
        raise CommandError(f"invalid username {raw!r}: {exc}") from None


def _jid(username: str, config: Config) -> str:
    """The bare JID of the account `username` (an account key)."""
    from imactor.hosts import Hosts

    return str(Hosts.of(config).jid(username))


def _check_password(raw: str) -> str:
    from imactor.xmpp.jid import prep_password

    if not raw:
        raise CommandError("empty password")
    try:
        return prep_password(raw)
    except ValueError as exc:
        raise CommandError(f"invalid password: {exc}") from None


def _password(given: str | None) -> str:
    """The password from --password, else a prompt (twice) on a terminal, else a line of stdin."""
    if given is not None:
        return _check_password(given)
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise CommandError("the passwords do not match")
        return _check_password(password)
    line = sys.stdin.readline()
    if not line:
        raise CommandError("no password: give --password, or one line on standard input")
    return _check_password(line.rstrip("\r\n"))


def _db_migrate(args: argparse.Namespace, config_path: Path) -> int:
    """Open the database, which creates or upgrades its schema (`imactor.storage.schema`), and say
    what it did. On PostgreSQL under an advisory lock that every node's start takes too, so it is
    safe to run on several nodes at once, or while they start."""
    config = load_config(config_path)

    async def migrate(storage: Storage) -> str:
        change = storage.schema_change
        assert change is not None  # set by Storage.open
        return change.describe()

    from imactor.storage.db import url_without_password

    print(f"{_with_storage(config, migrate)} ({url_without_password(config.storage_url)})")
    return 0


def _backup(args: argparse.Namespace, config_path: Path) -> int:
    from imactor.storage.backup import backup

    summary = backup(load_config(config_path).storage_url, args.destination)
    print(f"backed up to {summary.describe()}")
    return 0


def _restore(args: argparse.Namespace, config_path: Path) -> int:
    """Refused while a server answers on the configured status socket: it would go on writing
    to the old database's open files, and the restored one would be overwritten or damaged."""
    from imactor.node.status import ServerNotRunning, StatusUnavailable, request_status
    from imactor.storage.backup import restore

    config = load_config(config_path)
    try:
        request_status(config.status_socket, timeout=5.0)
    except ServerNotRunning:
        pass
    except StatusUnavailable as exc:
        raise CommandError(f"cannot tell whether the server is stopped ({exc}); stop it first") from None
    else:
        raise CommandError(
            f"a server is running on this database (it answers on {config.status_socket}): stop it "
            "(SIGTERM to `imactor supervise`, e.g. systemctl stop imactor), restore, then start it again"
        )
    summary, kept = restore(args.source, config.storage_url)
    print(f"restored {summary.describe()}")
    if kept is not None:
        print(f"the previous database is kept as {kept}")
    return 0
