"""The module loader: names, options and dependencies are checked with errors naming file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from imactor.server.module_host import ModuleHost
from imactor.server.modules import ModuleConfigError, Scope
from imactor.xmpp.namespaces import NS_PING, NS_ROSTER, NS_VERSION


def test_default_modules_load_and_dispatch() -> None:
    host = ModuleHost(
        ["disco", "ping", "version", "presence", "roster"], {"version": {"show_os": True}}, "f.toml"
    )
    assert host.options("version").show_os is True
    ping = etree.Element(f"{{{NS_PING}}}ping")
    assert host.iq_handler("get", ping, Scope.HOST) is not None
    assert host.iq_handler("set", ping, Scope.HOST) is None
    roster = etree.Element(f"{{{NS_ROSTER}}}query")
    assert host.iq_handler("get", roster, Scope.ACCOUNT) is not None
    assert host.iq_handler("get", roster, Scope.HOST) is None
    assert NS_VERSION in host.features()
    assert len(host.features()) == len(set(host.features()))


@pytest.mark.parametrize(
    ("names", "options", "message"),
    [
        (["nosuch"], {}, "f.toml: server.modules: no module named 'nosuch'"),
        (["version"], {"version": {"colour": 1}}, "f.toml: modules.version.colour: unknown key"),
        (["version"], {"version": {"show_os": "yes"}}, "f.toml: modules.version.show_os: expected bool"),
        (["ping"], {"version": {}}, "f.toml: modules.version: module is not enabled"),
        (["roster"], {}, "f.toml: server.modules: roster needs 'presence'"),
    ],
)
def test_config_errors_name_file_and_key(
    names: list[str], options: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ModuleConfigError) as caught:
        ModuleHost(names, options, "f.toml")
    assert str(caught.value).startswith(message)


def test_check_config_reports_module_errors(tmp_path: Path) -> None:
    config = tmp_path / "imactor.toml"
    config.write_text('[server]\nmodules = ["ping"]\n\n[modules.ping]\nfast = true\n')
    result = subprocess.run(
        [sys.executable, "-m", "imactor", "check-config", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "modules.ping.fast: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


class _Resources:
    """The part of `AccountApi` that the modules' `wants_sent` predicates read."""

    def __init__(self, states: dict[str, dict[str, str]]) -> None:
        self.states = states

    def bound_resources(self) -> list[str]:
        return list(self.states)

    def resource_state(self, resource: str) -> dict[str, str] | None:
        return self.states.get(resource)


def test_default_modules_want_sent_messages_only_for_carbons() -> None:
    # A chat message costs its sender's session a second trip (to its own account) only when a
    # module needs it: with the default modules, when another resource of the sender has
    # XEP-0280 carbons on. The e2e policy's sent hook must not ask for it by itself.
    from imactor.config import DEFAULT_MODULES
    from imactor.modules.carbons import ENABLED

    host = ModuleHost(list(DEFAULT_MODULES), {}, "f.toml")
    assert host.sent_hooks  # carbons and the e2e policy run when it does come
    alone = _Resources({"phone": {}})
    two_without = _Resources({"phone": {}, "laptop": {}})
    two_with = _Resources({"phone": {}, "laptop": {ENABLED: "1"}})
    assert not host.wants_sent(alone)  # type: ignore[arg-type]
    assert not host.wants_sent(two_without)  # type: ignore[arg-type]
    assert host.wants_sent(two_with)  # type: ignore[arg-type]


def test_room_archiving_is_a_module_with_a_room_scope() -> None:
    # Issue 15, point 6: the room archive is the muc_mam module's (room hooks, ROOM-scope IQs,
    # the feature rooms announce); without it, rooms keep no archive and announce none.
    from imactor.modules.mam import NS_MAM

    query = etree.Element(f"{{{NS_MAM}}}query")
    host = ModuleHost(["mam", "muc_mam"], {}, "f.toml")
    assert host.iq_handler("set", query, Scope.ROOM) is not None
    assert host.iq_handler("get", query, Scope.ROOM) is not None
    assert host.iq_handler("set", query, Scope.ACCOUNT) is not None  # the account's archive: mam
    assert len(host.room_hooks) == 1
    assert host.room_features() == [NS_MAM]
    without = ModuleHost(["mam"], {}, "f.toml")
    assert without.iq_handler("set", query, Scope.ROOM) is None
    assert without.room_hooks == []
    assert without.room_features() == []


def test_pep_announces_node_changes_to_the_modules_that_follow_them() -> None:
    # Issue 15, point 6: avatar and bookmarks follow their nodes through `Module.on_node`.
    from imactor.modules import avatar, bookmarks
    from imactor.xmpp.namespaces import NS_AVATAR_DATA, NS_AVATAR_METADATA, NS_BOOKMARKS

    assert {node for node, _ in avatar.module.node_hooks} == {NS_AVATAR_DATA, NS_AVATAR_METADATA}
    assert {node for node, _ in bookmarks.module.node_hooks} == {NS_BOOKMARKS}


def test_the_archive_keeps_the_senders_copy_of_messages_to_other_servers() -> None:
    """Messages to another server reach no actor of ours: the archive's `on_outgoing` hook, run
    by the sender's session, keeps their "out" copy; without mam nothing runs there."""
    from imactor.modules.mam import archive_sent

    with_mam = ModuleHost(["disco", "mam"], {}, "f.toml")
    assert [hook for hook, _ in with_mam.outgoing_hooks] == [archive_sent]
    assert ModuleHost(["disco", "ping"], {}, "f.toml").outgoing_hooks == []
